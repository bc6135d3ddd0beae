"""Progress with a running ETA: a rich bar on a terminal, timestamped lines in a log (``nohup ... > log``)."""

from __future__ import annotations

import sys
import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def _fmt(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


class Tracker:
    """Counts work units of one protocol; ``advance`` moves the bar, ``log`` prints a line above it."""

    def __init__(self, description: str, total: int, *, enabled: bool = True) -> None:
        self.description, self.total, self.done = description, max(total, 1), 0
        self.console = Console(stderr=True)
        self.live = enabled and sys.stderr.isatty()
        self.enabled = enabled
        self.start = time.perf_counter()
        self._progress: Progress | None = None
        self._last_line = 0.0

    def __enter__(self) -> Tracker:
        if self.live:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def eta(self) -> str:
        elapsed = time.perf_counter() - self.start
        if self.done < max(1, self.total // 100):  # the first units carry the warm-up: too early to tell
            return "?"
        return _fmt(elapsed / self.done * (self.total - self.done))

    def advance(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        if self._progress is not None:
            self._progress.advance(self._task, n)
        elif self.enabled and time.perf_counter() - self._last_line > 30:  # a heartbeat in logs, not a flood
            self._last_line = time.perf_counter()
            self.log(f"{self.done}/{self.total}")

    def log(self, message: str) -> None:
        if not self.enabled:
            return
        elapsed = _fmt(time.perf_counter() - self.start)
        line = f"[{time.strftime('%H:%M:%S')}] {self.description}: {message}  (elapsed {elapsed}, ETA {self.eta()})"
        if self._progress is not None:
            self._progress.console.print(line, highlight=False, soft_wrap=True)
        else:
            print(line, file=sys.stderr, flush=True)
