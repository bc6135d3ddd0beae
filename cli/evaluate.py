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
    head_for,
    load_classifier,
    plain,
    print_warnings,
    progress_bar,
    read_labelled,
    set_threads,
)
from fewintent.cli.discover import check_output, write_jsonl
from fewintent.data import read_intent_file
from fewintent.errors import FewIntentError
from fewintent.heads.registry import HEADS
from fewintent.model import IntentClassifier
from fewintent.model import evaluate as run_evaluation
from fewintent.model.crossval import cross_validate
from fewintent.model.evaluation import MultiLabelResult


def _cross_validate(
    train_file: Path, cv: str, base: str | None, adapter: str, head: str | None, device: str, as_json: bool
) -> None:
    data = read_intent_file(train_file)
    print_warnings(data.warnings)
    folds: int | str = "loo" if cv.lower() == "loo" else (int(cv) if cv.isdigit() else cv)
    clf = IntentClassifier.unfitted(base=base, adapter=adapter, head=head_for(data, head), device=device)
    with progress_bar("encoding examples", len(data)) as advance:
        result = cross_validate(clf, data, folds, progress=advance)
    print_warnings(result.warnings)  # stderr: --json output stays one object (which lists them too)
    if as_json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    scheme = (
        f"leave-one-out cross-validation ({result.folds} rounds: round i holds out the i-th example of every intent, "
        "so each example is predicted once by a model that never saw it)"
        if folds == "loo"
        else f"{result.folds}-fold cross-validation"
    )
    table = Table("metric", "value", title=plain(f"{train_file}: {scheme}, {result.n} examples"))
    multi = ("micro_f1", "macro_f1") if result.micro_f1 is not None else ()
    for key in (*multi, "top1_accuracy", "accuracy", "in_scope_kept", "threshold"):
        table.add_row("exact_match" if multi and key == "accuracy" else key, _fmt(getattr(result, key)))
    console.print(table)
    _print_per_intent(result.per_intent, "examples")
    _print_confused(result.confused_pairs)


WEAKEST = 15
"""Intents the per-intent table shows, weakest F1 first (--json lists them all)."""


def _print_per_intent(per_intent: dict[str, dict[str, float]], support: str = "support") -> None:
    weakest = sorted(per_intent.items(), key=lambda kv: (kv[1]["f1"], kv[0]))[:WEAKEST]
    more = len(per_intent) - len(weakest)
    title = f"weakest intents ({more} more in --json)" if more > 0 else "per intent"
    per = Table("intent", "precision", "recall", "f1", support, title=title)
    for name, m in weakest:
        per.add_row(plain(name), _fmt(m["precision"]), _fmt(m["recall"]), _fmt(m["f1"]), str(int(m["support"])))
    console.print(per)


def _print_confused(pairs: list[dict]) -> None:
    if not pairs:
        return
    confused = Table("gold", "predicted", "count", "examples", title="most confused intents")
    for pair in pairs:
        examples = pair.get("examples", [])
        confused.add_row(plain(pair["gold"]), plain(pair["predicted"]), str(pair["count"]), plain("\n".join(examples)))
    console.print(confused)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


METRICS = (
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
)
MULTI_LABEL_METRICS = (
    "n",
    "micro_f1",
    "macro_f1",
    "exact_match",
    "count_accuracy",
    "micro_precision",
    "micro_recall",
    "oos_recall",
    "oos_precision",
    "oos_f1",
)


@guarded
def evaluate(
    model_dir: Path = typer.Argument(
        ...,
        metavar="MODEL_DIR|TRAIN_FILE",
        help="Model directory written by `fewintent adapt`; with --cv, the training file to cross-validate instead.",
    ),
    test_files: list[Path] = typer.Argument(
        None, help="Labelled file(s); several are concatenated (e.g. test + oos_test). Not with --cv."
    ),
    cv: str = typer.Option(
        None,
        "--cv",
        help="Cross-validate the adapt settings on the training file itself: K folds, or 'loo' (leave-one-out). "
        "Encodes once and refits the head per fold, so it takes seconds.",
    ),
    base: str = typer.Option(None, "--base", help="With --cv: the encoder to evaluate (as for adapt)."),
    adapter: str = typer.Option("auto", "--adapter", help="With --cv: the adapter to evaluate (as for adapt)."),
    head: str | None = typer.Option(
        None,
        "--head",
        metavar="<" + "|".join(HEADS) + ">",
        help="With --cv: the decision head (default: linear, or onevsrest on multi-label data).",
        show_default=False,
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with every metric."),
    show_sweep: bool = typer.Option(
        False, "--sweep", help="Also show what other OOS thresholds would do (needs 'oos' rows in the files)."
    ),
    errors: Path = typer.Option(
        None,
        "--errors",
        help="Write every misclassified row to this JSONL file (text, intent, predicted, confidence), as "
        "`rasa test nlu` writes its errors file. Replaced if it exists.",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    threads: int = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
) -> None:
    """Score a model on labelled data. Rows with the model's OOS label must come back out of scope.

    With --cv K, the first argument is a training file (TRAIN_FILE) instead: each example is predicted by a
    classifier adapted on the other folds (no test set needed).
    """
    set_threads(threads)
    if cv is not None:
        if test_files:
            raise FewIntentError("--cv cross-validates the training file alone: give no test files with it")
        if errors is not None:
            raise FewIntentError("--errors writes a model's mistakes on test files; with --cv see 'most confused'")
        _cross_validate(model_dir, cv, base, adapter, head, device, as_json)
        return
    if not test_files:
        raise FewIntentError("give one or more labelled test files (or --cv K to cross-validate a training file)")
    if errors is not None:
        check_output(errors, list(test_files), force=True, flag="--errors", what="test file")
    clf = load_classifier(model_dir, device)
    if errors is not None and clf.config.multi_label:
        raise FewIntentError("--errors is for single-label models; a multi-label model's --json lists each intent")
    data = read_labelled(test_files, clf.oos_label)
    with progress_bar("classifying", len(data)) as advance:
        result = run_evaluation(clf, data, progress=advance, sweep_points=11 if show_sweep else 0)
    print_warnings(data.warnings)  # stderr: --json output on stdout stays one clean object
    if result.unknown_intents:
        known = {label.casefold(): label for label in clf.labels}
        unknown = ", ".join(
            name
            + (
                f" (the model has '{known[name.casefold()]}': only the case differs)"
                if name.casefold() in known
                else ""
            )
            for name in result.unknown_intents[:10]
        )
        print_warnings([f"{len(result.unknown_intents)} test intent(s) unknown to the model: {unknown}"])
    if errors is not None and not isinstance(result, MultiLabelResult):
        write_jsonl(errors, result.errors)
    if as_json:
        print(json.dumps(result.to_dict()))
        return
    table = Table("metric", "value", title=plain(f"{model_dir} on {', '.join(map(str, test_files))}"))
    for key in MULTI_LABEL_METRICS if isinstance(result, MultiLabelResult) else METRICS:
        value = getattr(result, key)
        table.add_row(key, str(value) if key == "n" else _fmt(value))
    console.print(table)
    if isinstance(result, MultiLabelResult):
        if show_sweep:
            print_warnings(
                [
                    "--sweep is for single-label models (one OOS threshold); a multi-label model's intents pass one "
                    "shared probability cut (`fewintent calibrate MODEL FILE` moves it for micro-F1)"
                ]
            )
        per = Table("intent", "precision", "recall", "F1", "support", title="per intent")
        for name, m in sorted(result.per_intent.items(), key=lambda kv: kv[1]["f1"]):
            per.add_row(plain(name), *(_fmt(m[k]) for k in ("precision", "recall", "f1")), str(int(m["support"])))
        console.print(per)
        return
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
    _print_per_intent(result.per_intent)
    _print_confused(result.confused_pairs)
    if errors is not None:
        console.print(plain(f"wrote {len(result.errors)} misclassified rows to {errors}"))
