"""``fewintent export``: a model directory whose encoder is an ONNX graph (optionally int8), for lean CPU serving."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from fewintent.cli._common import THREADS_HELP, console, guarded, plain, set_threads
from fewintent.errors import FewIntentError
from fewintent.model import IntentClassifier
from fewintent.model.storage import is_model_dir, real_path


@guarded
def export(
    model_dir: Path = typer.Argument(..., help="Model directory written by `fewintent adapt`."),
    output: Path = typer.Option(..., "--output", "-o", help="New model directory to write (atomically)."),
    format: str = typer.Option("onnx", "--format", help="Encoder format: onnx."),
    quantize: str = typer.Option(
        None, "--quantize", help="int8: 8-bit weights by the base's own recipe, chosen on valid (~4x smaller)."
    ),
    threads: int = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    force: bool = typer.Option(False, "--force", help="Replace the model already at -o (it is replaced whole)."),
) -> None:
    """Export MODEL_DIR with its encoder as an ONNX graph (LoRA merged): same intents, head, threshold and
    config. Every command and IntentClassifier.load accept the result; it needs the onnx extra (see README)."""
    set_threads(threads)
    if real_path(output) == real_path(model_dir):  # a symlink to the model is the model
        raise FewIntentError(f"{output} is {model_dir} itself: export writes a new model directory, give another -o")
    if is_model_dir(real_path(output)) and not force:
        raise FewIntentError(f"{output}: holds another model; pass --force to replace it whole, or give another -o")
    start = time.perf_counter()
    clf = IntentClassifier.export(model_dir, output, format=format, quantize=quantize)
    size = sum(f.stat().st_size for f in output.iterdir()) / 2**20
    console.print(
        plain(
            f"exported {len(clf.labels)} intents{' (multi-label)' if clf.config.multi_label else ''} with an "
            f"ONNX{' int8' if quantize else ''} encoder in "
            f"{time.perf_counter() - start:.1f}s -> {output} ({size:.1f} MiB)"
        ),
        highlight=False,
        soft_wrap=True,
    )
