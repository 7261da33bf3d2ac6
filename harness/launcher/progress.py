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
    """One live line on a terminal; plain lines (on each change, at most every
    ``interval`` s otherwise) when the output is a file or CI log, which a
    carriage return would garble."""

    def __init__(self, total: int, skipped: int, stream=None, enabled: bool = True, interval: float = 10.0):
        self.total, self.skipped = total, skipped
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval
        self.start = time.monotonic()
        self.done = self.failed = self.running = 0
        self._last_line = ""
        self._last_print = 0.0

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
        changed = (done, failed, running) != (self.done, self.failed, self.running)
        self.done, self.failed, self.running = done, failed, running
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            if changed or force or now - self._last_print >= 1.0:
                line = self.line()
                pad = max(0, len(self._last_line) - len(line))
                self.stream.write("\r" + line + " " * pad)
                self.stream.flush()
                self._last_line, self._last_print = line, now
        elif changed or force or now - self._last_print >= self.interval:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self._last_print = now

    def message(self, text: str) -> None:
        """A line to stderr that does not garble the live progress line."""
        if self.enabled and self.tty and self._last_line:
            self.stream.write("\n")
            self.stream.flush()
            self._last_line = ""
        print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty and self._last_line:
            self.stream.write("\n")
            self.stream.flush()
