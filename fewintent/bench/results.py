"""``results.json``: a list of rows, written after every row so an interrupted run keeps what it finished.

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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS = "results.json"
KEY_FIELDS = ("protocol", "dataset", "shots", "ways", "method", "threshold_source", "device", "base")
DEFAULT_ROW_BASE = "minilm"
"""The base of rows written before the benchmark measured more than one."""


def row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two rows the same measurement: a newer one replaces an older one."""
    return tuple(row.get(k, DEFAULT_ROW_BASE if k == "base" else None) for k in KEY_FIELDS)


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

    Without ``append`` the file starts empty; with it, rows of other runs are kept and a row with the same key
    (:data:`KEY_FIELDS`) is replaced.
    """

    def __init__(self, out_dir: str | Path, run: dict[str, Any], *, append: bool) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / RESULTS
        self.run = run
        self.fields: dict[str, Any] = {}
        """Written into every row added (the runner sets the base being measured)."""
        if not append and self.path.exists():  # a fresh run; the committed file in git is the backup
            with self._locked():
                self._write([])

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

    def read(self) -> list[dict[str, Any]]:
        return load_rows(self.path)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".results-", suffix=".json", dir=self.dir)
        os.fchmod(fd, 0o644)  # mkstemp makes it owner-only; results are meant to be read and committed
        with os.fdopen(fd, "w") as f:
            json.dump(rows, f, indent=1, default=_jsonable)
            f.write("\n")
        os.replace(tmp, self.path)

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        row = {**self.fields, **row, "run": self.run}
        with self._locked():
            rows = [r for r in self.read() if row_key(r) != row_key(row)]
            rows.append(row)
            self._write(rows)
        return row


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        return []
    data = json.loads(p.read_text() or "[]")
    return data if isinstance(data, list) else list(data.get("rows", []))
