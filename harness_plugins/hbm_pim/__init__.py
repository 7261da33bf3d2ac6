"""``hbm_pim``: decode attention in HBM-PIM next to the GPU (AttAcc / NeuPIMs style).

Bank-level PIM in the GPU's own HBM stacks runs decode attention at
``pim_bw_multiplier`` [inferred, 4x] times the external HBM bandwidth; the GEMMs of
one sub-batch overlap the PIM attention of the other (the scheduler splits only when
that pays). Weights and KV caches share the HBM, so the batch is capacity-bound
exactly as on the GPU alone: at long contexts a handful of requests fit, the GEMMs
re-read all weights for them, and the PIM bandwidth sits partly idle. Model and
sourced defaults: :class:`harness.serving.HbmPimConfig`,
:func:`harness.serving.hbm_pim_cost`. Claims: none of its own (it is the L3 paper's
baseline; L3's speed-up over it is ``l3_dimm_pim``'s claim).
"""

from __future__ import annotations

from harness import hookimpl
from harness.serving import HbmPimConfig, hbm_pim_cost
from harness.specs import AcceleratorSpec, PaperRef

ATTACC = PaperRef(
    title="AttAcc! Unleashing the Power of PIM for Batched Transformer-based Generative Model Inference",
    authors="Park, Choi, Kim et al.",
    venue="ASPLOS",
    year=2024,
)


class HbmPim:
    numerics = None

    def __init__(self, config: HbmPimConfig):
        self.config = config

    def cost(self, trace, ctx) -> dict[str, float]:
        return hbm_pim_cost(trace, self.config).metrics()


@hookimpl
def harness_accelerators():
    yield AcceleratorSpec(
        name="hbm_pim",
        summary="LLM decode with attention in HBM-PIM beside the GPU (AttAcc-style); capacity-bound batch",
        config=HbmPimConfig,
        factory=HbmPim,
        paper=ATTACC,
        needs={"memory_ops"},  # decode attention with KV-cache bytes: a serving trace
        headline=("accelerator/tokens_per_s", "accelerator/max_batch", "accelerator/tbt_ms"),
    )
