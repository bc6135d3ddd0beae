"""``fewintent datasets``: the public corpora, downloaded from their source repositories at pinned commits."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from fewintent.cli._common import console, err_console, guarded
from fewintent.data.download import CORPORA, MIRROR_ENV, download, known, size_mb, state
from fewintent.data.locations import data_home, find_corpus
from fewintent.errors import FewIntentError
from fewintent.progress import ProgressBar

app = typer.Typer(
    no_args_is_help=True,
    help="The public corpora (BANKING77, CLINC150, HWU64, SNIPS, BANKING77-OOS, NLU++, SGD): list, download, path.",
)


@app.command("list")
@guarded
def list_(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of objects instead of a table."),
) -> None:
    """The known corpora: licence, size, whether downloaded, and where the benchmark and meta-train find each."""
    rows: list[dict[str, Any]] = []
    for c in CORPORA.values():
        found = find_corpus(c.name)
        rows.append(
            {
                "name": c.name,
                "title": c.title,
                "licence": c.licence,
                "size_mb": round(size_mb(c.name), 1),
                "downloaded": state(c.name).state,
                "found": str(found) if found else None,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"corpora (downloads go to {escape(str(data_home()))})")
    for column in ("name", "licence", "size", "downloaded", "used from"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["name"],
            r["licence"],
            f"{r['size_mb']:.1f} MB",
            r["downloaded"],
            escape(r["found"] or "-"),
        )
    console.print(table)


@app.command("download")
@guarded
def download_(
    names: list[str] = typer.Argument(None, help=f"Corpora to get ({', '.join(CORPORA)})."),
    all_: bool = typer.Option(False, "--all", help="Every known corpus."),
    force: bool = typer.Option(False, "--force", help="Fetch again even when present and verified."),
    mirror: str = typer.Option(
        None,
        "--mirror",
        hidden=True,
        help=f"Base URL or folder laid out like raw.githubusercontent.com (tests; also ${MIRROR_ENV}).",
    ),
) -> None:
    """Fetch each corpus's source files at a pinned commit, check their sha256, convert, and write it atomically."""
    if not names and not all_:
        raise FewIntentError(f"name the corpora to download ({', '.join(CORPORA)}), or pass --all")
    corpora = known(list(CORPORA) if all_ else names)
    home = data_home()
    todo = [c for c in corpora if force or state(c.name, home).state != "present"]
    for c in corpora:
        if c not in todo:
            console.print(f"{c.name}: present and verified in {escape(str(home / c.name))}", highlight=False)
    total = sum(len(c.files) for c in todo)
    done = 0
    with ProgressBar("downloading", total, enabled=bool(todo), info=True, console=err_console) as bar:
        for c in todo:
            bar.update(done, info=c.name)
            result, _ = download(c, home=home, mirror=mirror, progress=bar.advance)
            done += len(c.files)
            bar.update(done, info=c.name)
            bar.print(
                f"{c.name}: {size_mb(c.name):.1f} MB, {len(c.files)} source files verified -> "
                f"{escape(str(result.path))}; licence {c.licence} ({c.citation})",
                soft_wrap=True,
            )


@app.command("path")
@guarded
def path(name: str = typer.Argument(None, help="A corpus: print the folder it is used from.")) -> None:
    """Print where downloaded corpora go (or, given NAME, the folder that corpus is found in)."""
    if name is None:
        typer.echo(str(data_home()))
        return
    known([name])
    found = find_corpus(name)
    if found is None:
        raise FewIntentError(f"'{name}' is not downloaded: `fewintent datasets download {name}`")
    typer.echo(str(found))
