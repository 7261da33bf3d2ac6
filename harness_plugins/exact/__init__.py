"""``exact``: reference numerics, the baseline every accelerator is compared with.

Float operands go through float32 BLAS; integer codes (a quantized workload) get
the exact integer product. Its cost "model" only counts work: it reports the MACs
of the op trace, dense and with zeros skipped, so a technique's savings are visible
even before a hardware model is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import hookimpl
from harness.numerics.backend import EXACT
from harness.specs import AcceleratorSpec


@dataclass
class ExactConfig:
    """No knobs: exact arithmetic has no operating point."""


class ExactAccelerator:
    numerics = EXACT

    def __init__(self, config: ExactConfig):
        self.config = config

    def cost(self, trace, ctx) -> dict[str, float]:
        return {
            "accelerator/macs": float(trace.macs),
            "accelerator/nonzero_macs": float(trace.nonzero_macs),
        }


@hookimpl
def harness_accelerators():
    yield AcceleratorSpec(
        name="exact",
        summary="Reference numerics: float32 BLAS, exact integer products",
        config=ExactConfig,
        factory=ExactAccelerator,
    )
