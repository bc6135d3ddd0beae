"""``fewintent data``: inspect and validate intent files."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from fewintent.cli._common import console, guarded, print_warnings
from fewintent.data import read_intent_file

app = typer.Typer(no_args_is_help=True, help="Inspect and validate intent files.")


@app.command("validate")
@guarded
def validate(
    file: Path = typer.Argument(..., help="Intent file: .jsonl, .csv (text,intent) or Rasa nlu.yml."),
    oos_label: str = typer.Option("oos", "--oos-label", help="Intent name that marks out-of-scope rows."),
) -> None:
    """Check FILE as training data and print examples per intent and every warning."""
    data = read_intent_file(file, oos_label=oos_label)
    table = Table("intent", "examples", "first example", title=f"{file}")
    for intent, texts in data.by_intent().items():
        table.add_row(intent, str(len(texts)), texts[0])
    if data.oos_texts:
        table.add_row(f"[dim]{oos_label}[/] (out of scope)", str(len(data.oos_texts)), data.oos_texts[0])
    console.print(table)
    print_warnings(data.warnings)
    console.print(
        f"ok: {len(data.labels)} intents, {len(data.texts)} examples, {len(data.oos_texts)} out-of-scope",
        highlight=False,
    )
