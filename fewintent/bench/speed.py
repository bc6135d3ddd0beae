"""Speed: adaptation wall time, single-query latency (p50/p99), batch throughput and peak memory.

Each method is measured through the path a user runs (its :meth:`~fewintent.bench.methods.Method.speed` plan:
``IntentClassifier.fit`` / ``adapt`` for fewintent, the SetFit model for SetFit), without the benchmark's embedding
cache, on BANKING77 ``train_5`` (77 intents, 385
examples) and the same test texts; the floor is the raw encoder forward pass on those texts, so
``latency_ratio`` near 1.0 means the method adds nothing on top of embedding the query.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from fewintent.bench.context import BenchContext, Skip
from fewintent.bench.methods import Predict, build_method
from fewintent.bench.metrics import percentile_ms
from fewintent.bench.progress import Tracker
from fewintent.bench.protocols import limit
from fewintent.bench.results import ResultRow
from fewintent.bench.rows import RAW

SPEED_DATASET, SPEED_SHOTS = "banking77", 5


class MemoryWatch:
    """Peak resident memory (CPU) or peak allocated CUDA memory while the block runs."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak_mb = self.start_mb = 0.0
        self._stop = threading.Event()

    @staticmethod
    def rss_mb() -> float:
        """Resident memory of this process now (psutil when installed, else /proc, else the lifetime peak)."""
        try:
            import psutil

            return float(psutil.Process(os.getpid()).memory_info().rss) / 2**20
        except ImportError:
            pass
        try:
            pages = int(Path("/proc/self/statm").read_text().split()[1])
            return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, ValueError, IndexError):
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    @contextmanager
    def watch(self) -> Iterator[MemoryWatch]:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start_mb = torch.cuda.memory_allocated() / 2**20
            yield self
            torch.cuda.synchronize()
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
            return
        self.start_mb = self.peak_mb = self.rss_mb()

        def sample() -> None:
            while not self._stop.wait(0.005):
                self.peak_mb = max(self.peak_mb, self.rss_mb())

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        try:
            yield self
        finally:
            self._stop.set()
            t.join()
            self.peak_mb = max(self.peak_mb, self.rss_mb())


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def paired_latency(
    fn: Callable[[list[str]], Any],
    floor: Callable[[list[str]], Any],
    texts: Sequence[str],
    device: str,
    warmup: int = 5,
) -> tuple[list[float], list[float]]:
    """Seconds per single-text call of ``fn`` and of ``floor``, alternating per text so both see the same load."""
    for t in texts[:warmup]:
        fn([t])
        floor([t])
    a: list[float] = []
    b: list[float] = []
    for i, t in enumerate(texts):
        for which in ((fn, a), (floor, b)) if i % 2 == 0 else ((floor, b), (fn, a)):
            _sync(device)
            start = time.perf_counter()
            which[0]([t])
            _sync(device)
            which[1].append(time.perf_counter() - start)
    return a, b


def paired_throughput(
    fn: Callable[[list[str]], Any], floor: Callable[[list[str]], Any], texts: list[str], device: str, rounds: int = 2
) -> tuple[float, float]:
    """Best texts/s of ``fn`` and ``floor`` over alternating rounds, each one call over all ``texts``."""
    best = [0.0, 0.0]
    for _ in range(rounds):
        for i, f in enumerate((fn, floor)):
            _sync(device)
            start = time.perf_counter()
            f(texts)
            _sync(device)
            best[i] = max(best[i], len(texts) / (time.perf_counter() - start))
    return best[0], best[1]


def speed(ctx: BenchContext) -> None:
    cfg = ctx.config
    if not cfg.wants(SPEED_DATASET) and not cfg.quick:
        return
    dataset = SPEED_DATASET if cfg.wants(SPEED_DATASET) else cfg.datasets[0]
    shots = SPEED_SHOTS
    support, test_set = limit(
        ctx, ctx.corpora.support(dataset, f"train_{shots}"), ctx.corpora.labelled(dataset, "test")
    )
    test = test_set.texts
    singles, batch = test[: cfg.speed_queries], test[: cfg.speed_batch]
    timing = {"warmup": cfg.speed_warmup, "rounds": cfg.speed_rounds}
    devices = [cfg.device] + (["cuda"] if torch.cuda.is_available() and cfg.device == "cpu" else [])
    with Tracker("speed", len(devices) * (len(cfg.methods) + 1)) as tracker:
        for device in devices:
            base = ResultRow(protocol="speed", dataset=dataset, shots=shots, ways=len(support.labels), device=device)
            base = base.but(n_support=len(support.texts), n_latency=len(singles), n_batch=len(batch))
            base = base.but(torch_threads=torch.get_num_threads())
            encoder = ctx.pool.frozen_on(device)
            raw: Predict = encoder.encode
            floor = _measure(lambda: raw, raw, singles, batch, device, **timing)  # noqa: B023 (used right here)
            floor = {k: v for k, v in floor.items() if not k.startswith(("floor_", "adapt_seconds_measured"))}
            ctx.store.add(base.but(method=RAW, steps=0, **{**floor, "latency_ratio": 1.0, "throughput_ratio": 1.0}))
            tracker.log(f"{device} raw encoder: p50 {floor['latency_p50_ms']:.2f} ms, {floor['throughput_qps']:.0f}/s")
            tracker.advance()
            for name in cfg.methods:
                if ctx.already_done(base.but(method=name)):
                    tracker.advance()
                    continue
                method = build_method(ctx, name, "speed", dataset)
                plan = method if isinstance(method, Skip) else method.speed(device, support, (dataset, shots))
                if isinstance(plan, Skip):
                    row = base.but(method=name, status="skipped", note=plan.reason)
                    ctx.note_skip(row)
                    tracker.log(f"{device} {name}: skipped ({row.note})")
                else:
                    m = _measure(plan.adapt, encoder.encode, singles, batch, device, **timing)
                    adapt = plan.fields.pop("adapt_seconds", None)
                    measured = m.pop("adapt_seconds_measured")
                    row = base.but(method=name, steps=getattr(method, "steps", 0), **plan.fields)
                    row = row.but(adapt_seconds=measured if adapt is None else round(float(adapt), 3), **m)
                    tracker.log(
                        f"{device} {name}: adapt {row.adapt_seconds:.2f}s, p50 {row.latency_p50_ms:.2f} ms "
                        f"(x{row.latency_ratio:.2f} of the floor), {row.throughput_qps:.0f}/s"
                    )
                ctx.store.add(row)
                tracker.advance()


def _measure(
    adapt: Callable[[], Predict],
    floor: Predict,
    singles: Sequence[str],
    batch: list[str],
    device: str,
    warmup: int = 5,
    rounds: int = 2,
) -> dict[str, Any]:
    """Adaptation time (``adapt`` returns the predict function), then latency and throughput of that function
    measured in pairs with the raw ``floor``; peak memory over all of it."""
    watch = MemoryWatch(device)
    with watch.watch():
        start = time.perf_counter()
        predict = adapt()
        adapt_seconds = time.perf_counter() - start
        lat, lat_floor = paired_latency(predict, floor, singles, device, warmup)
        qps, qps_floor = paired_throughput(predict, floor, batch, device, rounds)
    p50, p50_floor = percentile_ms(lat, 50), percentile_ms(lat_floor, 50)
    return {
        "adapt_seconds_measured": round(adapt_seconds, 4),
        "latency_p50_ms": round(p50, 3),
        "latency_p99_ms": round(percentile_ms(lat, 99), 3),
        "throughput_qps": round(qps, 1),
        "floor_p50_ms": round(p50_floor, 3),
        "floor_p99_ms": round(percentile_ms(lat_floor, 99), 3),
        "floor_qps": round(qps_floor, 1),
        "latency_ratio": round(p50 / p50_floor, 3),
        "throughput_ratio": round(qps_floor / qps, 3),
        ("peak_gpu_mb" if device.startswith("cuda") else "peak_rss_mb"): round(watch.peak_mb, 1),
        "memory_delta_mb": round(watch.peak_mb - watch.start_mb, 1),
    }
