"""``fewintent calibrate``: re-tune a saved model's out-of-scope threshold on held-out labelled data, or on unlabelled
logs of its real traffic."""

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
from fewintent.data.io import INTENT_COLUMNS, read_messages
from fewintent.errors import FewIntentError
from fewintent.model.calibration import OBJECTIVES, CalibrationReport
from fewintent.model.persistence import model_dir_lock
from fewintent.model.traffic import LOG_OBJECTIVES, LogCalibrationReport, check_logs


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def print_report(report: CalibrationReport, source: str) -> None:
    """The threshold before and after, and what each does on the calibration file (from logs: what each is
    expected to do under the estimated share, with the MCC)."""
    if report.objective == "micro-f1":  # a multi-label model: its intents' decisions, not an OOS threshold
        table = Table(
            "", "threshold (margin)", "micro-F1 %", "exact match %", "none-of-them recall %", title=plain(source)
        )
        for name, row in (("before", report.before), ("after", report.after)):
            table.add_row(name, f"{row['threshold']:.2f}", _pct(row["micro_f1"]), _pct(row["exact_match"]),
                          _pct(row["oos_recall"]))  # fmt: skip
        console.print(table)
        return
    logs = isinstance(report, LogCalibrationReport)
    columns = ["", "threshold", "in-scope kept %", "OOS recall %", "OOS precision %", "OOS F1 %"]
    table = Table(*columns, *(["MCC %"] if logs else []), title=plain(source))
    for name, row in (("before", report.before), ("after", report.after)):
        table.add_row(
            name,
            f"{row['threshold']:.4f}",
            _pct(row["in_scope_recall"]),
            _pct(row["oos_recall"]),
            _pct(row["oos_precision"]),
            _pct(row["oos_f1"]),
            *([_pct(row["mcc"])] if logs else []),
        )
    console.print(table)


def print_share(report: LogCalibrationReport, source: str) -> None:
    """The share the threshold was chosen for, and the threshold (the table's numbers are expectations)."""
    how = "estimated" if report.share_estimated else "stated"
    console.print(
        plain(
            f"{source}: {report.n_logs} messages, out-of-scope share {100 * report.oos_share:.1f}% ({how}); "
            f"threshold {report.threshold_before:.4f} -> {report.threshold:.4f} (best expected "
            f"{report.objective.upper()}; the table is what each threshold is expected to do at that share)"
        ),
        highlight=False,
        soft_wrap=True,
    )


def _labelled(logs: Path) -> bool:
    """Whether a --logs file's first message is a JSONL row with an intent label (a labelled file given as logs)."""
    if str(logs) == "-":
        return False
    try:
        with open(logs, encoding="utf-8-sig", errors="replace") as f:
            head = f.read(1 << 16)  # the first rows are enough, however long the file
        row = json.loads(next((line for line in head.splitlines() if line.strip()), ""))
    except (OSError, ValueError):
        return False
    return isinstance(row, dict) and any(key in row for key in INTENT_COLUMNS)


@guarded
def calibrate(
    model_dir: Path = typer.Argument(..., help="Model directory written by `fewintent adapt` (updated atomically)."),
    files: list[Path] = typer.Argument(
        None, help="Held-out labelled file(s), concatenated (never your test set); 'oos' rows optional."
    ),
    logs: Path = typer.Option(
        None,
        "--logs",
        help="Instead of labelled files: unlabelled messages of real traffic, one a line ('-': stdin). Estimates "
        "the share out of scope and picks the threshold with the best expected MCC (or --objective f1) for it.",
    ),
    objective: str = typer.Option(
        "auto",
        "--objective",
        metavar="<auto|f1|recall|mcc>",
        help="f1: best OOS F1 on the file (needs oos rows); recall: keep --in-scope-recall of its in-scope rows; "
        "auto: f1 when the file has oos rows, else recall. With --logs: mcc (auto) or f1, expected.",
    ),
    in_scope_recall: float = typer.Option(
        None, "--in-scope-recall", min=0.5, max=1.0, help="Target for --objective recall (default: the model's)."
    ),
    oos_share: float = typer.Option(
        None,
        "--oos-share",
        min=0.001,
        max=0.999,
        help="The share of out-of-scope messages in real traffic: with --logs, stated instead of estimated; "
        "with a labelled file, for f1 (default: the file's own mix). The best threshold moves with it.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    threads: int = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
) -> None:
    """Set the out-of-scope threshold from held-out data, or from unlabelled logs of real traffic (--logs), without
    re-adapting; the model is saved atomically."""
    if bool(files) == (logs is not None):
        raise FewIntentError("give held-out labelled file(s) or --logs MESSAGES_FILE (one of the two)")
    allowed = OBJECTIVES if logs is None else ("auto", *LOG_OBJECTIVES)
    if objective not in allowed:
        raise FewIntentError(
            f"unknown --objective '{objective}'{' with --logs' if logs else ''}: use {', '.join(allowed)}"
        )
    if logs is not None and in_scope_recall is not None:
        raise FewIntentError("--in-scope-recall is for --objective recall on a labelled file, not for --logs")
    set_threads(threads)
    messages = check_logs(read_messages(logs), str(logs)) if logs is not None else None  # before the model loads
    if logs is not None and _labelled(logs):
        print_warnings(
            [
                f"{logs} has intent labels, which --logs ignores: if it is held-out labelled data, "
                f"`fewintent calibrate {model_dir} {logs}` calibrates on the labels instead"
            ]
        )
    # one transaction: a server's edit saved between this load and this save would otherwise be lost
    with model_dir_lock(model_dir.expanduser().absolute(), exclusive=True):
        clf = load_classifier(model_dir, device)
        if messages is not None:
            report = clf.calibrate(logs=messages, objective=objective, oos_share=oos_share)
        else:
            data = read_labelled(files, clf.oos_label)
            if not as_json:
                print_warnings(data.warnings)
            report = clf.calibrate(data, objective=objective, in_scope_recall=in_scope_recall, oos_share=oos_share)
        clf.save(model_dir)
    if as_json:
        print(json.dumps(report.to_dict()))
    elif isinstance(report, LogCalibrationReport):
        print_report(report, f"{model_dir} calibrated on {logs} (expected under the mixture)")
        print_share(report, str(logs))
    else:
        print_report(report, f"{model_dir} calibrated on {data.source} ({report.objective})")
        console.print(
            f"threshold set from {report.n_in_scope} in-scope and {report.n_oos} out-of-scope rows", highlight=False
        )
