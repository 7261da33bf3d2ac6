"""Train-once caching of base models, safe across concurrent jobs.

A cache entry is an ``.npz`` file under ``<cache_dir>/<namespace>/<key>.npz`` where
``key`` hashes everything that determines the trained weights: the workload config
without its evaluation-only fields, the seed, the code (the caller's plugin source
and the harness's training substrate, :mod:`harness.code_digest`) and the entry
format's version. Locking and
atomic writes are :mod:`harness.cache`'s: two jobs asking for the same model train
it once, and a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable

import numpy as np

from harness.cache import cached_entry
from harness.code_digest import substrate_digest

__all__ = ["cache_key", "cached_state"]

#: Bump when the layout of stored models changes, to invalidate old entries.
FORMAT_VERSION = 1


def cache_key(namespace: str, config: dict[str, Any], seed: int, code: tuple[str, ...] = ()) -> str:
    """The entry's key; ``code``: digests of the caller's own source
    (:func:`harness.code_digest.source_digest`), the substrate's is always in."""
    blob = json.dumps({"ns": namespace, "config": config, "seed": int(seed), "v": FORMAT_VERSION,
                       "code": [substrate_digest(), *code]}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cached_state(cache_dir: str | os.PathLike, namespace: str, key: str,
                 produce: Callable[[], tuple[dict[str, np.ndarray], dict]]
                 ) -> tuple[dict[str, np.ndarray], dict, bool]:
    """Load ``(arrays, meta)`` for ``key``, or call ``produce()`` and store its result.

    Returns ``(arrays, meta, hit)``. ``meta`` must be JSON-serializable.
    """

    def load(path):
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k != "__meta__"}
            return arrays, json.loads(str(data["__meta__"]))

    def save(value, fh):
        arrays, meta = value
        np.savez(fh, __meta__=np.array(json.dumps(meta, default=str)), **arrays)

    (arrays, meta), hit = cached_entry(cache_dir, namespace, key, ".npz", load, produce, save)
    return arrays, meta, hit
