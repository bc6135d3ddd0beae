"""``fewintent``: adapt an intent classifier from a few examples, predict, evaluate, meta-train, benchmark, serve."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from fewintent.cli import (
    adapt,
    bases,
    benchmark,
    calibrate,
    data,
    datasets,
    discover,
    evaluate,
    export,
    meta_train,
    predict,
    serve,
)
from fewintent.cli._common import polish_help
from fewintent.version import __version__


class _Group(TyperGroup):
    """The root command: every command's --help is polished once, when typer builds the tree."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        polish_help(self)


app = typer.Typer(
    name="fewintent",
    cls=_Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Few-shot intent classification for chatbots: 5-10 examples per intent, out-of-scope fallback, in seconds.",
)
app.command("adapt")(adapt.adapt)
app.add_typer(bases.app, name="bases")
app.command("predict")(predict.predict)
app.command("evaluate")(evaluate.evaluate)
app.command("calibrate")(calibrate.calibrate)
app.command("discover")(discover.discover)
app.command("export")(export.export)
app.command("meta-train")(meta_train.meta_train)
app.command("serve")(serve.serve)
app.command("benchmark")(benchmark.benchmark)
app.add_typer(data.app, name="data")
app.add_typer(datasets.app, name="datasets")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fewintent {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Few-shot intent classification for chatbots."""


if __name__ == "__main__":
    app()
