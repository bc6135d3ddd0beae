"""The one exception type users see: a mistake they can fix, with a message that says how."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

TRAINING_STACK = ("torch", "transformers", "peft", "sentence_transformers", "datasets")
"""What training needs and serving an exported (ONNX) model does not: a runtime-only install has none of them."""
TRAINING_INSTALL = "reinstall fewintent with its dependencies (`pip install .` in the checkout, without --no-deps)"


def extra_install(extra: str) -> str:
    """How to add an optional extra to this install: fewintent is installed from its checkout (editable or not),
    so ``pip install 'fewintent[extra]'`` would look for it on a package index."""
    from pathlib import Path

    editable = "site-packages" not in Path(__file__).resolve().parts
    return f"`pip install {'-e ' if editable else ''}'.[{extra}]'` in the fewintent checkout"


class FewIntentError(Exception):
    """A problem caused by input the user controls (a file, a model directory, an argument).

    The CLI prints the message on one line and exits non-zero; the HTTP server answers 4xx with it.
    """


class UnknownIntentError(FewIntentError):
    """The intent named does not exist in the model (the HTTP server answers 404)."""


class EditConflictError(FewIntentError):
    """The edit contradicts the model's state, e.g. removing one of its last two intents (HTTP 409)."""


class CorruptModelError(FewIntentError):
    """A model directory is missing, foreign, or its files are damaged or do not fit together."""


class FewIntentWarning(Warning):
    """Something the user should know about a model that still works (e.g. an uncalibrated OOS threshold).

    Not a ``UserWarning``: the CLI silences library chatter of that kind but prints these, one line each.
    """


def reject_unknown(given: Iterable[str], known: Iterable[str], what: str) -> None:
    """Refuse keys a settings class does not have (a typo must not be silently ignored)."""
    unknown = set(given) - set(known)
    if unknown:
        raise FewIntentError(f"unknown {what}: {', '.join(sorted(unknown))}")


@contextlib.contextmanager
def training_parts(what: str) -> Iterator[None]:
    """Around the import of a training part (a torch encoder, LoRA, meta-training, export, the benchmark): in a
    runtime-only install, its missing module becomes one line saying what needs it and what to install."""
    try:
        yield
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if top not in TRAINING_STACK:
            raise
        raise FewIntentError(
            f"{what} needs the training stack ({top} is not installed; this looks like a runtime-only install, "
            f"which predicts and serves exported ONNX models): {TRAINING_INSTALL}"
        ) from e
