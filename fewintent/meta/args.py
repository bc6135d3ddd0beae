"""``MetaTrainingArguments``: every knob of a meta-training run, as a dataclass loadable from YAML."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from fewintent.data.corpus import parse_domain_list
from fewintent.encoder.lora import LoraSettings
from fewintent.errors import FewIntentError
from fewintent.heads.proto import Distance
from fewintent.meta.inner import InnerLoopSettings, InnerOptimizer


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
        self.algorithm = Algorithm(self.algorithm)
        self.distance = Distance(self.distance)
        self.inner_optimizer = InnerOptimizer(self.inner_optimizer)
        if isinstance(self.lora, dict):
            self.lora = LoraSettings.from_dict(self.lora)
        for name in ("datasets", "exclude", "exclude_domains"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, [v.strip() for v in value.split(",") if v.strip()])
        parse_domain_list(self.exclude_domains)  # validates dataset:domain syntax early
        for split in (self.train_split, self.valid_split):
            if split.startswith("test"):
                raise FewIntentError(f"split '{split}': meta-training and early stopping must never use test data")
        if not 0.0 <= self.unknown_fraction < 1.0:
            raise FewIntentError(f"unknown_fraction must be in [0, 1), got {self.unknown_fraction}")
        if self.unknown_fraction and self.algorithm is not Algorithm.PROTONET:
            raise FewIntentError("unknown_fraction (meta-learned rejection) is implemented for protonet only")
        if self.max_time_s is not None and self.max_time_s <= 0:
            raise FewIntentError(f"max_time_s must be positive, got {self.max_time_s}")
        if self.ridge_lambda <= 0:
            raise FewIntentError(f"ridge_lambda must be positive, got {self.ridge_lambda}")
        if self.episodes < 1 or self.queries < 1 or self.meta_batch < 1:
            raise FewIntentError("episodes, queries and meta_batch must be at least 1")
        if self.algorithm is Algorithm.FOMAML and self.inner_steps < 0:
            raise FewIntentError("inner_steps must be >= 0")

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
