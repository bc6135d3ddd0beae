"""``fewintent calibrate``: re-tune a saved model's out-of-scope threshold on held-out labelled data."""

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
    plain,
    print_warnings,
    read_labelled,
    set_threads,
)
from fewintent.model.calibration import OBJECTIVES, CalibrationReport
from fewintent.model.persistence import model_dir_lock


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def print_report(report: CalibrationReport, source: str) -> None:
    """The threshold before and after, and what each does on the calibration file."""
    table = Table(
        "", "threshold", "in-scope kept %", "OOS recall %", "OOS precision %", "OOS F1 %", title=plain(source)
    )
    for name, row in (("before", report.before), ("after", report.after)):
        table.add_row(
            name,
            f"{row['threshold']:.4f}",
            _pct(row["in_scope_recall"]),
            _pct(row["oos_recall"]),
            _pct(row["oos_precision"]),
            _pct(row["oos_f1"]),
        )
    console.print(table)


@guarded
def calibrate(
    model_dir: Path = typer.Argument(..., help="Model directory written by `fewintent adapt` (updated atomically)."),
    files: list[Path] = typer.Argument(
        ..., help="Held-out labelled file(s), concatenated (never your test set); 'oos' rows optional."
    ),
    objective: str = typer.Option(
        "auto",
        "--objective",
        help="f1: best OOS F1 on the file (needs oos rows); recall: keep --in-scope-recall of its in-scope rows; "
        "auto: f1 when the file has oos rows, else recall.",
    ),
    in_scope_recall: float = typer.Option(
        None, "--in-scope-recall", min=0.5, max=1.0, help="Target for --objective recall (default: the model's)."
    ),
    oos_share: float = typer.Option(
        None,
        "--oos-share",
        min=0.001,
        max=0.999,
        help="For f1: the share of out-of-scope messages you expect in real traffic (default: the file's own mix). "
        "F1's best threshold moves with it.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    threads: int = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
) -> None:
    """Set the out-of-scope threshold from held-out data, without re-adapting; the model is saved atomically."""
    if objective not in OBJECTIVES:
        from fewintent.errors import FewIntentError

        raise FewIntentError(f"unknown --objective '{objective}': use {', '.join(OBJECTIVES)}")
    set_threads(threads)
    # one transaction: a server's edit saved between this load and this save would otherwise be lost
    with model_dir_lock(model_dir.expanduser().absolute(), exclusive=True):
        clf = load_classifier(model_dir, device)
        data = read_labelled(files, clf.oos_label)
        if not as_json:
            print_warnings(data.warnings)
        report = clf.calibrate(data, objective=objective, in_scope_recall=in_scope_recall, oos_share=oos_share)
        clf.save(model_dir)
    if as_json:
        print(json.dumps(report.to_dict()))
    else:
        print_report(report, f"{model_dir} calibrated on {data.source} ({report.objective})")
        console.print(
            f"threshold set from {report.n_in_scope} in-scope and {report.n_oos} out-of-scope rows", highlight=False
        )
