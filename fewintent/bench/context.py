"""One benchmark run's shared state: config, corpora, encoders, results, and how to build each method."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fewintent.bench.config import BenchConfig, adapter_problem, adapter_template, resolve_adapter_for
from fewintent.bench.data import Corpora
from fewintent.bench.encoders import EncoderPool
from fewintent.bench.methods import (
    FROZEN_LOGREG,
    FROZEN_PROTOTYPE,
    SETFIT,
    ClassifierMethod,
    LogRegMethod,
    Method,
    SetFitMethod,
    parse_method,
    setfit_available,
)
from fewintent.bench.results import ResultStore, row_key
from fewintent.encoder.lora import read_adapter
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
    notes: list[dict[str, Any]] = field(default_factory=list)
    artifacts: dict[str, Any] = field(default_factory=dict)

    def method(self, name: str, protocol: str, dataset: str, heldout: tuple[str, ...] = ()) -> Method | Skip:
        """Build ``name`` for one dataset of one protocol, with its leave-out adapter, or say why it is skipped."""
        spec = parse_method(name)
        cfg = self.config
        if spec.family == FROZEN_PROTOTYPE:
            return ClassifierMethod(spec, self.pool, None, seed=cfg.seed, base=self.base.name, device=cfg.device)
        if spec.family == FROZEN_LOGREG:
            # tuned on the dataset's valid split (never test); episodic episodes read their own intents' rows
            corpus = dataset.split(":")[0]  # OOS settings are named like banking77_oos:id
            return LogRegMethod(
                self.pool,
                seed=cfg.seed,
                valid=lambda: self.corpora.labelled(corpus, "valid"),
                in_scope_recall=self.base.constants.in_scope_recall,
            )
        if spec.family == SETFIT:
            missing = setfit_available()
            return (
                Skip(missing)
                if missing
                else SetFitMethod(device=cfg.device, seed=cfg.seed, iterations=cfg.setfit_iterations, base=self.base)
            )
        assert spec.algorithm is not None
        template = adapter_template(cfg.adapters, protocol, spec.algorithm)
        path, asked = resolve_adapter_for(template, dataset, cfg.adapter_dirs, self.base)
        if path is None and "{leave_out}" in template and self.base.leave_out_adapter is None:
            return Skip(
                f"the {self.base.name} base ships no leave-one-dataset-out adapters (its product is frozen)",
                no_adapter=True,
            )
        if path is None:
            flag = f"{protocol}:{spec.algorithm}" if protocol == "episodic" else spec.algorithm
            return Skip(
                f"adapter '{asked}' not found (pass --adapter {flag}=NAME_OR_PATH once it exists)", no_adapter=True
            )
        config, _ = read_adapter(path)
        # speed measures time only: any adapter of the right layout times the same, so "saw the data" is no bar
        problem = adapter_problem(config, spec.algorithm, "" if protocol == "speed" else dataset, heldout)
        if problem:
            return Skip(f"adapter '{asked}' not used: {problem}")
        if spec.steps > 0:
            try:
                import fewintent.meta.inner  # noqa: F401
            except ImportError:
                return Skip("--steps needs fewintent.meta.inner (meta-training, issue 3), not installed here")
        return ClassifierMethod(spec, self.pool, path, seed=cfg.seed, base=self.base.name, device=cfg.device)

    def already_done(self, row: dict[str, Any]) -> bool:
        """With ``--missing-only``: a measured (not skipped) row with this key is already in results.json."""
        if not self.config.missing_only:
            return False
        if "existing" not in self.artifacts:
            self.artifacts["existing"] = {row_key(r) for r in self.store.read() if r.get("status") != "skipped"}
        return row_key({**self.store.fields, **row}) in self.artifacts["existing"]

    def note_skip(self, row: dict[str, Any]) -> None:
        """Remember a skipped row's reason once per (method, reason), for the summary the CLI prints."""
        note = {"method": row["method"], "reason": row["note"]}
        if note not in self.notes:
            self.notes.append(note)
