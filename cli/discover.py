"""``fewintent discover``: candidate new intents and messages worth labelling, from unlabelled traffic."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import typer
from rich.table import Table

from fewintent.cli._common import (
    THREADS_HELP,
    console,
    guarded,
    load_classifier,
    plain,
    progress_bar,
    set_threads,
)
from fewintent.data.io import read_messages
from fewintent.errors import FewIntentError
from fewintent.model.discovery import LOOK_MARGIN
from fewintent.model.discovery import discover as run_discovery
from fewintent.model.storage import is_model_dir, real_path


def check_output(
    output: Path, read: Path | list[Path], *, force: bool = False, flag: str = "-o", what: str = "messages file"
) -> None:
    """Refuse an output file that cannot be written, before minutes of encoding; never overwrite a file being read,
    an existing file without ``--force``, or anything inside a model directory."""
    if output.is_dir():
        raise FewIntentError(f"{output}: is a directory; {flag} names the JSONL file to write")
    for source in read if isinstance(read, list) else [read]:
        if str(source) != "-" and output.exists() and output.resolve() == source.resolve():
            raise FewIntentError(f"{output}: {flag} would overwrite the {what} being read; write elsewhere")
    inside = next((d for d in real_path(output).parents if is_model_dir(d)), None)
    if inside is not None:
        raise FewIntentError(
            f"{output}: inside the model directory {inside}, which is replaced whole on its next save (and whose "
            "files must not change); write the file elsewhere"
        )
    if _regular_file(output) and not force:  # a stream (/dev/stdout, a pipe) is written, not replaced
        raise FewIntentError(f"{output}: exists; pass --force to replace it, or write elsewhere")
    parent = next((p for p in output.absolute().parents if p.exists()), None)
    if parent is None or not os.access(parent, os.W_OK):
        raise FewIntentError(f"{output}: cannot write there (parent directory {parent} is not writable)")


def _regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def write_jsonl(output: Path, rows: list[dict]) -> None:
    """Write ``rows`` to ``output`` whole or not at all (a full disk leaves no half file behind). A device, a pipe
    or a symbolic link (/dev/stdout) is written through in place: renaming a file over it would replace it."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if output.is_symlink() or (output.exists() and not _regular_file(output)):
        try:
            with open(output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as e:
            raise FewIntentError(f"{output}: {e.strerror or e}") from e
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)


@guarded
def discover(
    model_dir: Path = typer.Argument(..., help="Model directory written by `fewintent adapt`."),
    messages_file: Path = typer.Argument(
        ..., help="Unlabelled user messages: one per line, or JSONL with a 'text' field ('-' = standard input)."
    ),
    output: Path = typer.Option(
        None,
        "--output",
        "-o",
        help="Write a JSONL to edit (rename, merge, drop) and feed back to `fewintent adapt`: each cluster's "
        "messages under a draft intent name, then the messages to label under the model's guess.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace the -o file when it exists."),
    as_json: bool = typer.Option(
        False, "--json", help='Print one JSON object {"clusters": [...], "to_label": [...]}.'
    ),
    min_cluster_size: int = typer.Option(5, "--min-cluster-size", min=2, help="Fewest messages that make a cluster."),
    to_label: int = typer.Option(
        20,
        "--to-label",
        min=0,
        help="At most this many in-scope messages to suggest for labelling: answers whose best intent leads the "
        f"runner-up by less than {LOOK_MARGIN}, the most uncertain first.",
    ),
    min_confidence: float = typer.Option(
        0.0,
        "--min-confidence",
        min=0.0,
        max=1.0,
        help="Also cluster in-scope answers less confident than this (new intents close to existing ones often "
        "land there rather than out of scope). 0 = out-of-scope messages only.",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    threads: int = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
) -> None:
    """Group the messages the model answers out of scope into candidate new intents; list the in-scope messages
    it is least sure of (most worth labelling). The model itself is not changed."""
    set_threads(threads)
    if output is not None:
        check_output(output, messages_file, force=force)
    clf = load_classifier(model_dir, device)
    texts = read_messages(messages_file)
    with progress_bar("encoding messages", len(texts)) as advance:
        result = run_discovery(
            clf,
            texts,
            min_cluster_size=min_cluster_size,
            n_to_label=to_label,
            min_confidence=min_confidence,
            progress=advance,
        )
    if output is not None:
        write_jsonl(output, result.to_jsonl_rows())
    if as_json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    table = Table("id", "size", "name hint", "examples", title=f"{len(result.clusters)} candidate new intents")
    for c in result.clusters:
        table.add_row(str(c.id), str(c.size), plain(c.name_hint), plain("\n".join(c.examples)))
    console.print(table)
    console.print(
        f"{result.n_messages} messages, {result.n_out_of_scope} answered out of scope; "
        f"{sum(c.size for c in result.clusters)} in clusters.",
        highlight=False,
    )
    if result.to_label:
        labels = Table("text", "model's guess", "confidence", title="label these next (most uncertain first)")
        for item in result.to_label:
            labels.add_row(plain(item.text), plain(item.intent), f"{item.confidence:.2f}")
        console.print(labels)
    elif to_label:
        console.print(
            f"no answer to label: none in scope whose best intent leads the runner-up by less than {LOOK_MARGIN}",
            highlight=False,
        )
    if output is not None:
        todo = (
            f'; the {len(result.to_label)} messages to label have "intent": null with the model\'s guess beside '
            "it: fill each in (adapt skips a row without an intent)"
            if result.to_label
            else ""
        )
        console.print(plain(f"wrote {output}: rename the new_* intents{todo}, then `fewintent adapt` with it"))
