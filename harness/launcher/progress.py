"""The driver's progress line."""

from __future__ import annotations

import sys
import time

__all__ = ["Progress", "fmt_duration"]


def fmt_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """One live line on a terminal (redrawn at most every ``min_gap / 10`` s); plain
    lines when the output is a file or CI log, which a carriage return would garble:
    on a change at most every ``min_gap`` s, every ``interval`` s otherwise, and the
    final state on close. A 1,000-job sweep's log gets a line a second, not a line a job."""

    def __init__(self, total: int, skipped: int, stream=None, enabled: bool = True, interval: float = 10.0,
                 min_gap: float = 1.0):
        self.total, self.skipped = total, skipped
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval
        self.min_gap = min_gap
        self.start = time.monotonic()
        self.done = self.failed = self.running = 0
        self._last_line = ""
        self._last_print = -1e9
        self._shown: tuple = ()  # the (done, failed, running) the last line showed

    def line(self) -> str:
        todo = self.total - self.skipped
        elapsed = time.monotonic() - self.start
        finished = self.done + self.failed
        if finished and finished < todo:
            left = f"~{fmt_duration(elapsed / finished * (todo - finished))} left"
        elif finished >= todo:
            left = "0:00 left"
        else:
            left = "? left"
        extra = f", {self.skipped} skipped" if self.skipped else ""
        return (
            f"[ray] {finished}/{todo} done ({self.done} finished, {self.failed} failed{extra}), "
            f"{self.running} running | {fmt_duration(elapsed)} elapsed, {left}"
        )

    def update(self, done: int, failed: int, running: int, force: bool = False) -> None:
        self.done, self.failed, self.running = done, failed, running
        if not self.enabled:
            return
        now = time.monotonic()
        changed = (done, failed, running) != self._shown
        gap = self.min_gap / 10 if self.tty else self.min_gap
        due = now - self._last_print >= (1.0 if self.tty else self.interval)
        if not (due or ((changed or force) and now - self._last_print >= gap)):
            return
        self._draw(now)

    def _draw(self, now: float) -> None:
        line = self.line()
        if self.tty:
            pad = max(0, len(self._last_line) - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._last_line = line
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._last_print = now
        self._shown = (self.done, self.failed, self.running)

    def message(self, text: str) -> None:
        """A line to stderr that does not garble the live progress line."""
        if self.enabled and self.tty and self._last_line:
            self.stream.write("\n")
            self.stream.flush()
            self._last_line = ""
        print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._shown != (self.done, self.failed, self.running) and (self._shown or self.done or self.failed):
            self._draw(time.monotonic())  # the final state, if a rate limit held it back
        if self.tty and self._last_line:
            self.stream.write("\n")
            self.stream.flush()
