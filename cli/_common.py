"""Shared CLI plumbing: one-line errors, rich progress, the console."""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from fewintent.errors import FewIntentError, FewIntentWarning
from fewintent.progress import ProgressBar

if TYPE_CHECKING:
    from fewintent.data import IntentSet
    from fewintent.model import IntentClassifier
    from fewintent.model.tuning import TrainingStatus

# emoji=False: a message's ":thumbs_up:" is text the user typed, not a picture to draw
console = Console(emoji=False)
# Piped or redirected, a line is never wrapped (a path cut onto the next line breaks the scripts reading it);
# tables still fit the width.
console.soft_wrap = not console.is_terminal
err_console = Console(stderr=True, emoji=False)
F = TypeVar("F", bound=Callable[..., Any])


def plain(value: object) -> Text:
    """A user's string (a message, an intent name, a path) as a table cell or title: shown exactly as it is,
    never read as Rich markup ("[/]" would crash the print, "[link=...]" would hide text)."""
    return Text(str(value))


def quiet_libraries() -> None:
    """Keep library chatter (HF warnings, tokenizer forks) out of the CLI's output."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.simplefilter("always", FewIntentWarning)  # ours: each one is something the user should read
    warnings.showwarning = _show_warning
    for name in ("transformers", "huggingface_hub", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:  # the hub's own logging setup resets its level on first import: set it through its API too
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - a dependency of transformers
        pass


_library_showwarning = warnings.showwarning


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """fewintent's own warnings print as one 'warning:' line on stderr, like every other CLI message."""
    if issubclass(category, FewIntentWarning):
        err_console.print(f"[yellow]warning:[/] {_one_line(str(message))}", highlight=False, soft_wrap=True)
    else:
        _library_showwarning(message, category, *args, **kwargs)


PLAIN_PROGRESS_MIN = 5000
"""Texts from which work shows progress even when stderr is not a terminal."""
THREADS_HELP = "CPU threads of the encoder (default: all cores). On a busy or shared host 1-2 is often much faster."


def set_threads(threads: int | None) -> None:
    """Apply ``--threads`` to this process's encoder, torch or ONNX (None keeps the default: every core); more than
    the machine's CPUs is refused: thousands of threads crash the BLAS library instead of running faster."""
    check_threads(threads)
    if threads:
        from fewintent.encoder.base import set_num_threads

        set_num_threads(threads)


def check_threads(threads: int | None) -> None:
    cpus = os.cpu_count() or 1
    if threads is not None and threads > cpus:
        raise FewIntentError(f"--threads {threads}: this machine has {cpus} CPUs; use at most {cpus}")


def load_classifier(model_dir: Path, device: str) -> IntentClassifier:
    """Load a model directory (under its shared lock, so the load never lands in the middle of a save)."""
    from fewintent.model import IntentClassifier

    return IntentClassifier.load(model_dir, device=device)


def read_labelled(files: list[Path], oos_label: str) -> IntentSet:
    """Labelled evaluation/calibration files, concatenated (e.g. ``valid.jsonl oos_valid.jsonl``)."""
    from fewintent.data import read_intent_file

    parts = [read_intent_file(f, oos_label=oos_label, for_training=False) for f in files]
    data = parts[0]
    for extra in parts[1:]:
        data.texts += extra.texts
        data.intents += extra.intents
        data.oos_texts += extra.oos_texts
        data.warnings += extra.warnings
    data.source = ", ".join(map(str, files))
    return data


def _one_line(message: str) -> str:
    """An error as one line of markup-free text: a newline in a path the user gave is shown as ``\\n``."""
    return escape(message.replace("\r", "\\r").replace("\n", "\\n"))


def refuse_model_directory(output: Path, what: str) -> None:
    """Refuse an output folder that is, or is inside, a model directory: the model's next save (calibrate, a live
    edit) replaces that directory whole, and what was written there with it."""
    from fewintent.model.storage import is_model_dir, real_path

    target = real_path(output.expanduser().absolute())
    owner = next((d for d in (target, *target.parents) if is_model_dir(d)), None)
    if owner is not None:
        raise FewIntentError(
            f"{output}: {'is' if owner == target else 'is inside'} the model directory {owner}, which is replaced "
            f"whole on its next save; write {what} beside it"
        )


def head_for(data: IntentSet, head: str | None) -> str:
    """The decision head for ``data``: the one named, else the default for its kind (one-vs-rest on multi-label
    data); a single-label head named for multi-label data is refused in one line (adapt, evaluate --cv)."""
    from fewintent.heads.registry import DEFAULT_HEAD, HEADS, MULTI_LABEL_HEAD

    if head is not None and data.is_multi_label and head in HEADS and not HEADS[head].multi_label:
        raise FewIntentError(
            f"{data.source}: gives several intents per message; --head {head} names one per message: leave --head "
            "out (multi-label data picks the one-vs-rest head)"
        )
    return head or (MULTI_LABEL_HEAD if data.is_multi_label else DEFAULT_HEAD)


def guarded(fn: F) -> F:
    """User mistakes print one line on stderr and exit 1, with no traceback; Ctrl-C exits 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        quiet_libraries()
        try:
            return fn(*args, **kwargs)
        except FewIntentError as e:
            err_console.print(f"[bold red]error:[/] {_one_line(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except BrokenPipeError:  # `fewintent predict ... --json | head`: the reader has what it wanted
            try:  # so the interpreter's final flush of stdout does not fail again
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):  # not a real file (a test runner's stream)
                pass
            raise typer.Exit(141) from None
        except OSError as e:  # a path the user gave cannot be read or written
            where = f"{e.filename}: " if e.filename else ""
            message = _one_line(f"{where}{e.strerror or e}")
            err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def progress_bar(description: str, total: int, *, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A rich progress bar (on stderr, so ``--json`` output stays clean); yields an ``advance(n)`` callback.

    When stderr is not a terminal (a log file, CI), long work prints a plain line every 10% instead.
    """
    shown = enabled and total >= 200
    with ProgressBar(description, total, enabled=shown, console=err_console) as bar:
        if bar.live or not shown or total < PLAIN_PROGRESS_MIN:
            yield bar.advance  # a no-op without a bar
            return
        done = [0, 0]  # texts done, tenths reported

        def advance(n: int) -> None:
            done[0] += n
            tenth = done[0] * 10 // total
            if tenth > done[1]:
                done[1] = tenth
                bar.print(f"{description}: {done[0]}/{total}")

        yield advance


@contextmanager
def training_bar(description: str, *, enabled: bool = True) -> Iterator[Callable[[TrainingStatus], None]]:
    """A rich bar for training at adapt time (steps, epoch, loss, held-out accuracy), opened at the first step;
    when stderr is not a terminal, a plain line at the end of each epoch instead."""
    bars: list[ProgressBar] = []

    def update(status: TrainingStatus) -> None:
        if not bars:
            bars.append(ProgressBar(description, status.total, enabled=enabled, info=True, console=err_console))
        bar = bars[0]
        bar.update(status.step, status.info())
        if not bar.live and status.epoch_end:
            bar.print(f"{description}: {status.info()}")

    try:
        yield update
    finally:
        for bar in bars:
            bar.close()


def print_warnings(warnings_: list[str]) -> None:
    for w in warnings_:
        err_console.print(f"[yellow]warning:[/] {_one_line(w)}", highlight=False, soft_wrap=True)


# --- help text: one place that makes every command's --help read the same way -----------------------------------

CHOICES: dict[str, tuple[str, ...]] = {
    "--device": ("auto", "cpu", "cuda"),
    "--format": ("onnx",),
    "--quantize": ("int8",),
    "--log-level": ("critical", "error", "warning", "info", "debug"),
    "--objective": ("f1", "recall"),
}
"""Options whose values are a fixed list (validated where they are used), shown as ``<a|b>`` in --help. An
option that takes fewer (benchmark's --device) or whose list is a registry (--head) says so with its own metavar."""
HELP_OPTIONS = ["-h", "--help"]


def polish_help(command: Any) -> None:
    """Make ``command`` (the root click group typer builds) and every command under it print plain, compact help:
    ``-h`` as well as ``--help``; usage lines naming arguments as the text does (``TRAIN_FILE``, ``[TEXTS]...``);
    values as ``<path>``, ``<text>``, choices as ``<auto|cpu|cuda>``, never a Python type, and no value shown for a
    flag. Plain (non-rich) layout: two columns that stay readable at 80 characters, paragraphs re-wrapped."""
    from typer.core import TyperArgument

    command.context_settings.setdefault("help_option_names", HELP_OPTIONS)
    command.rich_markup_mode = None
    for param in command.params:
        if isinstance(param, TyperArgument):
            _polish_argument(param)
        elif not (getattr(param, "is_flag", False) or getattr(param, "count", False) or param.metavar):
            option = next((o for o in param.opts if o.startswith("--")), "")
            choices = CHOICES.get(option)
            param.metavar = "<" + ("|".join(choices) if choices else _value_kind(param)) + ">"
            if getattr(param, "multiple", False):
                param.metavar += " (repeatable)"
    for sub in getattr(command, "commands", {}).values():
        polish_help(sub)


def _polish_argument(param: Any) -> None:
    """An argument named in capitals everywhere (usage line, list, the docstring's TRAIN_FILE), its kind beside."""
    many = "..." if param.nargs != 1 else ""
    name = param.metavar or (param.name or "").upper()  # a metavar of its own wins (evaluate's MODEL_DIR|TRAIN_FILE)
    param.metavar = name if name.endswith(many) else name + many
    name = name.removesuffix("...")
    shown = (name if param.required else f"[{name}]") + many
    kind = f"<{_value_kind(param)}>"
    # per instance: typer's own usage piece is "{train_file}" and its type column "<list[Path]>"
    param.get_usage_pieces = lambda ctx: [shown]
    param.display_type_rich = lambda ctx: kind


def _value_kind(param: Any) -> str:
    """A value's kind in words (path, text, int, number, or its choices), for a list its element's."""
    from typing import get_args, get_origin

    desc = param.type_descriptor
    if desc.is_choice and desc.choices:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices)
    annotation = desc.annotation
    if get_origin(annotation) in (list, tuple) and get_args(annotation):
        annotation = get_args(annotation)[0]
    if desc.is_path or annotation is Path:
        return "path"
    return {int: "int", float: "number", bool: "true|false"}.get(annotation, "text")
