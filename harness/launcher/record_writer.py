"""The driver's writer thread: records go to the store in batches, off the dispatch loop.

The driver stays the only writer: one thread of the driver process writes, and
nothing else in it touches the store while that thread runs (the hook opens the
sweep's parent run before it starts and closes the parent after :meth:`close`).
Records queue up while a batch is being written and go in the next one, so a
burst of short jobs costs a few sqlite transactions instead of ~7 commits each
(:meth:`harness.tracking.MlflowTracker.write_many`). The queue is bounded:
when the store is slower than the jobs, the dispatch loop waits instead of
holding every record in memory.

What was written, or why not, is handed to ``done(item, run_id_or_exception)``
in the writer thread; the hook keeps a refused record on disk there
(:mod:`harness.store`), so nothing computed is lost. A record still queued when
the driver is killed is not written: its job has no FINISHED run, and rerunning
the sweep runs it again (resume by config hash).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable, List, Optional

__all__ = ["RecordWriter"]

log = logging.getLogger("harness.launcher")

_STOP = object()


class RecordWriter:
    """Writes ``(record, run_name, parent_run_id, context)`` items through ``tracker``."""

    def __init__(self, tracker, done: Callable[[Any, Any], None], max_queue: int = 256, max_batch: int = 64):
        self.tracker, self.done, self.max_batch = tracker, done, max_batch
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=max_queue)
        self._thread: Optional[threading.Thread] = None
        self.batches = 0  # transactions written (for tests and benchmarks)

    def put(self, record, run_name: str, parent_run_id: Optional[str], context: Any) -> None:
        """Queue a record (blocks while the queue is full)."""
        if self._thread is None:
            # Not a daemon: records already queued are written even if the main thread stops.
            self._thread = threading.Thread(target=self._loop, name="harness-record-writer", daemon=False)
            self._thread.start()
        self._queue.put((record, run_name, parent_run_id, context))

    def close(self) -> None:
        """Write everything queued, then stop the thread (no-op if it never started)."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join()
        self._thread = None

    def _loop(self) -> None:
        stop = False
        while not stop:
            batch: List[Any] = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if any(item is _STOP for item in batch):
                stop = True
                batch = [item for item in batch if item is not _STOP]
            if not batch:
                continue
            try:
                outcomes = self.tracker.write_many([(r, n, p) for r, n, p, _ in batch])
            except Exception as exc:  # write_many reports per item; this is a bug or a store gone mad
                outcomes = [exc] * len(batch)
            self.batches += 1
            for (record, name, parent, context), outcome in zip(batch, outcomes):
                try:
                    self.done(context, outcome)
                except Exception:  # never lose the thread (and the records after this one)
                    log.exception("record writer: handling a written record failed")
