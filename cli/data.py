"""``fewintent data``: inspect and validate intent files."""

from __future__ import annotations

import json
from collections import Counter
from itertools import combinations
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fewintent.cli._common import console, guarded, plain, print_warnings, progress_bar
from fewintent.data import IntentSet, read_intent_file
from fewintent.errors import TRAINING_INSTALL, FewIntentError
from fewintent.model import IntentClassifier

app = typer.Typer(no_args_is_help=True, help="Inspect and validate intent files.")

TOP_PAIRS = 10
"""Label co-occurrences `data validate` lists for a multi-label file (the most frequent first)."""


def labels_per_message(data: IntentSet) -> dict[int, int]:
    """Messages by how many intents they carry (0: out of scope), every count from 0 to the most present."""
    sizes = Counter(len(s) for s in data.sets())
    sizes[0] += len(data.oos_texts)
    return {k: sizes[k] for k in range(max(sizes) + 1)}


def co_occurrences(data: IntentSet, top: int | None = TOP_PAIRS) -> list[tuple[tuple[str, str], int]]:
    """The pairs of intents that share a message, most frequent first (ties in the file's label order)."""
    order = {label: i for i, label in enumerate(data.labels)}
    pairs = Counter(pair for s in data.sets() for pair in combinations(sorted(set(s), key=order.__getitem__), 2))
    ranked = sorted(pairs.items(), key=lambda kv: (-kv[1], order[kv[0][0]], order[kv[0][1]]))
    return ranked[:top] if top is not None else ranked


def _multi_label_tables(data: IntentSet) -> list[Table]:
    sizes = labels_per_message(data)
    n = sum(sizes.values())
    per = Table("intents", "messages", "share", title="intents per message")
    for k, count in sizes.items():
        per.add_row(f"{k} (out of scope)" if k == 0 else str(k), str(count), f"{100 * count / max(n, 1):.1f}%")
    pairs = Table("intents together", "messages", title=f"most frequent co-occurrences (top {TOP_PAIRS})")
    for (a, b), count in co_occurrences(data):
        pairs.add_row(plain(f"{a} + {b}"), str(count))
    return [per, pairs] if pairs.row_count else [per]


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
    intents will be confused. A multi-label file also gets how many intents its messages carry and which intents
    come together most often."""
    data = read_intent_file(file, oos_label=oos_label)
    table = Table("intent", "examples", "first example", title=plain(file))
    for intent, texts in data.by_intent().items():
        table.add_row(plain(intent), str(len(texts)), plain(texts[0]))
    if data.oos_texts:
        oos = Text.assemble((oos_label, "dim"), " (out of scope)")
        table.add_row(oos, str(len(data.oos_texts)), plain(data.oos_texts[0]))
    report = None
    if overlap:
        try:
            clf = IntentClassifier.unfitted(adapter=adapter, base=base, oos_label=oos_label)
        except FewIntentError as e:  # a runtime-only install: the file itself can still be checked
            missing = e.__cause__
            if not isinstance(missing, ModuleNotFoundError):
                raise
            raise FewIntentError(
                f"{file}: the overlap check embeds the examples with a torch encoder ({missing.name} is not "
                f"installed): add --no-overlap to check the file without it, or {TRAINING_INSTALL}"
            ) from e
        with progress_bar("encoding examples", len(data)) as advance:
            report = clf.overlaps(data, progress=advance)
    if as_json:
        multi: dict[str, object] = {}
        if data.is_multi_label:
            multi = {
                "multi_label": True,
                "labels_per_message": {str(k): v for k, v in labels_per_message(data).items()},
                "co_occurrence": [{"intents": list(p), "messages": c} for p, c in co_occurrences(data, None)],
            }
        print(
            json.dumps(
                {
                    "intents": data.counts(),
                    "warnings": data.warnings,
                    **multi,
                    **(report.to_dict() if report else {}),
                }
            )
        )
        return
    console.print(table)
    if data.is_multi_label:
        for extra in _multi_label_tables(data):
            console.print(extra)
    print_warnings(data.warnings)
    if report is not None:
        for line in report.lines():
            console.print(f"[cyan]check:[/] {escape(line)}", highlight=False, soft_wrap=True)
    console.print(
        f"ok: {len(data.labels)} intents, {len(data.texts)} examples, {len(data.oos_texts)} out-of-scope"
        + (f", {_mean_labels(data):.2f} intents per in-scope message" if data.is_multi_label else "")
        + (f"; {len(report.lines())} finding(s) to look at" if report is not None else ""),
        highlight=False,
    )


def _mean_labels(data: IntentSet) -> float:
    return sum(len(x) for x in data.sets()) / max(len(data.texts), 1)
