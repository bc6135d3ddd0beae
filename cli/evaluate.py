"""``fewintent evaluate``: score a saved model on a labelled file."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from fewintent.cli._common import (
    THREADS_HELP,
    console,
    guarded,
    load_classifier,
    print_warnings,
    progress_bar,
    read_labelled,
    set_threads,
)
from fewintent.model import evaluate as run_evaluation


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


@guarded
def evaluate(
    model_dir: Path = typer.Argument(..., help="Model directory written by `fewintent adapt`."),
    test_files: list[Path] = typer.Argument(
        ..., help="Labelled file(s); several are concatenated (e.g. test + oos_test)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with every metric."),
    show_sweep: bool = typer.Option(
        False, "--sweep", help="Also show what other OOS thresholds would do (needs 'oos' rows in the files)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    threads: int = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
) -> None:
    """Score a model on labelled data. Rows with the model's OOS label must come back out of scope."""
    set_threads(threads)
    clf = load_classifier(model_dir, device)
    data = read_labelled(test_files, clf.oos_label)
    with progress_bar("classifying", len(data)) as advance:
        result = run_evaluation(clf, data, progress=advance, sweep_points=11 if show_sweep else 0)
    print_warnings(data.warnings)  # stderr: --json output on stdout stays one clean object
    if result.unknown_intents:
        unknown = ", ".join(result.unknown_intents[:10])
        print_warnings([f"{len(result.unknown_intents)} test intent(s) unknown to the model: {unknown}"])
    if as_json:
        print(json.dumps(result.to_dict()))
        return
    table = Table("metric", "value", title=f"{model_dir} on {', '.join(map(str, test_files))}")
    for key in (
        "n",
        "accuracy",
        "in_scope_accuracy",
        "top1_accuracy",
        "oos_recall",
        "oos_precision",
        "oos_f1",
        "oos_auroc",
        "oos_aupr",
        "macro_f1",
        "mcc",
    ):
        value = getattr(result, key)
        table.add_row(key, str(value) if key == "n" else _fmt(value))
    console.print(table)
    if result.sweep:
        sweep = Table(
            "threshold", "in-scope kept %", "OOS recall %", "OOS precision %", "OOS F1 %", title="OOS threshold sweep"
        )
        for row in result.sweep:
            mark = " (current)" if row.get("current") else ""
            sweep.add_row(
                f"{row['threshold']:.4f}{mark}",
                *(f"{100 * row[k]:.1f}" for k in ("in_scope_recall", "oos_recall", "oos_precision", "oos_f1")),
            )
        console.print(sweep)
    if result.confused_pairs:
        confused = Table("gold", "predicted", "count", title="most confused intents")
        for pair in result.confused_pairs:
            confused.add_row(pair["gold"], pair["predicted"], str(pair["count"]))
        console.print(confused)
