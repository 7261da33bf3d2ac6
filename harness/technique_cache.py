"""Compute a technique's result once per identity, reuse it across accelerators.

A technique's result (the transformed subject, and what the technique logged
while producing it) depends only on the workload and its config, the technique
and its config, the seed, and the code: those two plugins' and the harness's
training substrate (:mod:`harness.code_digest`). A co-design sweep
over N accelerators therefore needs each technique result once, not N times.

The key hashes exactly that identity; the code enters as digests of its source
files, so editing a plugin or the training substrate invalidates the entries
instead of serving stale results. Entries are pickles under
``<cache_dir>/techniques/<key>.pkl``, written atomically under a lock
(:mod:`harness.cache`): jobs asking for the same entry compute it once, the
others wait and reuse it; a retry after a crash recomputes a missing entry.

What the technique logged is replayed into the run's record on a hit: metrics
(``perf/`` wall-clock ones included, as measured when it was computed), series,
artifacts and tags, plus the tag ``harness.technique_cache=hit``.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any, Callable, Mapping

from harness.cache import cached_entry
from harness.code_digest import substrate_digest
from harness.record import Record

__all__ = ["FORMAT_VERSION", "NAMESPACE", "cached_apply", "technique_key"]

#: Bump when the entry layout changes.
FORMAT_VERSION = 1
NAMESPACE = "techniques"


def technique_key(choices: Mapping[str, str], params: Mapping[str, Mapping[str, Any]], seed: int,
                  code: Mapping[str, str]) -> str:
    """The identity of a technique result (no accelerator in it)."""
    blob = json.dumps(
        {
            "workload": [choices["workload"], dict(params["workload"])],
            "technique": [choices["technique"], dict(params["technique"])],
            "seed": int(seed),
            "code": dict(code),
            "substrate": substrate_digest(),
            "v": FORMAT_VERSION,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _snapshot(record: Record) -> dict[str, Any]:
    return {
        "metrics": dict(record.metrics),
        "series": {k: list(v) for k, v in record.series.items()},
        "artifacts": set(record.artifacts),
        "tags": dict(record.tags),
    }


def _delta(record: Record, before: dict[str, Any]) -> dict[str, Any]:
    """What was logged since ``before``."""
    return {
        "metrics": {k: v for k, v in record.metrics.items() if before["metrics"].get(k) != v},
        "series": {k: v for k, v in record.series.items() if before["series"].get(k) != v},
        "artifacts": {k: v for k, v in record.artifacts.items() if k not in before["artifacts"]},
        "tags": {k: v for k, v in record.tags.items() if before["tags"].get(k) != v},
    }


def cached_apply(cache_dir: str | Path, key: str, record: Record, apply: Callable[[], Any]) -> tuple[Any, bool]:
    """``(subject, hit)``: the cached result for ``key``, replayed into ``record``,
    or ``apply()`` run now and stored with what it logged."""
    before = _snapshot(record)

    def produce():
        subject = apply()
        return subject, _delta(record, before)

    def load(path: Path):
        with open(path, "rb") as fh:
            return pickle.load(fh)

    def save(value, fh) -> None:
        pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)

    (subject, logged), hit = cached_entry(cache_dir, NAMESPACE, key, ".pkl", load, produce, save)
    if hit:
        record.metrics.update(logged["metrics"])
        record.series.update(logged["series"])
        record.artifacts.update(logged["artifacts"])
        record.tags.update(logged["tags"])
    record.tags["harness.technique_cache"] = "hit" if hit else "miss"
    return subject, hit
