"""Speed: adaptation wall time, single-query latency (p50/p99), batch throughput and peak memory.

Each method is measured through the path a user runs (``IntentClassifier.fit`` for fewintent, the SetFit
model for SetFit), without the benchmark's embedding cache, on BANKING77 ``train_5`` (77 intents, 385
examples) and the same test texts; the floor is the raw encoder forward pass on those texts, so
``latency_ratio`` near 1.0 means the method adds nothing on top of embedding the query.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from fewintent.bench.context import BenchContext, Skip
from fewintent.bench.methods import FROZEN_LOGREG, SETFIT, ClassifierMethod, SetFitMethod, adapter_note
from fewintent.bench.metrics import percentile_ms
from fewintent.bench.progress import Tracker
from fewintent.bench.protocols import limit
from fewintent.bench.results import load_rows
from fewintent.data.intentset import IntentSet
from fewintent.encoder.encoder import SentenceEncoder
from fewintent.encoder.lora import merge_lora

SPEED_DATASET, SPEED_SHOTS = "banking77", 5
RAW = "raw-encoder"


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
    devices = [cfg.device] + (["cuda"] if torch.cuda.is_available() and cfg.device == "cpu" else [])
    with Tracker("speed", len(devices) * (len(cfg.methods) + 1)) as tracker:
        for device in devices:
            base = {
                "protocol": "speed",
                "dataset": dataset,
                "shots": shots,
                "ways": len(support.labels),
                "device": device,
                "n_support": len(support.texts),
                "n_latency": len(singles),
                "n_batch": len(batch),
                "torch_threads": torch.get_num_threads(),
            }
            encoder = _frozen_on(ctx, device)
            floor = _measure(encoder.encode, encoder.encode, singles, batch, device, lambda: None, **_timing(ctx))
            floor = {k: v for k, v in floor.items() if not k.startswith(("floor_", "adapt_seconds_measured"))}
            floor_row = {**base, "method": RAW, "steps": 0, **floor, "latency_ratio": 1.0, "throughput_ratio": 1.0}
            ctx.store.add(floor_row)
            tracker.log(f"{device} raw encoder: p50 {floor['latency_p50_ms']:.2f} ms, {floor['throughput_qps']:.0f}/s")
            tracker.advance()
            for name in cfg.methods:
                if ctx.already_done({**base, "method": name}):
                    tracker.advance()
                    continue
                row = _measure_method(ctx, name, device, support, singles, batch, encoder.encode, base)
                ctx.store.add(row)
                if row.get("status") == "skipped":
                    ctx.note_skip(row)
                    tracker.log(f"{device} {name}: skipped ({row['note']})")
                else:
                    tracker.log(
                        f"{device} {name}: adapt {row['adapt_seconds']:.2f}s, p50 {row['latency_p50_ms']:.2f} ms "
                        f"(x{row['latency_ratio']:.2f} of the floor), {row['throughput_qps']:.0f}/s"
                    )
                tracker.advance()


def _frozen_on(ctx: BenchContext, device: str) -> SentenceEncoder:
    _, enc = ctx.pool.get(None)
    if str(enc.device) == device or device == "cpu" and enc.device.type == "cpu":
        return enc
    return ctx.pool.factory().to(device)


def _timing(ctx: BenchContext) -> dict[str, int]:
    return {"warmup": ctx.config.speed_warmup, "rounds": ctx.config.speed_rounds}


def _measure(
    predict: Callable[[list[str]], Any],
    floor: Callable[[list[str]], Any],
    singles: Sequence[str],
    batch: list[str],
    device: str,
    adapt: Callable[[], Any],
    warmup: int = 5,
    rounds: int = 2,
) -> dict[str, Any]:
    """Adaptation time, then latency and throughput of ``predict`` measured in pairs with the raw ``floor``."""
    watch = MemoryWatch(device)
    with watch.watch():
        start = time.perf_counter()
        adapt()
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


def _measure_method(
    ctx: BenchContext,
    name: str,
    device: str,
    support: IntentSet,
    singles: Sequence[str],
    batch: list[str],
    floor: Callable[[list[str]], Any],
    base: dict[str, Any],
) -> dict[str, Any]:
    method = ctx.method(name, "speed", base["dataset"])
    if not isinstance(method, Skip) and method.spec.tune:
        method = Skip("a -tune method's adapt time (minutes of training) is in its fullway and oos rows")
    if isinstance(method, Skip):
        return {**base, "method": name, "status": "skipped", "note": method.reason}
    if isinstance(method, SetFitMethod):
        return _measure_setfit(ctx, method, device, support, singles, batch, floor, base)
    if method.name == FROZEN_LOGREG:
        encoder = _frozen_on(ctx, device)
        state: dict[str, Any] = {}

        def adapt_lr() -> None:
            from sklearn.linear_model import LogisticRegression

            x = encoder.encode(support.texts).numpy()
            state["clf"] = LogisticRegression(max_iter=1000, random_state=ctx.config.seed).fit(x, support.intents)

        m = _measure(
            lambda x: state["clf"].predict_proba(encoder.encode(x).numpy()),
            floor,
            singles,
            batch,
            device,
            adapt_lr,
            **_timing(ctx),
        )
        return {
            **base,
            "method": name,
            "steps": 0,
            "adapt_seconds": m["adapt_seconds_measured"],
            **m,
        }
    assert isinstance(method, ClassifierMethod)
    if method.adapter_dir is None:
        encoder = _frozen_on(ctx, device)
    else:
        # What IntentClassifier.adapt does (steps, then LoRA merged into the base weights), on a private copy:
        # merging is in place and the pool's encoder must keep its live, meta-learned LoRA for later methods.
        _, shared = ctx.pool.get(method.adapter_dir)
        encoder = copy.deepcopy(shared).to(device)
    clf = method.spec.classifier(encoder)

    def adapt_fi() -> None:
        if method.spec.steps:
            from fewintent.model.tuning import adapt_on_support

            key = ctx.pool.key(method.adapter_dir)
            lr = float(ctx.pool.adapter_config(key).get("inner_lr", 1e-3))
            adapt_on_support(encoder, support, steps=method.spec.steps, lr=lr, seed=ctx.config.seed)
        merge_lora(encoder)
        clf.fit(support)

    m = _measure(lambda x: clf.predict(x, top_k=1), floor, singles, batch, device, adapt_fi, **_timing(ctx))
    return {
        **base,
        "method": name,
        "steps": method.spec.steps,
        "head": method.spec.head.value,
        "intent_names": method.spec.intent_names,
        "adapter": adapter_note(method.adapter_dir),
        "adapt_seconds": m["adapt_seconds_measured"],
        **m,
    }


def _measure_setfit(
    ctx: BenchContext,
    method: SetFitMethod,
    device: str,
    support: IntentSet,
    singles: Sequence[str],
    batch: list[str],
    floor: Callable[[list[str]], Any],
    base: dict[str, Any],
) -> dict[str, Any]:
    """SetFit's adaptation time is its full training on this split, in this run: reused from this run's fullway
    row, else trained here (support within --setfit-max-support), else (with a note) the newest fullway row in
    results.json. Latency and throughput are measured on the trained model when there is one."""
    trained, adapt_seconds, source, recipe = None, None, None, None
    train_memory: MemoryWatch | None = None
    if ctx.artifacts.get("setfit_banking77_5") and base["dataset"] == "banking77" and device == ctx.config.device:
        trained, adapt_seconds = ctx.artifacts["setfit_banking77_5"]
        source = "fullway row of this run"
    if adapt_seconds is None and len(support.texts) <= ctx.config.setfit_max_support:
        runner = SetFitMethod(device=device, seed=method.seed, iterations=method.iterations)
        train_memory = MemoryWatch(device)
        with train_memory.watch():
            outcome = runner.run(support, {})
        trained, adapt_seconds, source = runner.last_model, outcome.adapt_seconds, "trained in this speed run"
        recipe = outcome.extra.get("recipe")
    if adapt_seconds is None:
        for r in load_rows(ctx.store.path):
            same = (r.get("protocol"), r.get("dataset"), r.get("shots"), r.get("method"))
            if same == ("fullway", base["dataset"], base["shots"], SETFIT) and r.get("adapt_seconds"):
                adapt_seconds, recipe = r["adapt_seconds"], r.get("recipe")
                source = f"fullway row of run {r.get('run', {}).get('id')} (another run: load may differ)"
    if adapt_seconds is None:
        return {
            **base,
            "method": SETFIT,
            "status": "skipped",
            "note": "no SetFit training time on this split (run fullway with setfit first)",
        }
    model = trained
    if model is None or device != ctx.config.device:
        from sklearn.linear_model import LogisticRegression

        model = SetFitMethod(device=device).load()
        emb = model.model_body.encode(support.texts, convert_to_numpy=True)  # inference cost does not depend on
        model.model_head = LogisticRegression(max_iter=1000).fit(emb, support.intents)  # the trained weights
    m = _measure(
        lambda x: model.predict_proba(x, as_numpy=True), floor, singles, batch, device, lambda: None, **_timing(ctx)
    )
    m.pop("adapt_seconds_measured")
    if train_memory is not None:  # training is part of SetFit's adaptation: its memory counts too
        key = "peak_gpu_mb" if device.startswith("cuda") else "peak_rss_mb"
        m[key] = round(max(m[key], train_memory.peak_mb), 1)
        m["memory_delta_mb"] = round(max(m["memory_delta_mb"], train_memory.peak_mb - train_memory.start_mb), 1)
    return {
        **base,
        "method": SETFIT,
        "steps": 0,
        "adapt_seconds": round(float(adapt_seconds), 3),
        "adapt_seconds_source": source,
        "recipe": recipe,
        **m,
    }
