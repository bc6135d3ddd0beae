"""``results.json``: a list of rows (:class:`ResultRow`), written after every row so an interrupted run keeps what it
finished.

Each row carries its run's metadata (versions, CPU/GPU, seed, date, command), so rows added later with
``--append`` (e.g. the fewintent-* methods once their adapters exist) stay self-describing. Writes merge
under a file lock, so two benchmark processes can fill the same file.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import platform
import sys
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

RESULTS = "results.json"
KEY_FIELDS = ("protocol", "dataset", "shots", "ways", "method", "threshold_source", "oos_share", "device", "base")
DEFAULT_ROW_BASE = "minilm"
"""The base of rows written before the benchmark measured more than one."""


@dataclass
class ResultRow:
    """One measured (or skipped) cell: which one (:data:`KEY_FIELDS`), how it was measured, and its numbers.

    Keys no field names (a protocol's own numbers, an older or newer row's) live in ``extra``. A row keeps the
    order of its keys, read or set (:meth:`but`); ``to_dict`` writes them back in that order, a field left None
    that was never set not at all, so ``results.json`` read and written again is the same file byte for byte.
    """

    base: str | None = None
    protocol: str = ""
    dataset: str = ""
    domains: list[str] | None = None
    shots: int | None = None
    ways: int | str | None = None
    """The number of intents, or ``all`` (every intent of a domain, episodic)."""
    method: str = ""
    device: str | None = None
    threshold_source: str | None = None
    oos_share: float | None = None
    """OOS rows scored at a stated out-of-scope share of the test set (the ``oos`` protocol's share rows)."""
    status: str | None = None
    """``skipped`` (then ``note`` says why), or None: measured."""
    note: str | None = None
    steps: int | None = None
    adapter: str | None = None
    adapt_seconds: float | None = None
    accuracy: float | None = None
    ci95: float | None = None
    episodes: int | None = None
    episode_accuracy: list[float] | None = None
    macro_f1: float | None = None
    mcc: float | None = None
    fallback_accuracy: float | None = None
    n_support: int | None = None
    in_scope_accuracy: float | None = None
    oos_recall: float | None = None
    oos_precision: float | None = None
    oos_f1: float | None = None
    auroc: float | None = None
    pr_curve: dict[str, list[float]] | None = None
    recipe: str | None = None
    train_steps: int | None = None
    default_recipe_steps: int | None = None
    seconds_per_step: float | None = None
    projected_default_seconds: float | None = None
    n_latency: int | None = None
    n_batch: int | None = None
    torch_threads: int | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    floor_p50_ms: float | None = None
    latency_ratio: float | None = None
    throughput_qps: float | None = None
    throughput_ratio: float | None = None
    peak_rss_mb: float | None = None
    peak_gpu_mb: float | None = None
    memory_delta_mb: float | None = None
    run: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    order: list[str] = field(default_factory=list, repr=False, compare=False)
    """The row's keys in their order; empty: the fields set in the constructor, in field order."""

    def __post_init__(self) -> None:
        if not self.order:
            self.order = [k for k in _FIELDS if getattr(self, k) not in (None, "")] + list(self.extra)

    @classmethod
    def of(cls, row: ResultRow | Mapping[str, Any]) -> ResultRow:
        """A row from its JSON object (kept as it is: unknown keys go to ``extra``)."""
        if isinstance(row, ResultRow):
            return row
        known = {k: v for k, v in row.items() if k in _FIELDS}
        return cls(**known, extra={k: v for k, v in row.items() if k not in _FIELDS}, order=list(row))

    def but(self, **values: Any) -> ResultRow:
        """A copy with these keys set (a field by its name, anything else into ``extra``), added after the others."""
        out = replace(self, extra=dict(self.extra), order=list(self.order))
        for k, v in values.items():
            if k in _FIELDS:
                setattr(out, k, v)
            else:
                out.extra[k] = v
            if k not in out.order:
                out.order.append(k)
        return out

    def get(self, key: str, default: Any = None) -> Any:
        """The value of one JSON key (for code that reads rows by key, e.g. the plots)."""
        value = getattr(self, key) if key in _FIELDS else self.extra.get(key)
        return default if value is None and key not in self.order else value

    def __getitem__(self, key: str) -> Any:
        if key not in self.order:
            raise KeyError(key)
        return self.get(key)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) if k in _FIELDS else self.extra[k] for k in self.order}

    @property
    def skipped(self) -> bool:
        return self.status == "skipped"

    @property
    def key(self) -> tuple[Any, ...]:
        """What makes two rows the same measurement: a newer one replaces an older one."""
        return tuple(DEFAULT_ROW_BASE if k == "base" and self.base is None else getattr(self, k) for k in KEY_FIELDS)


_FIELDS = tuple(f.name for f in fields(ResultRow) if f.name not in ("extra", "order"))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_metadata(seed: int, argv: list[str] | None = None) -> dict[str, Any]:
    """Versions, hardware and time of this run."""
    import torch
    import transformers

    from fewintent.version import __version__

    versions = {"fewintent": __version__, "python": platform.python_version(), "torch": torch.__version__}
    versions["transformers"] = transformers.__version__
    for mod in ("setfit", "sklearn", "sentence_transformers", "peft"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            continue
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "id": uuid.uuid4().hex[:12],
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "command": " ".join(argv if argv is not None else ["fewintent", *sys.argv[1:]]),
        "versions": versions,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "load_average_at_start": load,
        "platform": platform.platform(),
    }


class ResultStore:
    """Rows of one ``results.json``; ``add`` upserts a row and rewrites the file atomically.

    Without ``append`` the run's first row starts the file anew; with it, rows of other runs are kept and a row with
    the same key (:data:`KEY_FIELDS`) is replaced.
    """

    def __init__(self, out_dir: str | Path, run: dict[str, Any], *, append: bool) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / RESULTS
        self.run = run
        self.base: str | None = None
        """Written into every row added (the runner sets the base being measured)."""
        # A fresh run replaces the file's rows, from its first row on: a run that stops before any (a missing
        # corpus, a wrong option) leaves the file as it was.
        self._fresh = not append

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive lock on the output directory (no lock file left behind), for read-merge-write."""
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def read(self) -> list[ResultRow]:
        return load_rows(self.path)

    def _write(self, rows: Iterable[ResultRow]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".results-", suffix=".json", dir=self.dir)
        os.fchmod(fd, 0o644)  # mkstemp makes it owner-only; results are meant to be read and committed
        with os.fdopen(fd, "w") as f:
            json.dump([r.to_dict() for r in rows], f, indent=1, default=_jsonable)
            f.write("\n")
        os.replace(tmp, self.path)

    def stamped(self, row: ResultRow | Mapping[str, Any]) -> ResultRow:
        """The row as this run writes it: its base first (when one is set) and the run's metadata last."""
        row = ResultRow.of(row)
        if self.base is not None:
            row = ResultRow.of({"base": self.base, **row.to_dict()})
        return row.but(run=self.run)

    def add(self, row: ResultRow | Mapping[str, Any]) -> ResultRow:
        row = self.stamped(row)
        with self._locked():
            rows = [] if self._fresh else [r for r in self.read() if r.key != row.key]
            self._fresh = False
            rows.append(row)
            self._write(rows)
        return row


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def load_rows(path: str | Path) -> list[ResultRow]:
    p = Path(path)
    if not p.exists():
        return []
    data = json.loads(p.read_text() or "[]")
    return [ResultRow.of(r) for r in (data if isinstance(data, list) else data.get("rows", []))]
