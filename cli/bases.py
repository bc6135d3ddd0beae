"""``fewintent bases``: the registered encoder bases, whether each is installed, and how to install it."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from fewintent.cli._common import console, guarded
from fewintent.encoder.registry import BASES


@guarded
def bases(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of objects instead of a table."),
) -> None:
    """List the registered encoder bases (use a name with `fewintent adapt --base NAME`)."""
    rows = [spec.summary() for spec in BASES.values()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="encoder bases (the first is the default)")
    for column in ("name", "hub id", "dim", "parameters", "default adapter", "installed"):
        table.add_column(column)
    for row in rows:
        installed = "yes" if row["installed"] else f"no: {row['install']}"
        table.add_row(
            escape(row["name"]),
            escape(row["hub_id"]),
            str(row["dim"]),
            f"{row['parameters'] / 1e6:.0f}M",
            escape(row["default_adapter"] or "none"),
            escape(installed),
        )
    console.print(table)
