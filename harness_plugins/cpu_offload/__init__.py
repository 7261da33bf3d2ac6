"""``cpu_offload``: KV caches in the host's DIMMs, weights on the GPU (FlexGen style).

Capacity is the host's DIMMs (16 channels x 2 x 128 GB by default, as L3's host).
``attention_on=cpu`` (default): the host computes decode attention at its DRAM
bandwidth (``channels x 25.6 GB/s x host_bw_efficiency`` [inferred 0.7]) and only
per-token Q/K/V and outputs cross PCIe; ``attention_on=pcie``: every iteration
streams the KV caches over PCIe to the GPU. GPU and host overlap over two
sub-batches when that pays. Model and sourced defaults:
:class:`harness.serving.CpuOffloadConfig`, :func:`harness.serving.cpu_offload_cost`.
"""

from __future__ import annotations

from harness import hookimpl
from harness.serving import CpuOffloadConfig, cpu_offload_cost
from harness.specs import AcceleratorSpec, PaperRef

FLEXGEN = PaperRef(
    title="FlexGen: High-Throughput Generative Inference of Large Language Models with a Single GPU",
    authors="Sheng, Zheng, Yuan et al.",
    venue="ICML",
    year=2023,
    arxiv="2303.06865",
)


class CpuOffload:
    numerics = None

    def __init__(self, config: CpuOffloadConfig):
        self.config = config

    def cost(self, trace, ctx) -> dict[str, float]:
        return cpu_offload_cost(trace, self.config).metrics()


@hookimpl
def harness_accelerators():
    yield AcceleratorSpec(
        name="cpu_offload",
        summary="LLM decode with KV caches in host DIMMs (FlexGen-style CPU attention, or KV over PCIe)",
        config=CpuOffloadConfig,
        factory=CpuOffload,
        paper=FLEXGEN,
        needs={"memory_ops"},  # decode attention with KV-cache bytes: a serving trace
        headline=("accelerator/tokens_per_s", "accelerator/max_batch", "accelerator/tbt_ms"),
    )
