"""``report.md``, the PNG plots and the README headline snippet, all regenerated from ``results.json``.

Nothing here measures anything: ``fewintent benchmark --report-only`` rebuilds every table and plot from the
rows, so the numbers in the README are never typed by hand.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fewintent.bench.lean import onnx_table
from fewintent.bench.markdown import markdown_table
from fewintent.bench.methods import DEFAULT_METHODS, SETFIT
from fewintent.bench.metrics import mean_ci95
from fewintent.bench.results import RESULTS, load_rows
from fewintent.bench.traffic import discovery_table

PUBLISHED_FILE = Path(__file__).with_name("published.json")


def published() -> dict[str, dict[tuple[str, int], float]]:
    """Published full-way accuracy (%) by method, ``(dataset, shots) -> value``, from ``published.json``."""
    methods = json.loads(PUBLISHED_FILE.read_text())["methods"]
    out = {}
    for method, cells in methods.items():
        out[method] = {(key.split("/")[0], int(key.split("/")[1])): float(v) for key, v in cells.items()}
    return out


PUBLISHED = published()
CELLS = [("banking77", 5), ("clinc150", 5), ("hwu64", 5), ("banking77", 10), ("clinc150", 10), ("hwu64", 10)]
NAMES = {"banking77": "BANKING77", "clinc150": "CLINC150", "hwu64": "HWU64", "banking77_oos": "BANKING77-OOS"}
SERVE_LOAD = "serve_load.json"
README_START, README_END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"
PLOTS = {
    "shots": "accuracy_vs_shots.png",
    "time": "adapt_time_vs_accuracy.png",
    "pr": "oos_pr_curves.png",
    "episodic": "episodic.png",
}


PROTOCOL_NOTES = [
    "- **fullway**: adapt on the standard `train_5` / `train_10` files with every intent at once, score closed-set "
    "top-1 on `test` (the number the papers report). Each `fewintent-*` row uses `minilm-meta-no-<dataset>` "
    "(or the adapter given with `--adapter`), refused when its metadata says it saw the dataset.",
    "- **episodic**: the benchmark's own deterministic episodes (seeded, identical for every method: same "
    "`episodes_sha256`). Each held-out domain takes its turn; an N-way episode picks N intents inside one domain "
    "(a domain with fewer intents, e.g. HWU64 `alarm`/`music`, only appears in the all-intents episodes). Support "
    "examples come from the held-out domains' `train` split and 15 queries per intent from their `test` split: "
    "the held-out-domain adapters never saw these domains in any split, and `test` is the one split that no "
    "threshold, early stopping (meta-training validates on `valid`) or hyper-parameter reads.",
    "- **oos**: CLINC150 support `train_10`, valid = `valid` + `oos_valid`, test = `test` + `oos_test`. "
    "BANKING77-OOS has no `train_10`: the support is 10 examples per intent drawn from its `train` split with "
    "the run's seed; valid = `valid` + `{id,ood}_oos_valid`, test = `test` + `{id,ood}_oos_test`. Prototype "
    "methods calibrate on the support set by leave-one-out (the product's rule); `frozen-logreg` by 5-fold "
    "out-of-fold probabilities; every method also gets the cut that best separates `valid` (Youden's J). "
    "Scores: cosine to the nearest prototype, or the top class probability.",
    "- **speed**: through the path users run (`IntentClassifier.fit` / `predict`, the SetFit model), no "
    "embedding cache; each latency/throughput is measured in alternation with the raw encoder on the same "
    "texts, so a busy machine slows both alike. Peak memory is the process's resident peak during the "
    "method (CPU) or peak CUDA allocation (GPU). Timing does not depend on what an adapter learned, so a speed "
    "row may use any adapter of the same LoRA layout (its `adapter` field says which).",
    "- **adapt_seconds** in fullway/oos/episodic rows: the encoding of the support set (timed when first "
    "encoded; the embedding cache is shared by methods on the same encoder) plus the head's own time; SetFit's "
    "is its training wall time (model loading excluded for every method).",
    "- **SetFit**: the library's `Trainer` with default `TrainingArguments` on the packaged MiniLM; "
    "`num_iterations` is set only when `--setfit-iterations` is given (the row's `recipe`), and "
    "`projected_default_seconds` extrapolates the measured time per step to the default recipe's step count.",
]


def _name(dataset: str) -> str:
    base, _, kind = dataset.partition(":")
    label = NAMES.get(base, base)
    return f"{label} ({'in-domain' if kind == 'id' else 'out-of-domain'} OOS)" if kind else label


def _rank(method: str) -> tuple[int, str]:
    order = ("raw-encoder", *DEFAULT_METHODS)
    return (order.index(method) if method in order else len(order), method)


def _color(method: str) -> str:
    """One colour per method across every plot (a method keeps its colour when another is missing from a plot)."""
    known = [m for m in DEFAULT_METHODS if m != "raw-encoder"]
    return f"C{known.index(method) % 10}" if method in known else f"C{(len(known) + sum(map(ord, method))) % 10}"


def _order(methods: Iterable[str]) -> list[str]:
    return sorted(set(methods), key=_rank)


def _ok(rows: list[dict[str, Any]], protocol: str) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("protocol") == protocol and r.get("status") != "skipped"]


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def _f(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _secs(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.2f} s" if x < 100 else f"{x / 60:.1f} min"


# ------------------------------------------------------------------------------------------------ tables
def fullway_tables(rows: list[dict[str, Any]], *, published: bool = True) -> list[str]:
    ok = _ok(rows, "fullway")
    cell = {(r["dataset"], r["shots"], r["method"]): r for r in ok}
    cols = [f"{_name(d)} {k}" for d, k in CELLS]
    body = []
    for m in _order(r["method"] for r in ok):
        body.append([f"`{m}`", *[_pct((cell.get((d, k, m)) or {}).get("accuracy")) for d, k in CELLS]])
    if published:
        for ref, vals in PUBLISHED.items():
            body.append([f"{ref} *(published)*", *[f"{vals[c]:.2f}" for c in CELLS]])
    lines = ["Top-1 accuracy (%), every intent at once, `train_K` -> `test`:", ""]
    lines += markdown_table(["method", *cols], body)
    times = []
    for m in _order(r["method"] for r in ok):
        times.append([f"`{m}`", *[_secs((cell.get((d, k, m)) or {}).get("adapt_seconds")) for d, k in CELLS]])
    lines += ["", "Adaptation wall time (encoding the support set + fitting the head; training for SetFit):", ""]
    lines += markdown_table(["method", *cols], times)
    ratio = setfit_ratio_lines(ok)
    if ratio:
        lines += ["", *ratio]
    return lines


def setfit_ratio_lines(ok: list[dict[str, Any]]) -> list[str]:
    """SetFit's adaptation time over each other method's, on the cells where SetFit ran."""
    out = []
    for s in [r for r in ok if r["method"] == SETFIT and r.get("adapt_seconds")]:
        others = [r for r in ok if (r["dataset"], r["shots"]) == (s["dataset"], s["shots"]) and r["method"] != SETFIT]
        parts = []
        for r in sorted(others, key=lambda r: _rank(r["method"])):
            if r.get("adapt_seconds"):
                parts.append(
                    f"{s['adapt_seconds'] / r['adapt_seconds']:.0f}x slower than `{r['method']}` "
                    f"({_pct(s['accuracy'])} vs {_pct(r['accuracy'])})"
                )
        recipe = s.get("recipe", "default")
        extra = ""
        if s.get("projected_default_seconds") and recipe != "default":
            extra = (
                f" SetFit's default recipe would take {s.get('default_recipe_steps')} steps, about "
                f"{_secs(s['projected_default_seconds'])} at the measured {s.get('seconds_per_step', 0):.2f} s/step."
            )
        out.append(
            f"SetFit on {_name(s['dataset'])} {s['shots']}-shot ({recipe}, {s.get('train_steps')} steps) trained in "
            f"{_secs(s['adapt_seconds'])}: " + "; ".join(parts) + "." + extra
        )
    return out


def fullway_details(rows: list[dict[str, Any]]) -> list[str]:
    ok = sorted(_ok(rows, "fullway"), key=lambda r: (r["shots"], r["dataset"], _rank(r["method"])))
    body = [
        [
            f"{_name(r['dataset'])} {r['shots']}-shot",
            f"`{r['method']}`",
            str(r.get("steps", 0)),
            str(r.get("adapter") or "—"),
            _pct(r["accuracy"]),
            _pct(r.get("macro_f1")),
            _f(r.get("mcc")),
            _pct(r.get("fallback_accuracy")),
            _secs(r.get("adapt_seconds")),
        ]
        for r in ok
    ]
    head = ["cell", "method", "steps", "adapter", "accuracy", "macro-F1", "MCC", "with OOS fallback", "adapt"]
    note = (
        "`with OOS fallback`: accuracy when the support-calibrated out-of-scope threshold is on (the product's "
        "default), so a rejected in-scope query counts as wrong."
    )
    return [note, "", *markdown_table(head, body)]


def episodic_table(rows: list[dict[str, Any]]) -> list[str]:
    ok = _ok(rows, "episodic")
    if not ok:
        return []
    settings = sorted({(r["dataset"], str(r["ways"]), r["shots"]) for r in ok}, key=lambda s: (s[0], s[1], s[2]))
    cell = {(r["dataset"], str(r["ways"]), r["shots"], r["method"]): r for r in ok}
    body = []
    for m in _order(r["method"] for r in ok):
        line = [f"`{m}`"]
        for s in settings:
            r = cell.get((*s, m))
            line.append("—" if r is None else f"{_pct(r['accuracy'])} ± {_pct(r['ci95'])} ({r['episodes']})")
        body.append(line)
    head = [f"{_name(d)} {w}-way {k}-shot" for d, w, k in settings]
    paired = []
    for s in settings:
        short = [r for r in ok if (r["dataset"], str(r["ways"]), r["shots"]) == s and r.get("note")]
        for r in short:
            n = r["episodes"]
            same = []
            for other in _order(x["method"] for x in ok if (x["dataset"], str(x["ways"]), x["shots"]) == s):
                o = cell[(*s, other)]
                accs = o.get("episode_accuracy") or []
                if o["episodes"] == n:  # ran on exactly these episodes
                    same.append(f"`{other}` {_pct(o['accuracy'])} ± {_pct(o['ci95'])}")
                elif len(accs) >= n:
                    mean, ci = mean_ci95(accs[:n])
                    same.append(f"`{other}` {_pct(mean)} ± {_pct(ci)}")
            if len(same) > 1:
                paired.append(
                    f"- {_name(s[0])} {s[1]}-way {s[2]}-shot, the same first {n} episodes: " + ", ".join(same)
                )
    domains = {r["dataset"]: r.get("domains") for r in ok}
    held = "; ".join(f"{_name(d)}: {', '.join(v or [])}" for d, v in domains.items())
    return [
        f"Accuracy (%) ± 95% CI (episodes) on held-out domains ({held}). Support from `train`, 15 queries per "
        "intent from `test`; every method sees the same episodes (`episodes_sha256` in results.json).",
        "",
        *markdown_table(["method", *head], body),
        *(
            ["", "Methods that train on every episode ran on the first episodes only; on those same episodes:", ""]
            + paired
            if paired
            else []
        ),
    ]


def oos_table(rows: list[dict[str, Any]]) -> list[str]:
    ok = _ok(rows, "oos")
    if not ok:
        return []
    body = []
    for r in sorted(ok, key=lambda r: (r["dataset"], _rank(r["method"]), r["threshold_source"])):
        body.append(
            [
                _name(r["dataset"]),
                f"`{r['method']}`",
                r["threshold_source"],
                _pct(r["oos_recall"]),
                _pct(r["oos_precision"]),
                _pct(r["oos_f1"]),
                _pct(r["auroc"]),
                _pct(r["in_scope_accuracy"]),
                _f(r["mcc"]),
            ]
        )
    head = ["dataset", "method", "threshold", "OOS recall", "OOS precision", "OOS F1", "AUROC", "in-scope acc", "MCC"]
    return [
        "10 examples per intent; the OOS threshold comes from the support set alone (`support`, the product's "
        "default) or from `valid` in-scope + OOS rows, never from `test`: the cut with the best in-scope kept + OOS "
        "caught (`valid`, Youden's J) or with the best OOS F1 (`valid-f1`, what `fewintent calibrate` does). "
        "`-oos-<score>` rows use another out-of-scope score (`adapt --oos-score`). AUROC does not depend on the "
        "threshold.",
        "",
        *markdown_table(head, body),
    ]


def _speed_provenance(ok: list[dict[str, Any]]) -> list[str]:
    """Which machine each device's rows come from, and the rows' own notes (e.g. what changed since)."""
    lines = []
    for device in sorted({r["device"] for r in ok}):
        run = next(r.get("run") or {} for r in ok if r["device"] == device)
        versions = run.get("versions") or {}
        machine = run.get("gpu") if device.startswith("cuda") else f"{run.get('cpu')}, {run.get('cpu_count')} cores"
        lines.append(f"- `{device}`: {machine}; torch {versions.get('torch')}, fewintent {versions.get('fewintent')}.")
    return lines + [f"- {note}" for note in sorted({r["note"] for r in ok if r.get("note")})]


def speed_table(rows: list[dict[str, Any]], serve_load: list[str] | None = None) -> list[str]:
    ok = _ok(rows, "speed")
    if not ok and not serve_load:
        return []
    lines: list[str] = []
    if ok:
        setfit = {r["device"]: r.get("adapt_seconds") for r in ok if r["method"] == SETFIT}
        body = []
        for r in sorted(ok, key=lambda r: (r["device"], _rank(r["method"]))):
            sf = setfit.get(r["device"])
            ratio = f"{sf / r['adapt_seconds']:.0f}x" if sf and r.get("adapt_seconds") else "—"
            peak = r.get("peak_rss_mb") or r.get("peak_gpu_mb")
            mem = "—" if peak is None else f"{peak:.0f} (+{r.get('memory_delta_mb') or 0:.0f})"
            body.append(
                [
                    r["device"],
                    f"`{r['method']}`",
                    _secs(r.get("adapt_seconds")) if r["method"] != "raw-encoder" else "—",
                    ratio if r["method"] not in (SETFIT, "raw-encoder") else "—",
                    _f(r["latency_p50_ms"], 2),
                    _f(r["latency_p99_ms"], 2),
                    _f(r.get("floor_p50_ms", r["latency_p50_ms"]), 2),
                    _f(r.get("latency_ratio"), 2) if r["method"] != "raw-encoder" else "1.00",
                    _f(r["throughput_qps"], 0),
                    _f(r.get("throughput_ratio"), 2) if r["method"] != "raw-encoder" else "1.00",
                    mem,
                ]
            )
        first = ok[0]
        lines += [
            f"{_name(first['dataset'])} `train_{first['shots']}` ({first['ways']} intents, {first.get('n_support')} "
            f"examples); latency over {first.get('n_latency')} single queries, throughput over {first.get('n_batch')} "
            f"test texts; torch threads: {first.get('torch_threads')}. Peak MB is the process's resident peak while "
            "the method ran (+ its growth during it). Ratios are against the raw encoder forward pass "
            "on the same texts, timed in alternation with the method (`floor p50 ms`; the `raw-encoder` row is its "
            "own measurement) so machine load cancels out (1.00 = no overhead); `SetFit / this` is SetFit's "
            "adaptation time over this method's.",
            "",
            *markdown_table(
                [
                    "device",
                    "method",
                    "adapt",
                    "SetFit / this",
                    "p50 ms",
                    "p99 ms",
                    "floor p50 ms",
                    "p50 / floor",
                    "texts/s",
                    "floor / texts/s",
                    "peak MB",
                ],
                body,
            ),
            "",
            *_speed_provenance(ok),
        ]
    if serve_load:
        lines += ["", *serve_load]
    return lines


def serve_load_lines(out: Path) -> list[str]:
    """Tables of ``serve_load.json`` (written by the serve load test), whatever rows it holds.

    The file is a list of rows, or an object whose list-valued fields are tables of rows (e.g. ``http``).
    """
    p = out / SERVE_LOAD
    if not p.exists():
        return []
    try:
        data = json.loads(p.read_text())
    except ValueError:
        return [f"`{SERVE_LOAD}` is not valid JSON; skipped."]
    tables: dict[str, list[dict[str, Any]]] = {}
    head = f"HTTP serving under load (`{SERVE_LOAD}`, written by the serve load test)"
    if isinstance(data, list):
        tables[""] = [r for r in data if isinstance(r, dict)]
    elif isinstance(data, dict):
        for key, value in data.items():
            if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
                tables[key] = value
        machine = data.get("machine") or {}
        what = data.get("what")
        extra = ", ".join(f"{k} {v}" for k, v in machine.items() if not isinstance(v, (dict, list)))
        head += f": {what}" if what else ""
        head += f" ({extra}; {data.get('created', '')})" if extra else ""
    lines = [head + ".", ""]
    for name, rs in tables.items():
        keys = list(dict.fromkeys(k for r in rs for k in r if not isinstance(r[k], (dict, list))))
        if name:
            lines += [f"`{name}`:", ""]
        lines += markdown_table(keys, [[str(r.get(k, "")) for k in keys] for r in rs]) + [""]
    return lines


def skipped_lines(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        if r.get("status") == "skipped":
            seen.setdefault((r["method"], r["note"]), set()).add(f"{r['protocol']}:{r['dataset']}")
    return [f"- `{m}` ({', '.join(sorted(w))}): {note}" for (m, note), w in sorted(seen.items())]


def run_lines(rows: list[dict[str, Any]]) -> list[str]:
    runs = {r["run"]["id"]: r["run"] for r in rows if r.get("run")}
    out = []
    for run in sorted(runs.values(), key=lambda x: x["date"]):
        v = run.get("versions", {})
        out.append(
            f"- `{run['id']}` {run['date']}: `{run['command']}` — {run.get('cpu')} ({run.get('cpu_count')} cores, "
            f"{run.get('torch_threads')} torch threads, load {run.get('load_average_at_start')}), GPU: "
            f"{run.get('gpu') or 'none'}; seed {run.get('seed')}; " + ", ".join(f"{k} {val}" for k, val in v.items())
        )
    return out


# ------------------------------------------------------------------------------------------------ plots
def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy_vs_shots(rows: list[dict[str, Any]], path: Path) -> bool:
    ok = _ok(rows, "fullway")
    if not ok:
        return False
    plt = _plt()
    datasets = [d for d in ("banking77", "clinc150", "hwu64") if any(r["dataset"] == d for r in ok)]
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets), 4), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        for m in _order(r["method"] for r in ok if r["dataset"] == d):
            pts = sorted((r["shots"], 100 * r["accuracy"]) for r in ok if r["dataset"] == d and r["method"] == m)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m, color=_color(m))
        ref = PUBLISHED["CPFT (RoBERTa-base, EMNLP 2021)"]
        ax.plot([5, 10], [ref[(d, 5)], ref[(d, 10)]], "k--", alpha=0.5, label="CPFT (published)")
        ax.set_title(_name(d))
        ax.set_xlabel("examples per intent")
        ax.set_xticks([5, 10])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("top-1 accuracy (%)")
    legend: dict[str, Any] = {}
    for ax in axes[0]:  # every method once, even one missing from the first panel
        for h, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, h)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(len(legend), 5), frameon=False)
    fig.suptitle("Full-way few-shot accuracy (every intent at once)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_time_vs_accuracy(rows: list[dict[str, Any]], path: Path) -> bool:
    ok = [r for r in _ok(rows, "fullway") if r.get("adapt_seconds")]
    if not ok:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"banking77": "o", "clinc150": "s", "hwu64": "^"}
    for m in _order(r["method"] for r in ok):
        color = _color(m)
        for r in (r for r in ok if r["method"] == m):
            ax.scatter(
                r["adapt_seconds"],
                100 * r["accuracy"],
                color=color,
                marker=markers.get(r["dataset"], "o"),
                s=30 + 4 * r["shots"],
            )
        ax.scatter([], [], color=color, label=m)
    for d, mk in markers.items():
        ax.scatter([], [], color="gray", marker=mk, label=_name(d))
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log")
    seconds = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(seconds)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlabel("adaptation wall time (s, log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Adaptation time vs accuracy (full-way; bigger marker = 10-shot)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_pr_curves(rows: list[dict[str, Any]], path: Path) -> bool:
    ok = [r for r in _ok(rows, "oos") if r.get("pr_curve")]
    if not ok:
        return False
    plt = _plt()
    datasets = sorted({r["dataset"] for r in ok})
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets), 4.2), squeeze=False)
    points = {(r["dataset"], r["method"], r["threshold_source"]): r for r in _ok(rows, "oos")}
    for ax, d in zip(axes[0], datasets):
        for m in _order(r["method"] for r in ok if r["dataset"] == d):
            r = next(r for r in ok if r["dataset"] == d and r["method"] == m)
            ax.plot(
                r["pr_curve"]["recall"],
                r["pr_curve"]["precision"],
                color=_color(m),
                label=f"{m} (AUROC {100 * r['auroc']:.1f})",
            )
            for source, marker in (("valid", "o"), ("support", "x")):
                p = points.get((d, m, source))
                if p and p.get("oos_recall") is not None:
                    ax.scatter(p["oos_recall"], p["oos_precision"], color=_color(m), marker=marker, zorder=3)
        ax.set_title(_name(d), fontsize=10)
        ax.set_xlabel("OOS recall")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    axes[0][0].set_ylabel("OOS precision")
    fig.suptitle(
        "Out-of-scope detection: precision-recall\n(o = threshold from valid, x = from the support set)", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_episodic(rows: list[dict[str, Any]], path: Path) -> bool:
    ok = _ok(rows, "episodic")
    if not ok:
        return False
    plt = _plt()
    settings = sorted({(r["dataset"], str(r["ways"]), r["shots"]) for r in ok})
    methods = _order(r["method"] for r in ok)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(settings)), 4.4))
    width = 0.8 / max(len(methods), 1)
    cell = {(r["dataset"], str(r["ways"]), r["shots"], r["method"]): r for r in ok}
    for i, m in enumerate(methods):
        xs, ys, es = [], [], []  # i: the bar's slot in its group
        for j, s in enumerate(settings):
            r = cell.get((*s, m))
            if r:
                xs.append(j + (i - (len(methods) - 1) / 2) * width)
                ys.append(100 * r["accuracy"])
                es.append(100 * r["ci95"])
        ax.bar(xs, ys, width, yerr=es, capsize=2, label=m, color=_color(m))
    ax.set_xticks(range(len(settings)))
    ax.set_xticklabels([f"{_name(d)}\n{w}-way {k}-shot" for d, w, k in settings], fontsize=8)
    ax.set_ylabel("accuracy (%) ± 95% CI")
    ax.set_title("Episodic accuracy on held-out domains")
    ax.grid(alpha=0.3, axis="y")
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=len(methods), frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------------------ files
def headline(rows: list[dict[str, Any]], image: str) -> str:
    """The README block: full-way table with the published numbers, SetFit's time ratio, the plot."""
    lines = [
        "<!-- generated by `fewintent benchmark --report-only` from data/benchmarks/results.json; do not edit -->",
        *fullway_tables(rows),
        "",
        f"![accuracy vs examples per intent]({image})",
        "",
    ]
    return "\n".join(lines)


def write_report(out: str | Path, *, readme: str | Path | None = None) -> Path:
    """Write ``report.md``, the plots and ``headline.md`` from ``out/results.json``; returns the snippet path.

    With ``readme``, the block between ``<!-- benchmark:start -->`` and ``<!-- benchmark:end -->`` in that file
    is replaced by the snippet (with image paths relative to the README).
    """
    out = Path(out)
    rows = load_rows(out / RESULTS)
    try:
        import matplotlib  # noqa: F401

        made = {
            "shots": plot_accuracy_vs_shots(rows, out / PLOTS["shots"]),
            "time": plot_time_vs_accuracy(rows, out / PLOTS["time"]),
            "pr": plot_pr_curves(rows, out / PLOTS["pr"]),
            "episodic": plot_episodic(rows, out / PLOTS["episodic"]),
        }
        no_plots = []
    except ImportError:  # tables still work; plots need the [bench] extra
        made = {}
        no_plots = ["*Plots skipped: matplotlib is not installed (`pip install 'fewintent[bench]'`).*", ""]
    sections: list[tuple[str, list[str], str | None]] = [
        ("Full-way K-shot", fullway_tables(rows) if _ok(rows, "fullway") else [], "shots"),
        ("Adaptation time vs accuracy", [], "time"),
        ("Full-way details", fullway_details(rows) if _ok(rows, "fullway") else [], None),
        ("Episodic, held-out domains", episodic_table(rows), "episodic"),
        ("Out-of-scope detection", oos_table(rows), "pr"),
        ("Speed", speed_table(rows, serve_load_lines(out)), None),
        ("Lean CPU inference: ONNX and int8", onnx_table(rows), None),
        ("Improving a bot from its traffic", discovery_table(rows), None),
    ]
    md = [
        "# fewintent benchmark",
        "",
        "Generated by `fewintent benchmark` from `results.json` (regenerate with `fewintent benchmark "
        "--report-only`). Each fewintent row uses an adapter meta-trained without the dataset it is scored on "
        "(`minilm-meta-no-<dataset>`); thresholds and hyper-parameters never look at `test`.",
        "",
        *no_plots,
    ]
    for title, body, plot in sections:
        has_plot = plot is not None and made.get(plot)
        if not body and not has_plot:
            continue
        md += [f"## {title}", "", *body, ""]
        if has_plot:
            md += [f"![{title}]({PLOTS[plot]})", ""]  # type: ignore[index]
    md += ["## How it was measured", "", *PROTOCOL_NOTES, ""]
    skipped = skipped_lines(rows)
    if skipped:
        md += ["## Not measured", "", *skipped, ""]
    md += ["## Runs", "", *run_lines(rows), ""]
    (out / "report.md").write_text("\n".join(md))
    image_base = Path(readme).resolve().parent if readme else Path.cwd()
    image = os.path.relpath((out / PLOTS["shots"]).resolve(), image_base)
    snippet = headline(rows, image)
    (out / "headline.md").write_text(snippet)
    if readme is not None:
        update_readme(Path(readme), snippet)
    return out / "headline.md"


def update_readme(readme: Path, snippet: str) -> bool:
    """Replace the marked block of ``readme``; False (file untouched) when it has no markers."""
    text = readme.read_text()
    pattern = re.compile(re.escape(README_START) + r".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        return False
    readme.write_text(pattern.sub(lambda _: f"{README_START}\n{snippet}\n{README_END}", text, count=1))
    return True
