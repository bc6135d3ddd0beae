"""Progress with a running ETA: a rich bar on a terminal, timestamped lines in a log (``nohup ... > log``)."""

from __future__ import annotations

import time

from fewintent.progress import ProgressBar


def _fmt(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


class Tracker(ProgressBar):
    """Counts work units of one protocol; ``advance`` moves the bar, ``log`` prints a line above it."""

    def __init__(self, description: str, total: int, *, enabled: bool = True) -> None:
        self.description, self.total, self.done = description, max(total, 1), 0
        self.start = time.perf_counter()
        self._last_line = 0.0
        super().__init__(description, self.total, enabled=enabled, eta_label=True)

    def eta(self) -> str:
        elapsed = time.perf_counter() - self.start
        if self.done < max(1, self.total // 100):  # the first units carry the warm-up: too early to tell
            return "?"
        return _fmt(elapsed / self.done * (self.total - self.done))

    def advance(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        if self.live:
            super().advance(n)
        elif self.enabled and time.perf_counter() - self._last_line > 30:  # a heartbeat in logs, not a flood
            self._last_line = time.perf_counter()
            self.log(f"{self.done}/{self.total}")

    def log(self, message: str) -> None:
        if not self.enabled:
            return
        elapsed = _fmt(time.perf_counter() - self.start)
        line = f"[{time.strftime('%H:%M:%S')}] {self.description}: {message}  (elapsed {elapsed}, ETA {self.eta()})"
        self.print(line, soft_wrap=True)
