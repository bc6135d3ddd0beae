"""``report.md``, the PNG plots and the README headline snippet, all regenerated from ``results.json``.

Nothing here measures anything: ``fewintent benchmark --report-only`` rebuilds every table and plot from the
rows, so the numbers in the README are never typed by hand.
"""

from __future__ import annotations

import os
from pathlib import Path

from fewintent.bench.lean import onnx_table
from fewintent.bench.methods import PRODUCT_METHOD
from fewintent.bench.plots import PLOTS, write_plots
from fewintent.bench.readme import update_readme
from fewintent.bench.results import RESULTS, ResultRow, load_rows
from fewintent.bench.rows import ok_rows
from fewintent.bench.tables import (
    episodic_table,
    fullway_details,
    fullway_tables,
    multilabel_table,
    oos_share_table,
    oos_table,
    serve_load_lines,
    speed_table,
)
from fewintent.bench.traffic import discovery_table
from fewintent.encoder.registry import BASES
from fewintent.errors import extra_install

LEAVE_OUT_NAMES = ", ".join(
    f"`{spec.leave_out_adapter.format(dataset='<dataset>')}`" for spec in BASES.values() if spec.leave_out_adapter
)
"""Each registered base's leave-one-dataset-out adapter name, as the report's header lists them."""

PROTOCOL_NOTES = [
    "- **fullway**: adapt on the standard `train_5` / `train_10` files with every intent at once, score closed-set "
    "top-1 on `test` (the number the papers report). Each `fewintent-*` row uses its base's "
    "`<base>-meta-no-<dataset>` (or the adapter given with `--adapter`), refused when its metadata says it saw "
    "the dataset; where a base ships none for a dataset, its product there is the `frozen-*` row. The linear-head "
    "rows (`fewintent-linear`, `frozen-linear`) are the product default, each intent's name counted as one more "
    "example; the prototype-head rows use the examples only, as when they were first measured; `frozen-logreg` "
    "is scikit-learn on the examples only (rows carry `intent_names`).",
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

OOS_SHARE_NOTES = [
    "- **oos at stated shares** (rows with `oos_share`): on CLINC150 and BANKING77-OOS in-domain each method's "
    "`test` scores (the same as its other oos rows) are cut at out-of-scope shares of 10%, 30% and 50%: the "
    "support-only threshold, `calibrate --logs` on `valid` + its OOS split subsampled to that share (`logs`: MCC "
    "objective, the product's default; `logs-f1`: F1; `estimated_share` is the share it read from them) and the "
    "oracle, the best cut on the test subsample itself (`oracle`: MCC, `oracle-f1`: OOS F1): a ceiling no method "
    "reaches without test labels. Not in `--quick` runs (their slices are too small to calibrate from).",
]

MULTILABEL_NOTES = [
    "- **multilabel**: NLU++ `banking` and `hotels` (`nlupp/<domain>.jsonl`, the corpus's own 20 folds), every split "
    "of both settings. `fewintent-onevsrest` is the product on multi-label data (`fewintent adapt` picks the "
    "one-vs-rest head itself): the base's shipped adapter (`minilm-meta`, `mpnet-meta`: meta-trained on BANKING77, "
    "CLINC150, HWU64 and SNIPS, never NLU++), intent names counted as examples, each intent's threshold and C "
    "chosen by cross-validation on the training fold(s); `frozen-onevsrest` the same with `--adapter none`. "
    '`frozen-ovr-logreg` is scikit-learn\'s `OneVsRestClassifier(LogisticRegression(class_weight="balanced"))` '
    "on the frozen embeddings, an intent passing at probability >= 0.5, its C (1, 10, 100) chosen by 5-fold "
    "cross-validation (micro-F1) on the training fold(s). A message with no intent trains as out of scope and "
    "counts as right when nothing is named. No threshold, C or other choice reads the test folds. "
    '`setfit-onevsrest` is SetFit with `multi_target_strategy="one-vs-rest"` on the same base, scaled down for a '
    "CPU (the row's `recipe`, e.g. `num_iterations=3`, and its note: the first splits only, `--setfit-episodes`), "
    "its head the same balanced logistic regression as `frozen-ovr-logreg` (SetFit's default unweighted head "
    "named almost no intent at p >= 0.5 from one or two folds: 0.3-17% micro-F1 on MiniLM).",
]


def skipped_lines(rows: list[ResultRow]) -> list[str]:
    seen: dict[tuple[str, str], set[str]] = {}
    for r in rows:
        if r.skipped:
            seen.setdefault((r.method, r.note or ""), set()).add(f"{r.protocol}:{r.dataset}")
    return [f"- `{m}` ({', '.join(sorted(w))}): {note}" for (m, note), w in sorted(seen.items())]


def run_lines(rows: list[ResultRow]) -> list[str]:
    runs = {r.run["id"]: r.run for r in rows if r.run}
    out = []
    for run in sorted(runs.values(), key=lambda x: x["date"]):
        v = run.get("versions", {})
        out.append(
            f"- `{run['id']}` {run['date']}: `{run['command']}` — {run.get('cpu')} ({run.get('cpu_count')} cores, "
            f"{run.get('torch_threads')} torch threads, load {run.get('load_average_at_start')}), GPU: "
            f"{run.get('gpu') or 'none'}; seed {run.get('seed')}; " + ", ".join(f"{k} {val}" for k, val in v.items())
        )
    return out


def headline(rows: list[ResultRow], image: str) -> str:
    """The README block: full-way table with the published numbers, SetFit's time ratio, the plot; the product's
    out-of-scope share rows and the multi-label table where there are rows."""
    lines = [
        "<!-- generated by `fewintent benchmark --report-only` from data/benchmarks/results.json; do not edit -->",
        *fullway_tables(rows),
        "",
        f"![accuracy vs examples per intent]({image})",
        "",
    ]
    shares = oos_share_table(rows, methods=(PRODUCT_METHOD,))  # every method's are in report.md
    if shares:
        lines += ["Out of scope at 10-50% of the traffic, the product's threshold from its logs:", "", *shares, ""]
    several = multilabel_table(rows, details=False)
    if several:
        lines += ["Several intents per message:", "", *several, ""]
    return "\n".join(lines)


def write_report(out: str | Path, *, readme: str | Path | None = None) -> Path:
    """Write ``report.md``, the plots and ``headline.md`` from ``out/results.json``; returns the snippet path.

    With ``readme``, the block between ``<!-- benchmark:start -->`` and ``<!-- benchmark:end -->`` in that file
    is replaced by the snippet (with image paths relative to the README).
    """
    out = Path(out)
    rows = load_rows(out / RESULTS)
    made = write_plots([r.to_dict() for r in rows], out)
    no_plots: list[str] = []
    if made is None:  # tables still work; plots need the [bench] extra
        made = {}
        no_plots = [f"*Plots skipped: matplotlib is not installed ({extra_install('bench')}).*", ""]
    sections: list[tuple[str, list[str], str | None]] = [
        ("Full-way K-shot", fullway_tables(rows) if ok_rows(rows, "fullway") else [], "shots"),
        ("Adaptation time vs accuracy", [], "time"),
        ("Full-way details", fullway_details(rows) if ok_rows(rows, "fullway") else [], None),
        ("Episodic, held-out domains", episodic_table(rows), "episodic"),
        ("Out-of-scope detection", oos_table(rows), "pr"),
        ("Out-of-scope share: thresholds from unlabelled logs", oos_share_table(rows), None),
        ("Speed", speed_table(rows, serve_load_lines(out)), None),
        ("Lean CPU inference: ONNX and int8", onnx_table(rows), None),
        ("Improving a bot from its traffic", discovery_table(rows), None),
        ("Several intents per message: NLU++", multilabel_table(rows), None),
    ]
    md = [
        "# fewintent benchmark",
        "",
        "Generated by `fewintent benchmark` from `results.json` (regenerate with `fewintent benchmark "
        "--report-only`). Each fewintent row uses an adapter meta-trained without the dataset it is scored on "
        f"({LEAVE_OUT_NAMES}; the frozen encoder where none ships); thresholds and hyper-parameters never look at "
        "`test`.",
        "",
        *no_plots,
    ]
    for title, body, plot in sections:
        image = PLOTS[plot] if plot is not None and made.get(plot) else None
        if not body and image is None:
            continue
        md += [f"## {title}", "", *body, ""]
        if image is not None:
            md += [f"![{title}]({image})", ""]
    notes = PROTOCOL_NOTES + (OOS_SHARE_NOTES if oos_share_table(rows) else [])
    notes += MULTILABEL_NOTES if ok_rows(rows, "multilabel") else []
    md += ["## How it was measured", "", *notes, ""]
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
