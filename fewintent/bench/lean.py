"""The ``onnx`` protocol: torch fp32 vs ONNX fp32 vs ONNX int8 model directories, on the CPU, in one run.

Models come from the product's own path (``IntentClassifier.adapt`` with the leave-one-out adapter, then
``IntentClassifier.export``). Measured: agreement with the torch model (top-1 on BANKING77 ``test``, OOS decision
on CLINC150 ``test`` + ``oos_test``) and the accuracy change; single-message latency p50 / p99 and batch
throughput at 1 and 2 threads; the size on disk; and a fresh process that imports the serving stack, loads the
directory and answers one message (its peak resident memory and time: what one ``serve`` worker costs).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fewintent.bench.context import BenchContext, Skip
from fewintent.bench.markdown import markdown_table
from fewintent.bench.methods import PRODUCT_METHOD, build_method
from fewintent.bench.metrics import percentile_ms
from fewintent.bench.progress import Tracker
from fewintent.bench.results import DEFAULT_ROW_BASE
from fewintent.bench.rows import Rows, method_rank, ok_rows
from fewintent.model import IntentClassifier

VARIANTS = {"torch-fp32": None, "onnx-fp32": "fp32", "onnx-int8": "int8"}
# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the parent across exec, so a child of a
# big benchmark process would report the parent's peak.
_WORKER = """
import json, re, sys, time
start = time.perf_counter()
import fewintent.serve.app  # the serving stack a worker imports
from fewintent import IntentClassifier
clf = IntentClassifier.load(sys.argv[1], device="cpu")
clf.predict(["where is my card?"])
status = open("/proc/self/status").read()
peak_kb = int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1))
print(json.dumps({"worker_seconds": time.perf_counter() - start, "worker_peak_rss_mb": peak_kb / 1024,
                  "torch_imported": "torch" in sys.modules}))
"""


def _build(ctx: BenchContext, dataset: str, split: str, work: Path) -> tuple[dict[str, Path], str] | Skip:
    """Adapt on ``dataset``'s ``split`` as the product does on this base (its leave-one-out adapter; the frozen
    encoder where the base ships none for ``dataset``, as ``--adapter auto`` does for it); export fp32 and int8
    next to it. Also returns the adapter's name ("none": frozen)."""
    method = build_method(ctx, PRODUCT_METHOD, "fullway", dataset)
    adapter_dir = getattr(method, "adapter_dir", None)
    if isinstance(method, Skip) and not method.no_adapter:
        return method  # an adapter exists but must not be used here (it saw this dataset)
    support = ctx.corpora.support(dataset, split)
    dirs = {name: work / f"{dataset}-{name}" for name in VARIANTS}
    adapter = str(adapter_dir) if adapter_dir is not None else "none"
    IntentClassifier.adapt(support, base=ctx.base.name, adapter=adapter, device="cpu").save(dirs["torch-fp32"])
    for name, quantize in VARIANTS.items():
        if quantize is not None:
            IntentClassifier.export(dirs["torch-fp32"], dirs[name], quantize=None if quantize == "fp32" else quantize)
    return dirs, Path(adapter).name


def _load_all(dirs: dict[str, Path]) -> dict[str, IntentClassifier]:
    return {name: IntentClassifier.load(d, device="cpu") for name, d in dirs.items()}


def _latency(clf: IntentClassifier, singles: list[str], batch: list[str], warmup: int, rounds: int) -> dict[str, Any]:
    for t in singles[:warmup]:
        clf.predict([t], top_k=1)
    seconds = []
    for t in singles:
        start = time.perf_counter()
        clf.predict([t], top_k=1)
        seconds.append(time.perf_counter() - start)
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        clf.predict(batch, top_k=1)
        best = max(best, len(batch) / (time.perf_counter() - start))
    return {
        "latency_p50_ms": round(percentile_ms(seconds, 50), 3),
        "latency_p99_ms": round(percentile_ms(seconds, 99), 3),
        "throughput_qps": round(best, 1),
    }


def _worker(model_dir: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", _WORKER, str(model_dir)], capture_output=True, text=True, timeout=600, check=True
    )
    info: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in info.items()}


def onnx(ctx: BenchContext) -> None:
    """Rows per (variant, threads): agreement, accuracy, OOS agreement, latency, throughput, size, worker memory."""
    cfg = ctx.config
    base = {"protocol": "onnx", "dataset": "banking77", "shots": 10}
    with Tracker("onnx", 4) as tracker, tempfile.TemporaryDirectory(prefix="fewintent-onnx-") as tmp:
        work = Path(tmp)
        built = _build(ctx, "banking77", "train_10", work)
        oos_built = _build(ctx, "clinc150", "train_10", work) if cfg.wants_oos("clinc150") else None
        if isinstance(built, Skip):
            ctx.store.add({**base, "method": "onnx-int8", "status": "skipped", "note": built.reason})
            return
        dirs, adapter = built
        base["adapter"] = adapter
        recipe = json.loads((dirs["onnx-int8"] / "config.json").read_text())["encoder"].get("int8")
        tracker.advance()
        test = ctx.corpora.labelled("banking77", "test")
        models = _load_all(dirs)
        pred = {n: [p.intent_ranking[0].name for p in m.predict(test.texts, top_k=1)] for n, m in models.items()}
        agreement: dict[str, dict[str, Any]] = {}
        for name in VARIANTS:
            agreement[name] = {
                "top1_agreement": round(float(np.mean([a == b for a, b in zip(pred[name], pred["torch-fp32"])])), 4),
                "top1_accuracy": round(float(np.mean([a == g for a, g in zip(pred[name], test.intents)])), 4),
            }
        if isinstance(oos_built, tuple):
            oos_dirs, base["oos_adapter"] = oos_built
            clinc = ctx.corpora.labelled("clinc150", "test", "oos_test")
            texts = clinc.texts + clinc.oos_texts
            oos_models = _load_all(oos_dirs)
            decided = {n: [p.is_oos for p in m.predict(texts, top_k=1)] for n, m in oos_models.items()}
            for name in VARIANTS:
                same = np.mean([a == b for a, b in zip(decided[name], decided["torch-fp32"])])
                agreement[name]["oos_decision_agreement"] = round(float(same), 4)
        tracker.advance()
        singles = test.texts[: cfg.speed_queries]
        batch = (test.texts * 2)[: cfg.speed_batch]
        threads_before = torch.get_num_threads()
        timing: dict[tuple[str, int], dict[str, Any]] = {}
        try:
            for threads in (1, 2):
                torch.set_num_threads(threads)  # ONNX sessions take the thread count when they are created
                for name, model in _load_all(dirs).items():
                    timing[(name, threads)] = _latency(model, singles, batch, cfg.speed_warmup, cfg.speed_rounds)
        finally:
            torch.set_num_threads(threads_before)
        tracker.advance()
        for name, d in dirs.items():
            size = sum(f.stat().st_size for f in d.iterdir() if f.is_file()) / 2**20
            worker = _worker(d)
            for threads in (1, 2):
                t, ref = timing[(name, threads)], timing[("torch-fp32", threads)]
                row = {
                    **base,
                    "method": name,
                    "device": f"cpu, {threads} thread{'s' if threads > 1 else ''}",
                    **agreement[name],
                    **t,
                    "p50_speedup_vs_torch": round(ref["latency_p50_ms"] / t["latency_p50_ms"], 2),
                    "throughput_vs_torch": round(t["throughput_qps"] / ref["throughput_qps"], 2),
                    "disk_mb": round(size, 1),
                    **({"int8_recipe": recipe} if name == "onnx-int8" and recipe else {}),
                    **worker,
                }
                ctx.store.add(row)
                tracker.log(
                    f"{name} ({threads} thr): agree {row['top1_agreement']:.4f} p50 {t['latency_p50_ms']:.2f} ms "
                    f"{t['throughput_qps']:.0f}/s disk {size:.1f} MB worker {worker['worker_peak_rss_mb']:.0f} MB"
                )
        tracker.advance()


def onnx_table(rows: Rows) -> list[str]:
    ok = ok_rows(rows, "onnx")
    if not ok:
        return []
    head = "model|threads|top-1 agree|accuracy|OOS decision agree|p50 ms|p99 ms|texts/s|p50 speed-up|throughput ×|"
    head += "disk MB|worker RSS MB|worker start s"
    body = []
    for r in sorted(ok, key=lambda r: (method_rank(r.method)[0], r.device or "", _variant_rank(r.method))):
        x, agree = r.extra, r.extra.get("oos_decision_agreement")
        body.append(
            [
                f"`{r.method}`",
                (r.device or "").split(", ")[-1],
                f"{100 * x['top1_agreement']:.2f}%",
                f"{100 * x['top1_accuracy']:.2f}",
                "—" if agree is None else f"{100 * agree:.2f}%",
                f"{r.latency_p50_ms:.2f}",
                f"{r.latency_p99_ms:.2f}",
                f"{r.throughput_qps:.0f}",
                f"{x['p50_speedup_vs_torch']:.2f}×",
                f"{x['throughput_vs_torch']:.2f}×",
                f"{x['disk_mb']:.1f}",
                f"{x['worker_peak_rss_mb']:.0f}",
                f"{x['worker_seconds']:.1f}",
            ]
        )
    adapters = {(r.base or DEFAULT_ROW_BASE, r.get("adapter", "minilm-meta-no-banking77")) for r in ok}
    models = ", ".join(
        f"{base}: `{adapter}`" if adapter != "none" else f"{base}: frozen" for base, adapter in sorted(adapters)
    )
    onnx_torch = {r.extra.get("torch_imported") for r in ok if not r.method.startswith("torch-")}
    worker = (
        "torch is imported either way"
        if onnx_torch == {True}
        else "the ONNX workers import no torch"
        if onnx_torch == {False}
        else "whether torch was imported: see each row"
    )
    return [
        f"BANKING77 `train_10` model (linear head; {models}), exported with `fewintent export`. "
        "Agreement: same top-1 intent as the torch model on BANKING77 `test`; OOS decision agreement on CLINC150 "
        "`test` + `oos_test` (its own `train_10` model). Latency: one message per call; throughput: one call over "
        "a batch. Worker: a fresh process importing the serving stack, loading the directory and answering one "
        f"message (peak resident memory, wall time; {worker}).",
        "",
        *markdown_table(head.split("|"), body),
    ]


def _variant_rank(method: str) -> int:
    name = method.partition("@")[0]
    return list(VARIANTS).index(name) if name in VARIANTS else len(VARIANTS)
