"""The report's Markdown tables, one function per protocol, each a list of lines built from ``results.json`` rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fewintent.bench.markdown import fixed, markdown_table, pct, secs
from fewintent.bench.metrics import mean_ci95
from fewintent.bench.results import ResultRow
from fewintent.bench.rows import (
    CELLS,
    PUBLISHED,
    RAW,
    Rows,
    dataset_name,
    method_order,
    method_rank,
    ok_rows,
    time_reference,
)
from fewintent.bench.shares import SHARE_SOURCES

SERVE_LOAD = "serve_load.json"
SPEED_HEAD = "device|method|adapt|SetFit / this|p50 ms|p99 ms|floor p50 ms|p50 / floor|texts/s|floor / texts/s|peak MB"


def fullway_tables(rows: Rows, *, published: bool = True) -> list[str]:
    ok = ok_rows(rows, "fullway")
    cell = {(r.dataset, r.shots, r.method): r for r in ok}
    none = ResultRow()
    cols = [f"{dataset_name(d)} {k}" for d, k in CELLS]
    body = []
    for m in method_order(r.method for r in ok):
        body.append([f"`{m}`", *[pct(cell.get((d, k, m), none).accuracy) for d, k in CELLS]])
    if published:
        for ref, vals in PUBLISHED.items():
            body.append([f"{ref} *(published)*", *[f"{vals[c]:.2f}" for c in CELLS]])
    lines = ["Top-1 accuracy (%), every intent at once, `train_K` -> `test`:", ""]
    lines += markdown_table(["method", *cols], body)
    times = []
    for m in method_order(r.method for r in ok):
        times.append([f"`{m}`", *[secs(cell.get((d, k, m), none).adapt_seconds) for d, k in CELLS]])
    lines += ["", "Adaptation wall time (encoding the support set + fitting the head; training for SetFit):", ""]
    lines += markdown_table(["method", *cols], times)
    ratio = setfit_ratio_lines(ok)
    if ratio:
        lines += ["", *ratio]
    return lines


def _times(ratio: float) -> str:
    """A time ratio in words: "330x slower than", "1.4x slower than", "2.1x faster than"."""
    if ratio < 1:
        return f"{1 / ratio:.1f}x faster than"
    return f"{ratio:.0f}x slower than" if ratio >= 10 else f"{ratio:.1f}x slower than"


def setfit_ratio_lines(rows: Rows) -> list[str]:
    """SetFit's adaptation time over each other method's, on the cells where SetFit ran."""
    ok, out = [ResultRow.of(r) for r in rows], []
    for s in [r for r in time_reference(ok) if r.adapt_seconds]:
        others = [  # the same cell on the same base (rows of another base are named method@base)
            r
            for r in ok
            if (r.dataset, r.shots) == (s.dataset, s.shots) and r.method != s.method and _base(r) == _base(s)
        ]
        parts, seconds = [], s.adapt_seconds or 0.0
        for r in sorted(others, key=lambda r: method_rank(r.method)):
            if r.adapt_seconds:
                ratio = _times(seconds / r.adapt_seconds)
                parts.append(f"{ratio} `{r.method}` ({pct(s.accuracy)} vs {pct(r.accuracy)})")
        recipe = s.get("recipe", "default")
        extra = ""
        if s.projected_default_seconds and recipe != "default":
            extra = (
                f" SetFit's default recipe would take {s.default_recipe_steps} steps, about "
                f"{secs(s.projected_default_seconds)} at the measured {s.seconds_per_step or 0:.2f} s/step."
            )
        out.append(
            f"SetFit on {dataset_name(s.dataset)} {s.shots}-shot ({recipe}, {s.train_steps} steps) "
            f"trained in {secs(s.adapt_seconds)}: " + "; ".join(parts) + "." + extra
        )
    return out


def fullway_details(rows: Rows) -> list[str]:
    ok = sorted(ok_rows(rows, "fullway"), key=lambda r: (r.shots, r.dataset, method_rank(r.method)))
    body = [
        [
            f"{dataset_name(r.dataset)} {r.shots}-shot",
            f"`{r.method}`",
            str(r.steps or 0),
            str(r.adapter or "—"),
            pct(r.accuracy),
            pct(r.macro_f1),
            fixed(r.mcc),
            pct(r.fallback_accuracy),
            secs(r.adapt_seconds),
        ]
        for r in ok
    ]
    head = ["cell", "method", "steps", "adapter", "accuracy", "macro-F1", "MCC", "with OOS fallback", "adapt"]
    note = (
        "`with OOS fallback`: accuracy when the support-calibrated out-of-scope threshold is on (the product's "
        "default), so a rejected in-scope query counts as wrong."
    )
    return [note, "", *markdown_table(head, body)]


def episodic_table(rows: Rows) -> list[str]:
    ok = ok_rows(rows, "episodic")
    if not ok:
        return []
    settings = sorted({(r.dataset, str(r.ways), r.shots) for r in ok}, key=lambda s: (s[0], s[1], s[2] or 0))
    cell = {(r.dataset, str(r.ways), r.shots, r.method): r for r in ok}
    body = []
    for m in method_order(r.method for r in ok):
        line = [f"`{m}`"]
        for s in settings:
            r = cell.get((*s, m))
            line.append("—" if r is None else f"{pct(r.accuracy)} ± {pct(r.ci95)} ({r.episodes})")
        body.append(line)
    head = [f"{dataset_name(d)} {w}-way {k}-shot" for d, w, k in settings]
    paired = []
    for s in settings:
        short = [r for r in ok if (r.dataset, str(r.ways), r.shots) == s and r.note]
        for r in short:
            n = r.episodes
            same = []
            for other in method_order(x.method for x in ok if (x.dataset, str(x.ways), x.shots) == s):
                o = cell[(*s, other)]
                accs = o.episode_accuracy or []
                if o.episodes == n:  # ran on exactly these episodes
                    same.append(f"`{other}` {pct(o.accuracy)} ± {pct(o.ci95)}")
                elif n is not None and len(accs) >= n:
                    mean, ci = mean_ci95(accs[:n])
                    same.append(f"`{other}` {pct(mean)} ± {pct(ci)}")
            if len(same) > 1:
                paired.append(
                    f"- {dataset_name(s[0])} {s[1]}-way {s[2]}-shot, the same first {n} episodes: " + ", ".join(same)
                )
    domains = {r.dataset: r.domains for r in ok}
    held = "; ".join(f"{dataset_name(d)}: {', '.join(v or [])}" for d, v in domains.items())
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


def oos_table(rows: Rows) -> list[str]:
    ok = [r for r in ok_rows(rows, "oos") if r.oos_share is None]  # the share rows: oos_share_table
    if not ok:
        return []
    body = []
    for r in sorted(ok, key=lambda r: (r.dataset, method_rank(r.method), r.threshold_source or "")):
        body.append(
            [dataset_name(r.dataset), f"`{r.method}`", str(r.threshold_source)]
            + [pct(x) for x in (r.oos_recall, r.oos_precision, r.oos_f1, r.auroc, r.in_scope_accuracy)]
            + [fixed(r.mcc)]
        )

    head = ["dataset", "method", "threshold", "OOS recall", "OOS precision", "OOS F1", "AUROC", "in-scope acc", "MCC"]
    return [
        "10 examples per intent; the OOS threshold comes from the support set alone (`support`, the product's "
        "default) or from `valid` in-scope + OOS rows, never from `test`: the cut with the best in-scope kept + OOS "
        "caught (`valid`, Youden's J), with the best OOS F1 (`valid-f1`, what `fewintent calibrate` does on a file "
        "with OOS rows) or keeping 95% of valid's in-scope rows (`valid-recall`, `calibrate --objective recall`). "
        "`-oos-<score>` rows use another out-of-scope score (`adapt --oos-score`). AUROC does not depend on the "
        "threshold.",
        "",
        *markdown_table(head, body),
    ]


def _f1_mcc(row: ResultRow | None, mcc: ResultRow | None = None) -> str:
    """OOS F1 / MCC in points (the MCC from ``mcc``'s row when given: the oracle's two cuts)."""
    mcc = mcc or row
    if row is None or mcc is None or row.oos_f1 is None or mcc.mcc is None:
        return "—"
    return f"{100 * row.oos_f1:.1f} / {100 * mcc.mcc:.1f}"


def oos_share_table(rows: Rows, methods: tuple[str, ...] = ()) -> list[str]:
    """The ``oos`` protocol's share rows (of ``methods`` only, when given: names without ``@base``): OOS F1 / MCC per
    corpus, method and out-of-scope share of the test set, support-only vs ``calibrate --logs`` vs the oracle."""
    ok = [r for r in ok_rows(rows, "oos") if r.oos_share is not None]
    ok = [r for r in ok if not methods or r.method.partition("@")[0] in methods]
    if not ok:
        return []
    cell = {(r.dataset, r.method, r.oos_share, r.threshold_source): r for r in ok}
    cells = sorted(
        {(r.dataset, r.method, r.oos_share or 0.0) for r in ok}, key=lambda c: (c[0], method_rank(c[1]), c[2])
    )
    body = []
    for dataset, method, share in cells:
        got = {src: cell.get((dataset, method, share, src)) for src in SHARE_SOURCES}
        logs = got["logs"]
        estimated = logs.get("estimated_share") if logs is not None else None
        body.append(
            [
                dataset_name(dataset),
                f"`{method}`",
                f"{100 * share:.0f}%",
                "—" if estimated is None else f"{100 * estimated:.1f}%",
            ]
            + [_f1_mcc(got[src]) for src in ("support", "logs", "logs-f1")]
            + [_f1_mcc(got["oracle-f1"], got["oracle"])]
        )
    head = [
        "OOS F1 / MCC",
        "method",
        "OOS share",
        "estimated",
        "support-only",
        "`--logs`",
        "`--logs --objective f1`",
        "oracle (ceiling)",
    ]
    return [
        "The test set subsampled to 10%, 30% and 50% out of scope (its OOS part, or its in-scope part where the OOS "
        "rows are too few; seeded with the run's seed, the same rows for every method and base), OOS F1 (%) / MCC "
        "(x100, intents + OOS as `evaluate` counts it). `support-only`: the threshold `adapt` sets; `--logs`: "
        "`fewintent calibrate --logs` on unlabelled messages made from `valid` + its OOS split at the same share "
        "(labels dropped; never a test text), its estimated share beside it; `oracle`: the best cut on that test "
        "subsample itself, for OOS F1 and for MCC separately: **a ceiling, not a method** (rows `oracle-f1` and "
        "`oracle`, `ceiling: true`). Methods that are not the product's classifier have no `--logs` rows.",
        "",
        *markdown_table(head, body),
    ]


def _speed_provenance(ok: list[ResultRow]) -> list[str]:
    """Which machine each device's rows come from, and the rows' own notes (e.g. what changed since)."""
    lines = []
    for device in sorted({r.device or "" for r in ok}):
        run = next(r.run or {} for r in ok if r.device == device)
        versions = run.get("versions") or {}
        machine = run.get("gpu") if device.startswith("cuda") else f"{run.get('cpu')}, {run.get('cpu_count')} cores"
        lines.append(f"- `{device}`: {machine}; torch {versions.get('torch')}, fewintent {versions.get('fewintent')}.")
    return lines + [f"- {note}" for note in sorted({r.note for r in ok if r.note})]


def _base(row: ResultRow) -> str:
    """The ``@base`` suffix of a table row's method (empty for the default base)."""
    return row.method.partition("@")[2]


def speed_table(rows: Rows, serve_load: list[str] | None = None) -> list[str]:
    ok = ok_rows(rows, "speed")
    if not ok and not serve_load:
        return []
    lines: list[str] = []
    if ok:
        # the time reference (SetFit) on the same device and base (rows of another base are named method@base)
        reference = {(r.device, _base(r)): r for r in time_reference(ok)}
        body = []
        for r in sorted(ok, key=lambda r: (r.device or "", method_rank(r.method))):
            ref, floor = reference.get((r.device, _base(r))), r.method.partition("@")[0] == RAW
            sf = None if ref is None or floor or time_reference([r]) else ref.adapt_seconds
            ratio = f"{sf / r.adapt_seconds:.0f}x" if sf and r.adapt_seconds else "—"
            peak = r.peak_rss_mb or r.peak_gpu_mb
            mem = "—" if peak is None else f"{peak:.0f} (+{r.memory_delta_mb or 0:.0f})"
            body.append(
                [
                    str(r.device),
                    f"`{r.method}`",
                    secs(r.adapt_seconds) if not floor else "—",
                    ratio,
                    fixed(r.latency_p50_ms, 2),
                    fixed(r.latency_p99_ms, 2),
                    fixed(r.latency_p50_ms if r.floor_p50_ms is None else r.floor_p50_ms, 2),
                    fixed(r.latency_ratio, 2) if not floor else "1.00",
                    fixed(r.throughput_qps, 0),
                    fixed(r.throughput_ratio, 2) if not floor else "1.00",
                    mem,
                ]
            )
        first = ok[0]
        lines += [
            f"{dataset_name(first.dataset)} `train_{first.shots}` "
            f"({first.ways} intents, {first.n_support} "
            f"examples); latency over {first.n_latency} single queries, throughput over {first.n_batch} "
            f"test texts; torch threads: {first.torch_threads}. Peak MB is the process's resident peak while "
            "the method ran (+ its growth during it). Ratios are against the raw encoder forward pass "
            "on the same texts, timed in alternation with the method (`floor p50 ms`; the `raw-encoder` row is its "
            "own measurement) so machine load cancels out (1.00 = no overhead); `SetFit / this` is SetFit's "
            "adaptation time over this method's.",
            "",
            *markdown_table(SPEED_HEAD.split("|"), body),
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


def multilabel_table(rows: Rows, *, details: bool = True) -> list[str]:
    """NLU++ (``multilabel`` protocol): micro-F1 ± 95% CI per cell and its mean over the cells, then (``details``)
    macro-F1, exact match and adapt seconds."""
    ok = ok_rows(rows, "multilabel")
    if not ok:
        return []
    cells = sorted({r.dataset for r in ok}, key=lambda d: (d.split(":")[1], -int(d.split(":")[2].split("-")[0])))
    cell = {(r.dataset, r.method): r for r in ok}
    heads = [" ".join(d.split(":")[1:]) for d in cells]
    micro, other, times = [], [], []
    for m in method_order(r.method for r in ok):
        got = [cell.get((d, m)) for d in cells]
        line = [f"`{m}`"]
        for r in got:
            short = "" if r is None or not r.note else f" ({r.get('splits')} splits)"
            line.append("—" if r is None else f"{pct(r.get('micro_f1'))} ± {pct(r.ci95)}{short}")
        full = [r.get("micro_f1") for r in got if r is not None and not r.note]
        line.append(pct(sum(full) / len(full)) if len(full) == len(cells) else "—")
        micro.append(line)
        other.append(
            [f"`{m}`", *["—" if r is None else f"{pct(r.macro_f1)} / {pct(r.get('exact_match'))}" for r in got]]
        )
        times.append([f"`{m}`", *[secs(None if r is None else r.adapt_seconds) for r in got]])
    details_lines = [
        "",
        "Macro-F1 over intents / exact match (the message's whole set of intents right), %, mean over splits:",
        "",
        *markdown_table(["method", *heads], other),
        "",
        "Adaptation time per split (encoding the training fold(s) + fitting the head; training for SetFit):",
        "",
        *markdown_table(["method", *heads], times),
    ]
    return [
        "NLU++ (banking 48 intents, hotels 40; a message carries 0-5 of them), the paper's low-data settings on every "
        "split: **20-fold** adapts on one fold and scores the other 19 (20 splits), **10-fold** adapts on two "
        "consecutive folds and scores the other 18 (10 splits). Micro-F1 over (message, intent) pairs (%), mean ± 95% "
        "CI over the splits; `mean` is the mean of the four cells (rows that ran on every split):",
        "",
        *markdown_table(["method", *heads, "mean"], micro),
    ] + (details_lines if details else [])
