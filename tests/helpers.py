"""Helpers the area test files share: run the CLI, check a one-line error, write and fit tiny data."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import make_tiny_encoder
from typer.testing import CliRunner

from fewintent import IntentClassifier, IntentSet
from fewintent.cli.main import app

runner = CliRunner()
ROWS = [
    ("where is my card", "card"),
    ("my card did not arrive", "card"),
    ("what is my balance", "balance"),
    ("how much money is left", "balance"),
]
SMALL = "\n".join(json.dumps({"text": t, "intent": i}) for t, i in ROWS)
EXAMPLES = {
    "greet": ["hello there", "hi", "good morning", "hey"],
    "card": ["lost my card", "card stolen", "block my card", "card missing"],
    "weather": ["will it rain", "weather today", "is it sunny", "forecast please"],
}
DATA = IntentSet.from_pairs([(t, i) for i, texts in EXAMPLES.items() for t in texts])
NO_SPACE = 'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'


def run(*args: object, **kwargs):
    """The CLI in-process, every argument as a string."""
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def one_line_error(result, *needles: str) -> None:
    """The command failed with exit code 1 and one line `error: ...` holding every needle."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1, result.output
    assert result.output.startswith("error: "), result.output
    for needle in needles:
        assert needle in result.output, result.output


def write_rows(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "intent": i}) + "\n" for t, i in rows))
    return path


def fit(rows: list[tuple[str, str]] = ROWS) -> IntentClassifier:
    return IntentClassifier(make_tiny_encoder()).fit(IntentSet.from_pairs(rows))


def no_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def read_intent_file_from_text(text: str) -> IntentSet:
    pairs = [(r["text"], r["intent"]) for r in map(json.loads, text.splitlines())]
    return IntentSet.from_pairs(pairs)


def edit_config(model: Path, **changes: object) -> None:
    """Change config.json's top-level keys; `...` removes one."""
    config = json.loads((model / "config.json").read_text())
    for key, value in changes.items():
        if value is ...:
            config.pop(key, None)
        else:
            config[key] = value
    (model / "config.json").write_text(json.dumps(config))


MULTI_LABEL_ROWS = [
    ("my card never arrived", ["card", "arrival"]),
    ("where is my new card", ["card", "arrival"]),
    ("block my card please", ["card", "block"]),
    ("freeze the card now", ["card", "block"]),
    ("block my account", ["account", "block"]),
    ("freeze my account", ["account", "block"]),
    ("close my account", ["account"]),
    ("open an account", ["account"]),
    ("when will the transfer arrive", ["transfer", "arrival"]),
    ("the transfer has not arrived", ["transfer", "arrival"]),
    ("send a transfer", ["transfer"]),
    ("make a transfer to my friend", ["transfer"]),
    ("write me a poem", []),
]
"""A small multi-label support set: texts with their intents (an empty list: out of scope)."""
