"""The one progress display: a rich bar on stderr when it is a terminal; plain lines on stderr otherwise.

Callers (the CLI's ``progress_bar``, the benchmark's ``Tracker``, the meta-trainer) keep their own policy for
when a log (``nohup ... > log``, CI) gets a plain line; this module owns the bar and where lines go.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_Bar = TypeVar("_Bar", bound="ProgressBar")


class ProgressBar:
    """A live bar when ``enabled`` and stderr is a terminal (``live``); otherwise no bar, and ``print`` writes
    plain lines (nothing at all when not ``enabled``). Use it as a context manager, or call ``close``.

    ``info=True`` adds a column showing the text passed to ``update(info=...)``; ``eta_label`` writes "ETA"
    before the time remaining; ``transient`` clears the bar when it stops.
    """

    def __init__(
        self,
        description: str,
        total: int,
        *,
        enabled: bool = True,
        completed: int = 0,
        info: bool = False,
        eta_label: bool = False,
        transient: bool = True,
        console: Console | None = None,
    ) -> None:
        self.enabled = enabled
        self.live = enabled and sys.stderr.isatty()
        self._progress: Progress | None = None
        if self.live:
            columns: list[ProgressColumn] = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
            columns += [TextColumn("{task.fields[info]}")] if info else []
            columns += [TimeElapsedColumn(), *([TextColumn("ETA")] if eta_label else []), TimeRemainingColumn()]
            self._progress = Progress(*columns, console=console or Console(stderr=True), transient=transient)
            self._progress.start()
            self._task = self._progress.add_task(description, total=total, completed=completed, info="")

    def advance(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def update(self, completed: int, info: str = "") -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, info=info)

    def print(self, text: str, *, soft_wrap: bool = False) -> None:
        """One line above the bar on a terminal, a plain line on stderr otherwise; nothing when disabled."""
        if self._progress is not None:
            self._progress.console.print(text, highlight=False, soft_wrap=soft_wrap)
        elif self.enabled:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __enter__(self: _Bar) -> _Bar:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
