"""One benchmark run's shared state: config, corpora, encoders and results (``methods.build_method`` builds each
method from it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fewintent.bench.config import BenchConfig
from fewintent.bench.data import Corpora
from fewintent.bench.encoders import EncoderPool
from fewintent.bench.results import ResultRow, ResultStore
from fewintent.encoder.registry import BASES, DEFAULT_BASE_NAME, BaseSpec


@dataclass
class Skip:
    """A method that gives no row here, and why (printed and written to the report). ``no_adapter``: the adapter
    it needs does not exist (the base ships none for this dataset), rather than one that must not be used."""

    reason: str
    no_adapter: bool = False


@dataclass
class BenchContext:
    config: BenchConfig
    corpora: Corpora
    pool: EncoderPool
    store: ResultStore
    base: BaseSpec = BASES[DEFAULT_BASE_NAME]
    notes: list[dict[str, str]] = field(default_factory=list)
    artifacts: dict[Any, Any] = field(default_factory=dict)
    """What a protocol leaves for a later one, e.g. each fullway method by ``("fullway", dataset, shots, name)``."""
    _done: set[tuple[Any, ...]] | None = None

    def already_done(self, row: ResultRow) -> bool:
        """With ``--missing-only``: a measured (not skipped) row with this key is already in results.json."""
        if not self.config.missing_only:
            return False
        if self._done is None:
            self._done = {r.key for r in self.store.read() if not r.skipped}
        return self.store.stamped(row).key in self._done

    def note_skip(self, row: ResultRow) -> None:
        """Remember a skipped row's reason once per (method, reason), for the summary the CLI prints."""
        note = {"method": row.method, "reason": row.note or ""}
        if note not in self.notes:
            self.notes.append(note)
