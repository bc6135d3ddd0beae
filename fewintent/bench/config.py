"""Benchmark settings, and which adapter each fewintent-* method uses on each dataset.

Adapters are configured per algorithm (``protonet`` / ``fomaml``), optionally per protocol, as a shipped
name or a path; ``{dataset}`` in it becomes the corpus the result must not have seen, and the default
``{leave_out}`` is the base's own leave-one-dataset-out template from the registry (``minilm-meta-no-{dataset}``
for MiniLM; BANKING77-OOS uses the ``banking77`` one). A missing adapter skips its rows with a note saying what to
pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fewintent.encoder.lora import ADAPTER_CONFIG, SHIPPED_ADAPTERS_DIR
from fewintent.encoder.registry import BASES, DEFAULT_BASE_NAME, BaseSpec
from fewintent.errors import FewIntentError
from fewintent.meta.args import Algorithm

PROTOCOLS = ("fullway", "episodic", "oos", "speed", "onnx", "discovery", "multilabel")
DEFAULT_PROTOCOLS = ("fullway", "episodic", "oos", "speed")  # onnx, discovery and multilabel are asked for by name
ALGORITHMS = tuple(a.value for a in Algorithm)
DEFAULT_ADAPTERS: dict[str, str] = {
    **{algo: "{leave_out}" for algo in ALGORITHMS},
    # adapters meta-trained with CLINC150 banking/credit_cards/travel and HWU64 alarm/iot/music held out
    **{f"episodic:{algo}": f"runs/heldout-domains-{algo}" for algo in ALGORITHMS},
}


@dataclass
class BenchConfig:
    """Everything ``fewintent benchmark`` can be told; ``quick()`` is the CI smoke version."""

    data_dir: Path
    out: Path = Path("data/benchmarks")
    bases: tuple[str, ...] = (DEFAULT_BASE_NAME,)
    """Registered encoder bases to measure, one after the other; every row records its base."""
    protocols: tuple[str, ...] = DEFAULT_PROTOCOLS
    methods: tuple[str, ...] = ()
    multilabel_methods: tuple[str, ...] = ()
    """The ``multilabel`` protocol's (``--methods`` when given, else its own default list)."""
    datasets: tuple[str, ...] = ()  # empty = every dataset of each protocol
    shots: tuple[int, ...] = (5, 10)
    episodes: int = 600
    episode_shots: tuple[int, ...] = (1, 5)
    episode_ways: tuple[int | str, ...] = (5, "all")
    queries: int = 15
    seed: int = 0
    device: str = "cpu"
    quick: bool = False
    append: bool = False
    missing_only: bool = False  # with append: keep rows already measured, run only the missing (or skipped) ones
    adapters: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ADAPTERS))
    adapter_dirs: tuple[Path, ...] = (SHIPPED_ADAPTERS_DIR,)
    setfit_iterations: int | None = None
    setfit_max_support: int = 400
    setfit_episodes: int = 20
    steps_episodes: int | None = None  # fewintent-*-stepsN and *-tune on the first N episodes only (None = all)
    speed_queries: int = 200
    speed_batch: int = 1000
    threads: int | None = None  # torch CPU threads (None = torch's default); recorded in every row's run
    speed_warmup: int = 5
    speed_rounds: int = 2
    max_intents: int | None = None  # quick: only the first N intents (sorted) of each support set
    eval_limit: int | None = None  # quick: at most N in-scope and N OOS evaluation rows per split

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=str))

    def apply_quick(self) -> None:
        """A few episodes on one dataset, no SetFit: seconds, not hours."""
        self.quick = True
        self.datasets = self.datasets or ("hwu64",)
        self.shots = (5,)
        self.episodes = min(self.episodes, 10)
        self.episode_shots = (1,)
        self.episode_ways = (5,)
        self.queries = min(self.queries, 5)
        self.speed_queries = min(self.speed_queries, 4)
        self.speed_batch = min(self.speed_batch, 32)
        self.speed_warmup = 1
        self.speed_rounds = 1
        self.max_intents = 10
        self.eval_limit = 60
        self.methods = tuple(m for m in self.methods if m != "setfit")

    def wants(self, dataset: str) -> bool:
        return not self.datasets or dataset.split(":")[0] in self.datasets

    def wants_oos(self, dataset: str) -> bool:
        """Quick mode scores OOS on a slice of CLINC150 whatever its dataset: the smoke test covers OOS too."""
        return self.wants(dataset) or (self.quick and dataset == "clinc150")


def parse_adapter_options(options: Iterable[str]) -> dict[str, str]:
    """``ALGO=TEMPLATE`` or ``PROTOCOL:ALGO=TEMPLATE`` (e.g. ``episodic:fomaml=runs/heldout-fomaml``)."""
    out = dict(DEFAULT_ADAPTERS)
    for opt in options:
        key, sep, value = opt.partition("=")
        algo = key.split(":")[-1].removeprefix("fewintent-")
        if not sep or algo not in ALGORITHMS or not value:
            raise FewIntentError(f"--adapter '{opt}': expected [PROTOCOL:]{'|'.join(ALGORITHMS)}=NAME_OR_PATH")
        proto = key.split(":")[0] if ":" in key else None
        out[f"{proto}:{algo}" if proto else algo] = value
    return out


def adapter_template(adapters: dict[str, str], protocol: str, algorithm: str) -> str:
    return adapters.get(f"{protocol}:{algorithm}") or adapters[algorithm]


def resolve_adapter_for(
    template: str, dataset: str, search_dirs: Iterable[Path], base: BaseSpec = BASES[DEFAULT_BASE_NAME]
) -> tuple[Path | None, str]:
    """The adapter directory for ``dataset`` and the name it was asked by; None when it does not exist."""
    from fewintent.bench.data import source_dataset

    if "{leave_out}" in template:
        if base.leave_out_adapter is None:
            return None, template
        template = template.replace("{leave_out}", base.leave_out_adapter)
    name = template.format(dataset=source_dataset(dataset))
    p = Path(name).expanduser()
    if (p / ADAPTER_CONFIG).is_file():
        return p, name
    if "/" not in name:
        for d in search_dirs:
            if (Path(d) / name / ADAPTER_CONFIG).is_file():
                return Path(d) / name, name
    return None, name


def _find(obj: Any, keys: tuple[str, ...]) -> list[Any]:
    """Values of any of ``keys`` anywhere in a nested JSON config."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in keys:
                found.append(v)
            found += _find(v, keys)
    elif isinstance(obj, list):
        for v in obj:
            found += _find(v, keys)
    return found


def _as_set(values: list[Any]) -> set[str]:
    out: set[str] = set()
    for v in values:
        if isinstance(v, str):
            out |= {s.strip() for s in v.split(",") if s.strip()}
        elif isinstance(v, list):
            out |= {str(s) for s in v}
    return out


def adapter_algorithm(config: dict[str, Any]) -> str | None:
    for v in _find(config, ("algorithm", "algo")):
        if isinstance(v, str) and v.lower() in ALGORITHMS:
            return v.lower()
    return None


def adapter_problem(config: dict[str, Any], algorithm: str, dataset: str, heldout: tuple[str, ...] = ()) -> str | None:
    """Why this adapter must not give rows for ``dataset`` (wrong algorithm, or it saw the data); None if fine.

    Reads what the adapter's own metadata records (``algorithm``, ``datasets``, ``excluded_datasets``,
    ``excluded_domains`` as ``dataset:domain``); what it does not record cannot be checked and is trusted.
    """
    from fewintent.bench.data import source_dataset

    algo = adapter_algorithm(config)
    if algo is not None and algo != algorithm:
        return f"it was meta-trained with {algo}, not {algorithm}"
    src = source_dataset(dataset)
    trained = _as_set(_find(config, ("datasets", "train_datasets")))
    excluded = _as_set(_find(config, ("exclude", "excluded", "exclude_datasets", "excluded_datasets")))
    if not heldout:
        if src in trained and src not in excluded:
            return f"its metadata says it was meta-trained on {src}: not a few-shot result (use a leave-out adapter)"
        return None
    domains = _as_set(_find(config, ("exclude_domains", "excluded_domains", "heldout_domains", "held_out_domains")))
    if src in trained and src not in excluded:
        missing = [d for d in heldout if f"{src}:{d}" not in domains and d not in domains]
        if missing:
            return f"its metadata does not hold out {src} domain(s) {', '.join(missing)}"
    return None
