"""L3's timing and capacity model: the GPU runs the weight GEMMs, DIMM-PIM holds every
KV cache and runs decode attention, per-token Q/K/V and outputs cross PCIe.

Action counts per iteration, from the trace (:class:`harness.serving.Batch`), times
per-device rates from the config:

* PIM attention: KV bytes / (channels x DIMMs x ranks x chips x banks x per-bank
  bandwidth x ``pim_efficiency``); every bank streams its share of K (all-bank GEMV
  of K.q) and V (accumulator mode) once per iteration. Without in-flight re-layout
  (``relayout=false``) the bank units cannot see whole FP16 elements, so attention
  falls back to rank-level units at the channel's burst bandwidth per rank.
* One rankset per channel communicates at a time: while the link writes a
  sub-batch's Q/K/V or reads its outputs, that rankset's units stall, i.e. PIM loses
  ``transfer time / ranksets`` of work (the ~75% availability of 4 ranksets).
* PCIe: ``io_bytes_per_request`` per decode token (and the prefill chunk's KV,
  moved asynchronously) over each GPU's link.
* The scheduler splits the batch into ``sub_batches`` (2) and overlaps one
  sub-batch's GEMMs with the other's PIM attention (:func:`harness.serving.pipeline`).

DIMM scaling (experiment b): ``dimm_scale`` multiplies the DIMMs' capacity and PIM
bandwidth together (``joint``, more DIMMs), or only the bandwidth (``bandwidth``:
faster DIMMs of the same size), or only the capacity (``capacity``: bigger DIMMs).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from harness.serving import (
    GB,
    SUB_BATCHES,
    Batch,
    CpuOffloadConfig,
    GpuConfig,
    HbmPimConfig,
    HostMemoryConfig,
    Iteration,
    cpu_offload_cost,
    gemm_seconds,
    gpu_only_cost,
    gpus_for,
    hbm_pim_cost,
    prefill_attention_seconds,
    schedule,
    shared_fields,
)
from harness.validation import valid

__all__ = ["L3Config", "SCALINGS", "capacity_and_bandwidth", "l3_cost", "l3_iteration"]

SCALINGS = ("joint", "bandwidth", "capacity")


@dataclass
class L3Config(GpuConfig, HostMemoryConfig):
    """DIMM-PIM geometry and rates (GPU and host fields: :mod:`harness.serving`).

    ``banks_per_chip`` 16 and ``chips_per_rank`` 8: a DDR4 x8 device has 4 bank groups
    of 4 banks and a 64-bit rank has 8 of them (JEDEC JESD79-4; the ECC chip carries no
    data). ``bank_gbs`` 1.6 GB/s: one 8-byte column (x8, burst 8) per tCCD_L = 5 ns at
    DDR4-3200 [inferred: a bank unit streams at the column rate]. ``pim_efficiency``
    [inferred] sustained/peak of the bank units (row switches, softmax exchange).
    ``ranksets_per_channel`` 0: every rank is a rankset (2 DIMMs x 2 ranks = 4).
    """

    banks_per_chip: int = field(default=16, metadata=valid(ge=1, le=64))
    chips_per_rank: int = field(default=8, metadata=valid(ge=1, le=32))
    bank_gbs: float = field(default=1.6, metadata=valid(gt=0, why="[inferred] per-bank unit bandwidth, GB/s"))
    pim_efficiency: float = field(default=0.85, metadata=valid(gt=0, le=1, why="[inferred]"))
    ranksets_per_channel: int = field(default=0, metadata=valid(ge=0, le=64, why="0 = one per rank"))
    relayout: bool = True
    sub_batches: int = field(default=2, metadata=valid(ge=1, le=2, why=SUB_BATCHES))
    dimm_scaling: str = field(default="joint", metadata=valid(one_of=SCALINGS))
    dimm_scale: float = field(default=1.0, metadata=valid(ge=0.125, le=64))
    #: price GPU-only, HBM-PIM and CPU offload on the same trace (their default
    #: configs with this run's GPU and host fields) and report L3's gains over them.
    compare: bool = True


def capacity_and_bandwidth(cfg: L3Config) -> tuple[float, float]:
    """(KV capacity in bytes, PIM attention bandwidth in bytes/s) after DIMM scaling."""
    cap_scale = cfg.dimm_scale if cfg.dimm_scaling in ("joint", "capacity") else 1.0
    bw_scale = cfg.dimm_scale if cfg.dimm_scaling in ("joint", "bandwidth") else 1.0
    ranks = cfg.channels * cfg.dimms_per_channel * cfg.ranks_per_dimm
    per_rank = cfg.chips_per_rank * cfg.banks_per_chip * cfg.bank_gbs if cfg.relayout else cfg.channel_gbs
    return cfg.host_gb * GB * cap_scale, ranks * per_rank * GB * cfg.pim_efficiency * bw_scale


def l3_iteration(batch: Batch, cfg: L3Config) -> Iteration:
    gpus = gpus_for(batch, cfg)
    hbm = cfg.gpu_hbm_gb * GB * gpus
    if batch.gemm_weight_bytes > hbm:
        raise ValueError(f"the model's weights ({batch.gemm_weight_bytes / GB:.1f} GB) do not fit in {gpus} GPU(s) "
                         f"of {cfg.gpu_hbm_gb:g} GB; set accelerator.gpus to more GPUs, or 0 to choose enough")
    capacity, pim_bw = capacity_and_bandwidth(cfg)
    max_batch = batch.max_batch(capacity, cfg.max_batch_limit)
    if max_batch == 0 and batch.kv_bytes_per_request > 0:
        raise ValueError(f"not one request fits: {batch.kv_bytes_per_request / GB:.2f} GB of KV cache per request "
                         f"against {capacity / GB:.1f} GB of DIMM-PIM")
    n, fits = batch.served(max_batch)
    pcie = cfg.pcie_gbs * GB * cfg.pcie_efficiency * gpus
    ranksets = cfg.ranksets_per_channel or cfg.dimms_per_channel * cfg.ranks_per_dimm

    def stages(s):
        g = gemm_seconds(batch, n / s, cfg, gpus, batch.prefill_chunk / s) + prefill_attention_seconds(batch, cfg, gpus) / s
        c = ((n / s) * batch.io_bytes_per_request + batch.prefill_chunk / s * batch.kv_bytes_per_token) / pcie
        p = (n / s) * batch.kv_bytes_per_request / pim_bw
        return g, (p + c / ranksets if p else 0.0), c  # the communicating rankset's units stall

    t, exposed, s, g, p, c = schedule(n, cfg.sub_batches, stages)
    stall = c / ranksets if p else 0.0
    extra = {
        "accelerator/pim_bandwidth_gbs": pim_bw / GB,
        "accelerator/pcie_ms": 1e3 * s * c,
        "accelerator/rankset_stall_ms": 1e3 * s * stall,
        "accelerator/sub_batches": float(s),
    }
    return Iteration(t, n, max_batch, fits, s * g, s * p, exposed, s * p, capacity, gpus, extra)


def l3_cost(batch: Batch, cfg: L3Config) -> dict[str, float]:
    """L3's metrics, and with ``compare`` its gains over the three reference systems."""
    it = l3_iteration(batch, cfg)
    out = it.metrics()
    if cfg.dimm_scale != 1.0:
        base = l3_iteration(batch, replace(cfg, dimm_scale=1.0))
        out["accelerator/scaling_gain"] = it.tokens_per_s / base.tokens_per_s if base.tokens_per_s else 0.0
    else:
        out["accelerator/scaling_gain"] = 1.0
    if not cfg.compare:
        return out
    baselines = {
        "gpu_only": lambda: gpu_only_cost(batch, shared_fields(cfg, GpuConfig)),
        "hbm_pim": lambda: hbm_pim_cost(batch, shared_fields(cfg, HbmPimConfig)),
        "cpu_offload": lambda: cpu_offload_cost(batch, shared_fields(cfg, CpuOffloadConfig)),
    }
    for name, price in baselines.items():
        try:
            other = price()
        except ValueError:  # nothing fits on that system: no ratio to report
            continue
        if other.tokens_per_s:
            out[f"accelerator/speedup_vs_{name}"] = it.tokens_per_s / other.tokens_per_s
        if other.max_batch:
            out[f"accelerator/batch_gain_vs_{name}"] = it.max_batch / other.max_batch
        if name == "gpu_only" and other.batch:
            # Time between tokens at the GPU-only system's own batch.
            same = l3_iteration(replace(batch, size=other.batch, policy="fixed"), cfg)
            out["accelerator/tbt_vs_gpu_only"] = same.seconds / other.seconds
    return out

