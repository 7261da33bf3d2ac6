"""Train-once caching of base models, safe across concurrent jobs.

A cache entry is an ``.npz`` file under ``<cache_dir>/<namespace>/<key>.npz`` where
``key`` hashes everything that determines the trained weights (workload config
without its evaluation-only fields, seed, the code's format version). The writer
holds an exclusive ``fcntl`` lock on ``<key>.lock`` while it checks and trains, so
two jobs asking for the same model train it once: the second waits, then loads.
The file is written to a temporary name and moved into place with ``os.replace``,
so a reader never sees half a file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["cache_key", "cached_state"]

#: Bump when the layout of stored models changes, to invalidate old entries.
FORMAT_VERSION = 1


def cache_key(namespace: str, config: dict[str, Any], seed: int) -> str:
    blob = json.dumps({"ns": namespace, "config": config, "seed": int(seed), "v": FORMAT_VERSION},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cached_state(cache_dir: str | os.PathLike, namespace: str, key: str,
                 produce: Callable[[], tuple[dict[str, np.ndarray], dict]]
                 ) -> tuple[dict[str, np.ndarray], dict, bool]:
    """Load ``(arrays, meta)`` for ``key``, or call ``produce()`` and store its result.

    Returns ``(arrays, meta, hit)``. ``meta`` must be JSON-serializable.
    """
    folder = Path(cache_dir) / namespace
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.npz"
    with open(folder / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if path.exists():
                with np.load(path, allow_pickle=False) as data:
                    arrays = {k: data[k] for k in data.files if k != "__meta__"}
                    meta = json.loads(str(data["__meta__"]))
                return arrays, meta, True
            arrays, meta = produce()
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{key}.", suffix=".npz")
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.savez(fh, __meta__=np.array(json.dumps(meta, default=str)), **arrays)
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
            return arrays, meta, False
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
