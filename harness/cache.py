"""Compute-once cache entries, safe across concurrent jobs and retries.

An entry is one file under ``<cache_dir>/<namespace>/<key><suffix>``. The
producer holds an exclusive ``fcntl`` lock on ``<key>.lock`` while it checks and
computes, so jobs asking for the same entry compute it once: the others wait,
then read. The file is written under a temporary name and moved into place with
``os.replace``, so a reader never sees half a file, and a job killed mid-write
leaves no entry (its retry computes it again).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["cached_entry", "locked_entry"]


@contextmanager
def locked_entry(cache_dir: str | os.PathLike, namespace: str, key: str, suffix: str) -> Iterator[Path]:
    """Hold the entry's lock; yields the entry's path (which may not exist yet)."""
    folder = Path(cache_dir) / namespace
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield folder / f"{key}{suffix}"
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_atomically(path: Path, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, then move it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def cached_entry(cache_dir: str | os.PathLike, namespace: str, key: str, suffix: str,
                 load: Callable[[Path], Any], produce: Callable[[], Any],
                 save: Callable[[Any, Any], None]) -> tuple[Any, bool]:
    """``(value, hit)``: ``load(path)`` if the entry exists, else ``produce()`` and
    ``save(value, file)`` it."""
    with locked_entry(cache_dir, namespace, key, suffix) as path:
        if path.exists():
            return load(path), True
        value = produce()
        write_atomically(path, lambda fh: save(value, fh))
        return value, False
