"""``fewintent data``: inspect and validate intent files."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fewintent.cli._common import console, guarded, plain, print_warnings, progress_bar
from fewintent.data import read_intent_file
from fewintent.model import IntentClassifier

app = typer.Typer(no_args_is_help=True, help="Inspect and validate intent files.")


@app.command("validate")
@guarded
def validate(
    file: Path = typer.Argument(..., help="Intent file: .jsonl, .csv (text,intent) or Rasa nlu.yml."),
    oos_label: str = typer.Option("oos", "--oos-label", help="Intent name that marks out-of-scope rows."),
    overlap: bool = typer.Option(
        True,
        "--overlap/--no-overlap",
        help="Embed the examples and report confusable intents, near-duplicate examples under different intents "
        "and intents likely to underperform (loads the encoder: a few seconds).",
    ),
    adapter: str = typer.Option("auto", "--adapter", help="Adapter of the encoder the overlap check embeds with."),
    base: str = typer.Option(None, "--base", help="Encoder for the overlap check (default: packaged MiniLM)."),
    as_json: bool = typer.Option(False, "--json", help="Print the findings as one JSON object."),
) -> None:
    """Check FILE as training data and print examples per intent, every warning, and (with the encoder) which
    intents will be confused."""
    data = read_intent_file(file, oos_label=oos_label)
    table = Table("intent", "examples", "first example", title=plain(file))
    for intent, texts in data.by_intent().items():
        table.add_row(plain(intent), str(len(texts)), plain(texts[0]))
    if data.oos_texts:
        oos = Text.assemble((oos_label, "dim"), " (out of scope)")
        table.add_row(oos, str(len(data.oos_texts)), plain(data.oos_texts[0]))
    report = None
    if overlap:
        clf = IntentClassifier.unfitted(adapter=adapter, base=base, oos_label=oos_label)
        with progress_bar("encoding examples", len(data)) as advance:
            report = clf.overlaps(data, progress=advance)
    if as_json:
        print(
            json.dumps({"intents": data.counts(), "warnings": data.warnings, **(report.to_dict() if report else {})})
        )
        return
    console.print(table)
    print_warnings(data.warnings)
    if report is not None:
        for line in report.lines():
            console.print(f"[cyan]check:[/] {escape(line)}", highlight=False, soft_wrap=True)
    console.print(
        f"ok: {len(data.labels)} intents, {len(data.texts)} examples, {len(data.oos_texts)} out-of-scope"
        + (f"; {len(report.lines())} finding(s) to look at" if report is not None else ""),
        highlight=False,
    )
