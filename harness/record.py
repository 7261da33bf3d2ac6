"""One run's result, as plain data.

A :class:`Record` is what the runner produces and what tracking writes. It holds
no handles to files, servers or plugins, so it pickles: a Ray job returns it to
the driver, which is the single writer to the tracking store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Record", "FINISHED", "FAILED", "KILLED"]

FINISHED = "FINISHED"
FAILED = "FAILED"
KILLED = "KILLED"  # interrupted (Ctrl-C): what was measured so far, never mistaken for complete


@dataclass
class Record:
    """Params, metrics, curves, artifacts and tags of one run."""

    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    artifacts: dict[str, bytes] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    status: str = FINISHED
    error: str | None = None
    start_ms: int = 0
    end_ms: int = 0

    @property
    def config_hash(self) -> str:
        return self.tags.get("harness.config_hash", "")
