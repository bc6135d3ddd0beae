"""``fewintent predict``: classify messages with a saved model."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table
from rich.text import Text

from fewintent.cli._common import THREADS_HELP, console, guarded, load_classifier, plain, progress_bar, set_threads
from fewintent.data.io import read_messages
from fewintent.errors import FewIntentError

if TYPE_CHECKING:
    from fewintent.model import IntentScore, Prediction


def runner_up(prediction: Prediction) -> IntentScore | None:
    """The intent to show beside the answer: the second in the ranking, or, when the answer is out of scope, the
    best in-scope intent (the first in the ranking, which the fallback overruled)."""
    ranking = prediction.intent_ranking
    if prediction.is_oos:
        return ranking[0] if ranking else None
    return ranking[1] if len(ranking) > 1 else None


@guarded
def predict(
    model_dir: Path = typer.Argument(..., help="Model directory written by `fewintent adapt`."),
    texts: list[str] = typer.Argument(None, help="Messages to classify."),
    input_file: Path = typer.Option(
        None, "--input", "-i", help="File of messages: one per line, or JSONL with 'text' ('-' = stdin)."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per message (the contract in the README)."),
    top_k: int = typer.Option(5, "--top-k", min=1, help="Intents listed in each ranking."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    threads: int = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
) -> None:
    """Classify messages given as arguments or in a file; out-of-scope ones get the OOS label."""
    set_threads(threads)
    all_texts = list(texts or [])
    if input_file is not None:
        all_texts += read_messages(input_file)
    if not all_texts:
        raise FewIntentError("nothing to classify: give messages as arguments or --input FILE")
    clf = load_classifier(model_dir, device)
    with progress_bar("classifying", len(all_texts), enabled=True) as advance:
        predictions = clf.predict(all_texts, top_k=top_k, progress=advance)
    if as_json:
        for p in predictions:
            sys.stdout.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")
        return
    if clf.config.multi_label:  # every intent that passes, with its own probability
        table = Table("text", "intents")
        for p in predictions:
            named = ", ".join(f"{x.name} {x.confidence:.2f}" for x in p.intents or [])
            table.add_row(plain(p.text), plain(named) if named else Text(clf.oos_label, style="dim"))
        console.print(table)
        return
    table = Table("text", "intent", "confidence", "runner-up")
    for p in predictions:
        runner = runner_up(p)
        name = Text(p.intent.name, style="dim" if p.is_oos else "bold")
        table.add_row(
            plain(p.text),
            name,
            f"{p.intent.confidence:.2f}",
            plain(f"{runner.name} {runner.confidence:.2f}") if runner else "",
        )
    console.print(table)
