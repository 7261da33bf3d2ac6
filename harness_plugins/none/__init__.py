"""``none``: the technique that leaves the workload as it was built.

It is the baseline column of every sweep: ``technique=none,admm`` puts the
uncompressed model next to the compressed one.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import hookimpl
from harness.specs import TechniqueSpec


@dataclass
class NoneConfig:
    """No knobs."""


class Identity:
    def __init__(self, config: NoneConfig):
        self.config = config

    def apply(self, subject, workload, ctx):
        return subject


@hookimpl
def harness_techniques():
    yield TechniqueSpec(
        name="none",
        summary="Leave the workload as it is (the baseline)",
        config=NoneConfig,
        factory=Identity,
        cache_result=False,  # nothing computed, nothing to cache
    )
