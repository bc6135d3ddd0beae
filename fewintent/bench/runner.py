"""``run_benchmark``: the protocols asked for, one after the other, rows written as they finish."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

from fewintent.bench.config import PROTOCOLS, BenchConfig
from fewintent.bench.context import BenchContext
from fewintent.bench.data import Corpora
from fewintent.bench.encoders import EncoderFactory, EncoderPool
from fewintent.bench.lean import onnx
from fewintent.bench.methods import DEFAULT_METHODS, MULTILABEL_METHODS, method_class
from fewintent.bench.multilabel import multilabel
from fewintent.bench.protocols import episodic, fullway, oos
from fewintent.bench.results import ResultStore, run_metadata
from fewintent.bench.speed import speed
from fewintent.bench.traffic import discovery
from fewintent.encoder.encoder import SentenceEncoder
from fewintent.encoder.registry import registered
from fewintent.errors import FewIntentError

RUNNERS: dict[str, Callable[[BenchContext], None]] = {
    "fullway": fullway,
    "episodic": episodic,
    "oos": oos,
    "speed": speed,
    "onnx": onnx,
    "discovery": discovery,
    "multilabel": multilabel,
}


def run_benchmark(
    config: BenchConfig,
    *,
    encoder_factory: EncoderFactory | None = None,
    argv: list[str] | None = None,
) -> BenchContext:
    """Run the configured protocols and write ``results.json`` (row by row), ``report.md`` and the plots.

    Example:
        >>> cfg = BenchConfig(data_dir=Path("../shared/datasets"), protocols=("fullway",))  # doctest: +SKIP
        >>> run_benchmark(cfg)  # doctest: +SKIP
    """
    from fewintent.bench.report import write_report

    if not config.bases:
        raise FewIntentError("name at least one base to benchmark (`fewintent bases` lists them)")
    for p in config.protocols:
        if p not in PROTOCOLS:
            raise FewIntentError(f"unknown protocol '{p}': choose from {', '.join(PROTOCOLS)}")
    config.multilabel_methods = config.multilabel_methods or config.methods or MULTILABEL_METHODS
    config.methods = config.methods or DEFAULT_METHODS
    if config.quick:
        config.apply_quick()
    for m in {*config.methods, *config.multilabel_methods}:
        method_class(m)  # an unknown name is refused before anything runs
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    specs = []
    for name in config.bases:
        spec = registered(name)
        if spec is None:
            raise FewIntentError(f"unknown base '{name}': `fewintent bases` lists the registered ones")
        specs.append(spec)
    run = run_metadata(config.seed, argv)
    run["config"] = {k: v for k, v in config.to_dict().items() if k not in ("adapter_dirs",)}
    corpora = Corpora(config.data_dir)  # a missing corpus folder is one line before anything is written
    store = ResultStore(config.out, run, append=config.append)
    previous = _exit_on_sigterm()
    try:
        for spec in specs:
            store.base = spec.name
            factory = encoder_factory or _factory(spec.name, config.device)
            ctx = BenchContext(config=config, corpora=corpora, pool=EncoderPool(factory), store=store, base=spec)
            for protocol in config.protocols:
                RUNNERS[protocol](ctx)
    finally:  # an interrupted run (Ctrl-C, kill) still leaves a report of the rows it finished
        write_report(config.out)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return ctx


def _factory(base: str, device: str) -> EncoderFactory:
    def build() -> SentenceEncoder:
        return SentenceEncoder(base, device=device)

    return build


def _exit_on_sigterm():  # type: ignore[no-untyped-def]
    """Turn SIGTERM into SystemExit so ``finally`` blocks run; returns the previous handler (None off-main-thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum, frame):  # type: ignore[no-untyped-def]
        raise SystemExit(143)

    return signal.signal(signal.SIGTERM, stop)
