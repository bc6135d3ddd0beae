"""``MetaTrainingArguments``: every knob of a meta-training run, as a dataclass loadable from YAML."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path, PurePath
from typing import Any

import yaml

from fewintent.data.corpus import parse_domain_list
from fewintent.data.episodes import DatasetWeighting
from fewintent.encoder.lora import LoraSettings
from fewintent.errors import FewIntentError
from fewintent.heads.proto import Distance
from fewintent.meta.inner import InnerLoopSettings, InnerOptimizer
from fewintent.meta.protonet import UNKNOWN_LOSSES


class Algorithm(str, Enum):
    """The meta-learning algorithm."""

    PROTONET = "protonet"
    """Episodic prototypical loss through the LoRA parameters (cheap: one forward/backward per episode)."""
    FOMAML = "fomaml"
    """First-order Proto-MAML over the LoRA parameters (``inner_steps`` + 1 forward/backward passes per task)."""
    RIDGE = "ridge"
    """A differentiable ridge-regression head fitted on each episode's support set (R2D2): the episode objective
    of a linear head, like the deployed one, at the cost of one small solve per episode."""


@dataclass
class MetaTrainingArguments:
    """A meta-training run. ``ways``/``shots`` take a number or a ``[lo, hi]`` range drawn per episode.

    Example:
        >>> args = MetaTrainingArguments.from_yaml("configs/minilm-meta.yaml")  # doctest: +SKIP
        >>> args.algorithm
        <Algorithm.PROTONET: 'protonet'>
    """

    # data
    datasets: list[str] = field(default_factory=lambda: ["banking77", "clinc150", "hwu64", "snips"])
    """Registered corpus names, folders under ``data_dir`` or intent files."""
    data_dir: str | None = None
    """Folder of ``<dataset>/<split>.jsonl`` files; None = the Hugging Face hub (needs a network)."""
    exclude: list[str] = field(default_factory=list)
    """Datasets left out entirely (leave-one-dataset-out)."""
    exclude_domains: list[str] = field(default_factory=list)
    """``dataset:domain`` pairs left out entirely (held-out-domain protocol): never trained on, never validated on."""
    train_split: str = "train"
    valid_split: str = "valid"
    """Split of the training datasets that validation episodes come from (early stopping). Never ``test``."""
    # episodes
    algorithm: Algorithm = Algorithm.PROTONET
    episodes: int = 1000
    """Training episodes (tasks) in all, over every process."""
    ways: int | list[int] = 5
    shots: int | list[int] = 5
    queries: int = 5
    domain_prob: float = 0.5
    """Chance that an episode's intents come from one domain rather than from the whole dataset."""
    intent_names: bool = False
    """Each intent's name as one more support example in every episode, as ``adapt`` does at deployment."""
    weighting: str = "sqrt"
    """How often each dataset is drawn: ``sqrt`` (of its number of intents), ``intents`` or ``uniform``."""
    meta_batch: int = 1
    """Tasks per outer update (per process)."""
    # outer optimisation
    lr: float = 2e-4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    distance: Distance = Distance.COSINE
    temperature: float = 20.0
    learn_temperature: bool = True
    temperature_lr: float = 1e-2
    ridge_lambda: float = 1.0
    """ridge: the head's initial regulariser (learned from there)."""
    unknown_fraction: float = 0.0
    """protonet: share of each episode's intents held out as "unknown" (no support examples); their queries
    must fall below a learned similarity (meta-learned rejection). 0 = off."""
    unknown_loss: str = "reject"
    """protonet, with ``unknown_fraction``: 'reject' (the unknown queries pick an extra logit at a learned
    similarity) or 'rank' (a pairwise loss ranks every known query's own-prototype similarity above every unknown
    query's best one: the deployed out-of-scope score)."""
    unknown_weight: float = 1.0
    """protonet, ``unknown_loss: rank``: the ranking loss's weight beside the known queries' cross-entropy."""
    dropout: bool = True
    """Train with dropout on (LoRA and encoder); evaluation and deployment always run without."""
    # inner loop (fomaml; also the default of ``adapt --steps`` through the adapter's ``inner_lr``)
    inner_steps: int = 3
    inner_lr: float = 1e-3
    inner_head_lr: float = 1e-2
    inner_optimizer: InnerOptimizer = InnerOptimizer.ADAM
    # encoder
    base: str | None = None
    """Encoder to adapt: None = the packaged all-MiniLM-L6-v2."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    max_length: int = 64
    # run
    seed: int = 0
    device: str = "auto"
    bf16: bool = True
    """bf16 autocast on CUDA (ignored on CPU)."""
    threads: int | None = None
    """torch CPU threads; None = torch's default."""
    max_time_s: float | None = None
    """Stop after this many seconds of training (then keep the best validated weights, as early stopping does);
    None = no limit. The adapter is written either way. The time counts across ``--resume``: raise it to go on."""
    eval_every: int = 100
    """Episodes between validation passes (and early-stopping checks); 0 = never validate."""
    valid_episodes: int = 40
    valid_ways: int | None = None
    valid_shots: int | None = None
    valid_queries: int | None = None
    patience: int = 5
    """Validation passes without improvement before stopping; 0 = no early stopping (still keeps the best)."""
    checkpoint_every: int = 100
    """Episodes between checkpoints (for ``--resume``); 0 = no checkpoints."""
    log_every: int = 10
    """Outer steps between metric lines."""

    def __post_init__(self) -> None:
        for f in fields(self):
            check = _CHECKS.get(f.name)
            value = getattr(self, f.name)
            if check is not None and not (value is None and f.default is None):
                setattr(self, f.name, check(value))
        parse_domain_list(self.exclude_domains)  # validates dataset:domain syntax early
        if self.unknown_loss != "reject" and not self.unknown_fraction:
            raise FewIntentError("unknown_loss needs unknown_fraction > 0 (the share of intents held out as unknown)")
        if self.unknown_fraction and self.algorithm is not Algorithm.PROTONET:
            raise FewIntentError("unknown_fraction (meta-learned rejection) is implemented for protonet only")

    # ------------------------------------------------------------------ derived views
    @property
    def held_out_domains(self) -> list[tuple[str, str]]:
        return parse_domain_list(self.exclude_domains)

    def inner_settings(self) -> InnerLoopSettings:
        return InnerLoopSettings(
            steps=self.inner_steps,
            lr=self.inner_lr,
            head_lr=self.inner_head_lr,
            optimizer=self.inner_optimizer,
            distance=self.distance,
            temperature=self.temperature,
        )

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["algorithm"] = self.algorithm.value
        d["distance"] = self.distance.value
        d["inner_optimizer"] = self.inner_optimizer.value
        d["lora"] = self.lora.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetaTrainingArguments:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise FewIntentError(
                f"unknown meta-training argument(s): {', '.join(sorted(unknown))} (known: {', '.join(sorted(names))})"
            )
        try:
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise FewIntentError(f"bad meta-training arguments: {e}") from e

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> MetaTrainingArguments:
        """Read a YAML (or JSON) mapping of arguments; ``overrides`` that are not None win over the file."""
        p = Path(path)
        try:
            doc = yaml.safe_load(p.read_text()) or {}
        except FileNotFoundError as e:
            raise FewIntentError(f"{p}: no such config file") from e
        except yaml.YAMLError as e:
            raise FewIntentError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from e
        if not isinstance(doc, dict):
            raise FewIntentError(f"{p}: expected a mapping of argument names to values")
        doc.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(doc)


# ---------------------------------------------------------------------------------------------- field checks
# Each field's check turns a value from YAML, JSON or the CLI into the field's type, or refuses it in one line.
# YAML 1.1 (PyYAML) reads ``1e-3`` as a string: a number written that way is accepted as the number it is.


def _as_number(name: str, v: Any) -> float:
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            raise FewIntentError(f"{name} must be a number, got {v!r:.30}") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise FewIntentError(f"{name} must be a number, got {v!r:.30}")
    if not math.isfinite(v):
        raise FewIntentError(f"{name} must be a finite number, got {v}")
    return float(v)


def _number(name: str, ok: Callable[[float], bool], what: str) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        x = _as_number(name, v)
        if not ok(x):
            raise FewIntentError(f"{name} must be {what}, got {v!r:.30}")
        return x

    return check


def _whole(name: str, low: int, high: int | None = None) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
            span = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise FewIntentError(f"{name} must be a whole number {span}, got {v!r:.30}")
        return v

    return check


def _whole_or_range(name: str) -> Callable[[Any], int | list[int]]:
    one = _whole(name, 1)

    def check(v: Any) -> int | list[int]:
        if isinstance(v, (list, tuple)):
            if len(v) not in (1, 2):
                raise FewIntentError(f"{name} must be a number or a range [lo, hi], got {v!r:.30}")
            lo, hi = one(v[0]), one(v[-1])
            if hi < lo:
                raise FewIntentError(f"{name}: the range [lo, hi] needs lo <= hi, got {list(v)}")
            return lo if lo == hi else [lo, hi]
        return one(v)

    return check


def _flag(name: str) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        if not isinstance(v, bool):
            raise FewIntentError(f"{name} must be true or false, got {v!r:.30}")
        return v

    return check


def _enum(kind: type[Enum], name: str) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        try:
            return kind(v)
        except ValueError:
            raise FewIntentError(f"unknown {name} {v!r:.30}: use {', '.join(str(k.value) for k in kind)}") from None

    return check


def _choice(name: str, options: tuple[str, ...]) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in options:
            raise FewIntentError(f"unknown {name} {v!r:.30}: use {', '.join(options)}")
        return str(v)

    return check


def _text(name: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if not isinstance(v, str) or not v.strip():
            raise FewIntentError(f"{name} must be a non-empty string, got {v!r:.30}")
        return v.strip()

    return check


def _names(name: str) -> Callable[[Any], list[str]]:
    def check(v: Any) -> list[str]:
        if isinstance(v, str):
            v = v.split(",")
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
            raise FewIntentError(f"{name} must be a list of names (or one comma-separated string), got {v!r:.40}")
        return [x.strip() for x in v if x.strip()]

    return check


def _split(name: str) -> Callable[[Any], str]:
    """A split is a name (``train``, ``valid``), the stem of ``<dataset>/<split>.jsonl``: a path or a file name
    is reduced to that stem, so ``./test`` or ``test.jsonl`` cannot slip past the never-on-test guard."""
    text = _text(name)

    def check(v: Any) -> str:
        split = PurePath(text(v).replace("\\", "/")).name
        for ext in (".jsonl", ".csv", ".yml", ".yaml"):
            split = split.removesuffix(ext)
        if split.lower().startswith("test"):
            raise FewIntentError(f"{name} '{v}': meta-training and early stopping must never use test data")
        if not split or split in (".", ".."):
            raise FewIntentError(f"{name} must name a split such as train or valid, got {v!r:.30}")
        return split

    return check


def _lora(v: Any) -> LoraSettings:
    if isinstance(v, LoraSettings):
        return LoraSettings.from_dict(v.to_dict())  # checked like one read from a file
    if not isinstance(v, dict):
        raise FewIntentError(f"lora must be a mapping of LoRA settings (r, alpha, dropout), got {v!r:.30}")
    return LoraSettings.from_dict(v)


def _datasets(v: Any) -> list[str]:
    names = _names("datasets")(v)
    if not names:
        raise FewIntentError("datasets must name at least one dataset")
    return names


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "datasets": _datasets,
    "data_dir": _text("data_dir"),
    "exclude": _names("exclude"),
    "exclude_domains": _names("exclude_domains"),
    "train_split": _split("train_split"),
    "valid_split": _split("valid_split"),
    "algorithm": _enum(Algorithm, "algorithm"),
    "episodes": _whole("episodes", 1),
    "ways": _whole_or_range("ways"),
    "shots": _whole_or_range("shots"),
    "queries": _whole("queries", 1),
    "domain_prob": _number("domain_prob", lambda x: 0.0 <= x <= 1.0, "in [0, 1]"),
    "intent_names": _flag("intent_names"),
    "weighting": lambda v: _enum(DatasetWeighting, "weighting")(v).value,
    "meta_batch": _whole("meta_batch", 1),
    "lr": _number("lr", lambda x: x > 0, "a positive number"),
    "weight_decay": _number("weight_decay", lambda x: x >= 0, "0 or more"),
    "max_grad_norm": _number("max_grad_norm", lambda x: x >= 0, "0 (no clipping) or more"),
    "distance": _enum(Distance, "distance"),
    "temperature": _number(
        "temperature", lambda x: x > 0, "positive (it scales the similarities; 0 makes every answer equally likely)"
    ),
    "learn_temperature": _flag("learn_temperature"),
    "temperature_lr": _number("temperature_lr", lambda x: x >= 0, "0 or more"),
    "ridge_lambda": _number("ridge_lambda", lambda x: x > 0, "positive"),
    "unknown_fraction": _number("unknown_fraction", lambda x: 0.0 <= x < 1.0, "in [0, 1)"),
    "unknown_loss": _choice("unknown_loss", UNKNOWN_LOSSES),
    "unknown_weight": _number("unknown_weight", lambda x: x >= 0, "0 or more"),
    "dropout": _flag("dropout"),
    "inner_steps": _whole("inner_steps", 0),
    "inner_lr": _number("inner_lr", lambda x: x > 0, "a positive number"),
    "inner_head_lr": _number("inner_head_lr", lambda x: x > 0, "a positive number"),
    "inner_optimizer": _enum(InnerOptimizer, "inner_optimizer"),
    "base": _text("base"),
    "lora": _lora,
    "max_length": _whole("max_length", 8, 512),
    "seed": _whole("seed", 0, 2**63 - 1),
    "device": _text("device"),
    "bf16": _flag("bf16"),
    "threads": _whole("threads", 1),
    "max_time_s": _number("max_time_s", lambda x: x > 0, "a positive number of seconds"),
    "eval_every": _whole("eval_every", 0),
    "valid_episodes": _whole("valid_episodes", 1),
    "valid_ways": _whole("valid_ways", 1),
    "valid_shots": _whole("valid_shots", 1),
    "valid_queries": _whole("valid_queries", 1),
    "patience": _whole("patience", 0),
    "checkpoint_every": _whole("checkpoint_every", 0),
    "log_every": _whole("log_every", 1),
}
