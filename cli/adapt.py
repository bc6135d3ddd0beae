"""``fewintent adapt``: build a classifier from example utterances and save it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import typer

from fewintent.cli._common import (
    THREADS_HELP,
    console,
    guarded,
    head_for,
    plain,
    print_warnings,
    progress_bar,
    set_threads,
    training_bar,
)
from fewintent.cli.calibrate import print_report, print_share
from fewintent.data import read_intent_file, read_intent_files
from fewintent.data.io import read_messages
from fewintent.errors import FewIntentError
from fewintent.heads.registry import HEADS
from fewintent.model import AdaptArguments, IntentClassifier
from fewintent.model.oos import DEFAULT_OOS_SCORE, OOS_SCORES
from fewintent.model.persistence import check_model_path
from fewintent.model.traffic import LogCalibrationReport, check_logs

LARGE_SUPPORT = 20_000
MANY_INTENTS = 2_000


@guarded
def adapt(
    train_files: list[Path] = typer.Argument(
        ...,
        metavar="TRAIN_FILE...",
        help="Examples per intent: .jsonl, .csv (text,intent) or Rasa nlu.yml; several files, or a folder of them "
        "(a Rasa project's data/nlu), are read as one.",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Model directory to write (replaced atomically)."),
    base: str = typer.Option(
        None,
        "--base",
        help="Encoder: a registered base (`fewintent bases`: minilm, the default, or mpnet), a Hugging Face id or a "
        "local model directory.",
    ),
    adapter: str = typer.Option(
        "auto",
        "--adapter",
        help="Meta-learned LoRA adapter: shipped name, directory, 'auto' (the base's shipped default, if any) or "
        "'none' (the frozen encoder).",
    ),
    head: str | None = typer.Option(
        None,
        "--head",
        metavar="<" + "|".join(HEADS) + ">",
        help="Decision head: 'linear' (logistic regression on the embeddings; the default, best on valid), "
        "'prototype' (cosine to each intent's mean example) or 'onevsrest' (several intents per message: the "
        "default on multi-label data).",
        show_default=False,
    ),
    head_c: float = typer.Option(
        None,
        "--head-c",
        min=1e-6,
        help="Inverse regularisation of the linear head (like scikit-learn's C). Default: the base's tuned value.",
    ),
    oos_score: str = typer.Option(
        DEFAULT_OOS_SCORE,
        "--oos-score",
        metavar="<" + "|".join(OOS_SCORES) + ">",
        help="What the out-of-scope threshold cuts: 'prototype' (best cosine to an intent's mean example; the "
        "default, best on valid), 'nearest' (best cosine to one example), 'mahalanobis' or 'energy' (log-sum-exp of "
        "the head's scores).",
    ),
    intent_names: bool = typer.Option(
        True,
        "--intent-names/--no-intent-names",
        help="Use each intent's name as one more example (card_arrival: 'card arrival'). Turn it off when your "
        "intent names are codes rather than words.",
    ),
    max_length: int = typer.Option(
        128, "--max-length", min=8, max=512, help="Tokens of a message the encoder reads; longer ones are cut."
    ),
    calibrate_file: Path = typer.Option(
        None,
        "--calibrate",
        help="Held-out labelled file that sets the out-of-scope threshold after adapting (as `fewintent calibrate`).",
    ),
    logs: Path = typer.Option(
        None,
        "--logs",
        help="Unlabelled messages of real traffic, one a line: the out-of-scope threshold is chosen for their "
        "estimated out-of-scope share after adapting (as `fewintent calibrate --logs`).",
    ),
    steps: int = typer.Option(
        0, "--steps", min=0, max=1000, help="Inner-loop LoRA steps on your examples (0 = prototypes only)."
    ),
    inner_lr: float = typer.Option(None, "--inner-lr", help="Learning rate for --steps (default: the adapter's)."),
    tune: bool = typer.Option(
        False,
        "--tune",
        help="Accurate mode: train LoRA layers and the head on your examples and intent names (minutes on a CPU). "
        "A fold of your examples is held out of training: it sets the out-of-scope threshold and, on MiniLM, "
        "picks the epoch to keep (mpnet keeps its last).",
    ),
    tune_time: float = typer.Option(
        None,
        "--tune-time",
        min=1,
        help="With --tune: stop training after this many seconds, keeping the state the stopping rule picks so far.",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    threads: int = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    seed: int = typer.Option(0, "--seed", help="Random seed (for --steps and --tune)."),
    oos_label: str = typer.Option("oos", "--oos-label", help="Intent name that marks out-of-scope rows."),
    in_scope_recall: float = typer.Option(
        None,
        "--in-scope-recall",
        min=0.5,
        max=1.0,
        help="Share of in-scope messages the OOS threshold aims to keep. Default: the value tuned on the base (0.925 "
        "for minilm).",
    ),
) -> None:
    """Adapt a classifier to the intents in TRAIN_FILE and save it to a model directory.

    Rows whose intent is the OOS label calibrate the out-of-scope threshold; without them it comes from
    your examples alone (leave-one-out).
    """
    set_threads(threads)
    if tune_time is not None and not tune:
        raise FewIntentError("--tune-time is the time budget of --tune; add --tune, or drop --tune-time")
    check_model_path(output)
    data = read_intent_files(train_files, oos_label=oos_label)
    print_warnings(data.warnings)
    if in_scope_recall is not None and data.oos_texts and calibrate_file is None:
        print_warnings(
            [
                f"--in-scope-recall {in_scope_recall} is only a floor here: the file's {len(data.oos_texts)} "
                f"'{oos_label}' rows set the threshold (the cut that best separates them from the examples, keeping "
                f"at least {in_scope_recall / 2:.3g} of in-scope messages); without them it is the target"
            ]
        )
    held_out = None
    if calibrate_file is not None:  # read (and validated) before minutes of work
        held_out = read_intent_file(calibrate_file, oos_label=oos_label, for_training=False)
        print_warnings(held_out.warnings)
    if logs is not None and held_out is not None:
        raise FewIntentError("--calibrate and --logs both set the out-of-scope threshold: choose one")
    messages = check_logs(read_messages(logs), str(logs)) if logs is not None else None  # before the work
    if len(data.labels) > MANY_INTENTS:
        print_warnings(
            [
                f"{len(data.labels)} intents: the linear head's fit grows with intents x examples and can take "
                "minutes at this size; --head prototype fits instantly"
            ]
        )
    if len(data) > LARGE_SUPPORT:
        print_warnings(
            [
                f"{len(data)} examples: fewintent is built for 5-10 per intent; encoding them all takes a while "
                f"(roughly {len(data) // 150} s on 2 CPU cores). A sample of 10-50 per intent adapts in seconds."
            ]
        )
    args = AdaptArguments(
        base=base,
        adapter=adapter,
        head=head_for(data, head),
        head_c=head_c,
        oos_score=oos_score,
        intent_names=intent_names,
        max_length=max_length,
        steps=steps,
        inner_lr=inner_lr,
        tune=tune,
        tune_time=tune_time,
        device=device,
        seed=seed,
        oos_label=oos_label,
        in_scope_recall=in_scope_recall,
    )
    start = time.perf_counter()
    if tune or steps:  # one bar at a time: the training one (encoding afterwards is short beside it)
        with training_bar("tuning" if tune else "inner-loop steps") as training:
            clf = IntentClassifier.adapt(data, args, training=training)
    else:
        with progress_bar("encoding examples", len(data)) as advance:
            clf = IntentClassifier.adapt(data, args, progress=advance)
    seconds = time.perf_counter() - start
    if held_out is not None:
        print_report(clf.calibrate(held_out), f"out-of-scope threshold calibrated on {calibrate_file}")
    if messages is not None:
        report = clf.calibrate(logs=messages)
        print_report(report, f"out-of-scope threshold calibrated on {logs} (expected under the mixture)")
        print_share(cast(LogCalibrationReport, report), str(logs))
    clf.save(output)  # under the directory's lock: a server on it reloads after, not during
    adapter_name = (clf.meta.get("adapter") or {}).get("source", "none")
    console.print(
        plain(
            f"adapted {len(clf.labels)} intents from {len(data.texts)} examples"
            f"{f' + {len(data.oos_texts)} out-of-scope' if data.oos_texts else ''} in {seconds:.2f}s "
            f"(adapter: {adapter_name}, head: {clf.config.head}, "
            f"{_training(clf.meta, steps, clf.config.multi_label)}, "
            + (
                "one threshold shared by the intents"
                if clf.config.multi_label
                else f"OOS threshold {clf.threshold:.3f}"
            )
            + f") -> {output}"
        ),
        highlight=False,
        soft_wrap=True,
    )


def _training(meta: dict[str, Any], steps: int, multi_label: bool = False) -> str:
    """What training at adapt time did, in a few words."""
    tune = meta.get("tune")
    if not tune:
        return f"steps: {steps}"
    held = tune["held_out_accuracy"][tune["kept_epoch"]]
    metric = "micro-F1" if multi_label else "accuracy"  # what tuning measured on its held-out examples
    accuracy = f", held-out {metric} {100 * held:.1f}%" if held is not None else ""
    why = " (time budget reached)" if tune["stopped_by"] == "time" else ""
    return f"tuned {tune['epochs_run']} epochs{why}, kept epoch {tune['kept_epoch']}{accuracy}"
