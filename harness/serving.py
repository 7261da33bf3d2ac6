"""Shared core for LLM-serving cost models: a decode trace read as a batch, and the
reference systems every serving accelerator is compared with.

A serving workload (``subject:serving``, e.g. ``llm_decode``) hands a cost model one
decode iteration as an op trace: per layer the weight GEMMs with ``m = batch`` and
one ``decode_attention`` op per request carrying its KV-cache bytes. :class:`Batch`
reads that trace once into what a serving model charges for (weights, per-request
KV and per-token traffic, GEMM shapes) and can be rescaled to another batch size,
which is how a system admits "as many requests as fit" (trace attribute
``serving.batch_policy = "fit"``, :mod:`harness.optrace`).

The baseline systems live here rather than in their plugin folders because the
``l3_dimm_pim`` accelerator prices all of them on the same trace to report its
speed-ups in-run, and a plugin does not import another plugin. Their plugins
(``gpu_only``, ``hbm_pim``, ``cpu_offload``) are the spec, the docs and the claims
around :func:`gpu_only_cost`, :func:`hbm_pim_cost` and :func:`cpu_offload_cost`.

Time model (a roofline per device, the analytic form of Vidur/LLMCompass-style
simulators; every efficiency is an [inferred] config field):

* a GEMM on the GPU takes ``max(FLOPs / (peak * gemm_efficiency), weight bytes /
  (HBM bandwidth * bw_efficiency))``; tensor parallelism over ``gpus`` divides both
  (no all-reduce cost);
* memory-bound attention takes ``KV bytes / (bandwidth * efficiency)`` on whatever
  memory holds the KV cache;
* two devices with a link between them run the two-sub-batch schedule of
  :func:`pipeline`: the GPU works on one sub-batch while the memory side runs
  attention for the other.

Units: bytes, seconds, decimal GB (1e9 bytes) and GB/s, as datasheets give them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, replace
from typing import Mapping

import numpy as np

from harness.optrace import OpTrace
from harness.validation import valid

__all__ = [
    "GB",
    "SUB_BATCHES",
    "Batch",
    "CpuOffloadConfig",
    "GpuConfig",
    "HbmPimConfig",
    "HostMemoryConfig",
    "Iteration",
    "cpu_offload_cost",
    "gemm_seconds",
    "gpu_only_cost",
    "gpus_for",
    "hbm_pim_cost",
    "pipeline",
    "prefill_attention_seconds",
    "schedule",
    "shared_fields",
    "simulate_pipeline",
]

GB = 1e9
#: Why at most two: :func:`pipeline`'s closed form is exact for one or two sub-batches.
SUB_BATCHES = "1 (no overlap) or 2 (GEMMs of one overlap the attention of the other)"
_REQUEST = re.compile(r"r(\d+)$")


# -- the trace as a batch ----------------------------------------------------------------------

@dataclass(frozen=True)
class Batch:
    """One decode iteration of ``size`` requests, per request where it scales with them.

    ``gemm_shapes`` and ``gemm_weight_bytes`` describe the trace's weight GEMMs (their
    FLOPs grow with the batch, their weight reads do not); ``kv_bytes_per_request`` is the mean KV cache a request reads in one iteration
    (all layers); ``io_bytes_per_request`` what one request's new token moves between
    a GPU and a memory that runs attention (per layer: Q in, the new K and V in, the
    attention output back); ``kv_bytes_per_token`` one token's K and V in all layers.
    """

    size: int
    gemm_weight_bytes: float
    #: per GEMM op: (k, n, count, weight bytes, activation bytes in and out per request)
    gemm_shapes: tuple[tuple[int, int, int, float, float], ...]
    #: FLOPs of activation-by-activation ops (``attention`` kind: prefill-style), run on the GPU as given
    other_gpu_flops: float
    kv_bytes_per_request: float
    io_bytes_per_request: float
    kv_bytes_per_token: float
    attention_flops_per_request: float
    elementwise_bytes_per_request: float
    mean_context: float
    policy: str = "fixed"
    prefill_chunk: int = 0

    @classmethod
    def from_trace(cls, trace: OpTrace) -> "Batch":
        """Read a decode trace. Any trace works: without decode-attention ops the batch
        has no KV cache, and the batch size is the largest GEMM ``m`` (1 without GEMMs)."""
        gemms = [op for op in trace if op.kind == "gemm"]
        attn = [op for op in trace if op.kind == "decode_attention"]
        size = max((op.m for op in gemms), default=1) or 1
        per_request: dict[str, list] = {}
        for i, op in enumerate(attn):
            match = _REQUEST.search(op.name.rsplit(".", 1)[-1])
            per_request.setdefault(match.group(1) if match else str(i), []).append(op)
        requests = max(len(per_request), 1)
        kv = sum(op.kv_cache_bytes for op in attn)
        contexts = [max(op.n for op in ops) for ops in per_request.values()]
        token_kv = sum(op.kv_cache_bytes / op.n for op in attn if op.n)  # one new token's K, V
        io = sum(op.input_bytes + op.output_bytes for op in attn) + token_kv
        elementwise = sum(op.input_bytes + op.output_bytes for op in trace if op.kind == "elementwise")
        return cls(
            size=size,
            gemm_weight_bytes=sum(op.weight_bytes for op in gemms),
            gemm_shapes=tuple((op.k, op.n, op.count, op.weight_bytes, (op.input_bytes + op.output_bytes) / size)
                              for op in gemms),
            other_gpu_flops=float(sum(op.flops for op in trace if op.kind == "attention")),
            kv_bytes_per_request=kv / requests,
            io_bytes_per_request=io / requests,
            kv_bytes_per_token=token_kv / requests,
            attention_flops_per_request=sum(op.flops for op in attn) / requests,
            elementwise_bytes_per_request=elementwise / size,
            mean_context=float(np.mean(contexts)) if contexts else 0.0,
            policy=str(trace.attrs.get("serving.batch_policy", "fixed")),
            prefill_chunk=int(trace.attrs.get("serving.prefill_chunk", 0)),
        )

    def max_batch(self, kv_capacity_bytes: float, limit: int) -> int:
        """Requests whose KV caches fit in ``kv_capacity_bytes`` (at the trace's mean
        per-request KV), at most ``limit``; ``limit`` when there is no KV cache."""
        if kv_capacity_bytes <= 0:
            return 0
        if self.kv_bytes_per_request <= 0:
            return limit
        return int(min(limit, math.floor(kv_capacity_bytes / self.kv_bytes_per_request * (1 + 1e-12))))

    def served(self, max_batch: int) -> tuple[int, bool]:
        """(requests decoded together, whether the workload's batch fits): "fit" takes
        ``max_batch``; a fixed batch larger than ``max_batch`` is served ``max_batch`` at
        a time (the rest wait) and reported as not fitting."""
        if self.policy == "fit":
            return max_batch, True
        return min(self.size, max_batch), self.size <= max_batch


# -- hardware configs shared by the systems ---------------------------------------------------

@dataclass
class GpuConfig:
    """The GPU(s) that run the weight GEMMs. Defaults: NVIDIA A100 80GB SXM (NVIDIA A100
    Tensor Core GPU datasheet, 2021: 80 GB HBM2e at 2,039 GB/s, 312 TFLOPS dense
    FP16/BF16 tensor). H100 SXM: 80 GB, 3,350 GB/s, 989 TFLOPS (H100 datasheet, 2023).
    The two efficiencies are [inferred] sustained fractions of peak."""

    gpu_hbm_gb: float = field(default=80.0, metadata=valid(gt=0, why="HBM per GPU, decimal GB"))
    gpu_hbm_gbs: float = field(default=2039.0, metadata=valid(gt=0, why="HBM bandwidth per GPU, GB/s"))
    gpu_tflops: float = field(default=312.0, metadata=valid(gt=0, why="dense FP16 tensor TFLOPS per GPU"))
    #: GPUs holding the weights (tensor parallel); 0: the fewest of 1, 2, 4, 8, ... whose
    #: HBM holds the weights at most ``auto_weight_share`` full (a DGX-A100 has 8).
    gpus: int = field(default=0, metadata=valid(ge=0, le=64))
    auto_weight_share: float = field(default=0.6, metadata=valid(gt=0, le=1))
    gemm_efficiency: float = field(default=0.7, metadata=valid(gt=0, le=1, why="[inferred] sustained/peak FLOPS"))
    bw_efficiency: float = field(default=0.85, metadata=valid(gt=0, le=1, why="[inferred] sustained/peak HBM bandwidth"))
    #: Scheduler ceiling on requests per batch (a sanity bound, not a memory limit).
    max_batch_limit: int = field(default=65536, metadata=valid(ge=1))


@dataclass
class HostMemoryConfig:
    """The host's DDR4 DIMMs and the PCIe link to each GPU. Defaults: 16 DDR4-3200
    channels x 2 DIMMs (the L3 paper's host, read from a paper note), 128 GB RDIMMs
    with 2 ranks [inferred: the DIMM size the paper's 14.3x batch figure implies for
    GPT-3 175B on a DGX-A100], 25.6 GB/s per channel (JEDEC DDR4-3200: 3200 MT/s x 8 B),
    PCIe 4.0 x16 at 32 GB/s per direction (PCI-SIG) per GPU, derated by ``pcie_efficiency``."""

    channels: int = field(default=16, metadata=valid(ge=1, le=1024))
    dimms_per_channel: int = field(default=2, metadata=valid(ge=1, le=64))
    dimm_gb: float = field(default=128.0, metadata=valid(gt=0))
    ranks_per_dimm: int = field(default=2, metadata=valid(ge=1, le=8))
    channel_gbs: float = field(default=25.6, metadata=valid(gt=0, why="DDR4-3200: 25.6 GB/s per channel"))
    pcie_gbs: float = field(default=32.0, metadata=valid(gt=0, why="PCIe 4.0 x16: 32 GB/s per direction"))
    pcie_efficiency: float = field(default=0.8, metadata=valid(gt=0, le=1, why="[inferred] sustained/peak PCIe"))

    @property
    def host_gb(self) -> float:
        return self.channels * self.dimms_per_channel * self.dimm_gb


def shared_fields(source, target_type: type):
    """``target_type()`` with the GPU and host fields (:class:`GpuConfig`,
    :class:`HostMemoryConfig`) that ``source`` also has copied from it: how one system
    prices a baseline on the same GPU and host, with the baseline's own other defaults."""
    hardware = {f.name for f in fields(GpuConfig)} | {f.name for f in fields(HostMemoryConfig)}
    names = {f.name for f in fields(target_type)} & {f.name for f in fields(source)} & hardware
    return replace(target_type(), **{n: getattr(source, n) for n in names})


def gpus_for(batch: Batch, gpu: GpuConfig) -> int:
    """The GPU count: ``gpu.gpus``, or with 0 the fewest power of two whose HBM holds
    the weights at most ``auto_weight_share`` full."""
    if gpu.gpus:
        return gpu.gpus
    count = 1
    while batch.gemm_weight_bytes > gpu.auto_weight_share * count * gpu.gpu_hbm_gb * GB and count < 64:
        count *= 2
    return count


def gemm_seconds(batch: Batch, requests: float, gpu: GpuConfig, gpus: int, tokens: float = 0.0) -> float:
    """The weight GEMMs of one iteration for ``requests`` decode tokens (plus ``tokens``
    prefill tokens through the same GEMMs), each op on the roofline."""
    peak = gpu.gpu_tflops * 1e12 * gpu.gemm_efficiency * gpus
    bw = gpu.gpu_hbm_gbs * GB * gpu.bw_efficiency * gpus
    rows = requests + tokens
    total = 0.0
    for k, n, count, weight_bytes, act_bytes in batch.gemm_shapes:
        total += max(2.0 * rows * k * n * count / peak, (weight_bytes + rows * act_bytes) / bw)
    return total + rows * batch.elementwise_bytes_per_request / bw + batch.other_gpu_flops / peak


def prefill_attention_seconds(batch: Batch, gpu: GpuConfig, gpus: int) -> float:
    """Attention of a prefill chunk against its own prefix (half the mean context on
    average), compute-bound on the GPU."""
    if not batch.prefill_chunk or not batch.mean_context:
        return 0.0
    flops_per_context_token = batch.attention_flops_per_request / batch.mean_context
    flops = batch.prefill_chunk * (batch.mean_context / 2) * flops_per_context_token
    return flops / (gpu.gpu_tflops * 1e12 * gpu.gemm_efficiency * gpus)


# -- the schedule of two devices ----------------------------------------------------------------

@dataclass(frozen=True)
class Iteration:
    """One decode iteration on a system; :meth:`metrics` names what every serving
    accelerator reports."""

    seconds: float
    batch: int
    max_batch: int
    fits: bool
    gpu_busy: float  # seconds the GPU computes
    memory_busy: float  # seconds the KV-holding memory computes attention (GPU-only: 0)
    exposed_comm: float  # seconds of the iteration spent waiting for transfers only
    attention: float  # seconds of attention work (on whichever device)
    kv_capacity_bytes: float
    gpus: int
    extra: Mapping[str, float] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.batch / self.seconds if self.seconds > 0 else 0.0

    def metrics(self) -> dict[str, float]:
        t = self.seconds
        out = {
            "accelerator/tokens_per_s": self.tokens_per_s,
            "accelerator/tbt_ms": 1e3 * t,
            "accelerator/batch": float(self.batch),
            "accelerator/max_batch": float(self.max_batch),
            "accelerator/fits": float(self.fits),
            "accelerator/gpu_idle_fraction": 1.0 - min(1.0, self.gpu_busy / t) if t else 1.0,
            "accelerator/memory_idle_fraction": 1.0 - min(1.0, self.memory_busy / t) if t and self.memory_busy else 1.0,
            "accelerator/exposed_comm_ms": 1e3 * self.exposed_comm,
            "accelerator/exposed_comm_fraction": self.exposed_comm / t if t else 0.0,
            "accelerator/attention_fraction": self.attention / t if t else 0.0,
            "accelerator/kv_capacity_gb": self.kv_capacity_bytes / GB,
            "accelerator/gpus": float(self.gpus),
        }
        out.update(self.extra)
        return out


def pipeline(gpu: float, memory: float, link: float, sub_batches: int) -> tuple[float, float]:
    """(iteration seconds, of which exposed communication) when each of ``sub_batches``
    equal sub-batches needs ``gpu`` seconds of GPU work, ``link`` seconds of transfers
    and ``memory`` seconds of attention per iteration, layer after layer.

    With one sub-batch the three run one after the other. With two the GPU works on
    one sub-batch while the memory side runs the other's attention: the steady period
    is bounded by each resource's total (``2 * x``) and by one sub-batch's own chain
    ``gpu + link + memory`` (its layers depend on each other), and a greedy schedule
    reaches that bound (:func:`simulate_pipeline` is the reference).
    """
    if sub_batches <= 1:
        return gpu + link + memory, link
    s = sub_batches
    period = max(s * gpu, s * memory, s * link, gpu + link + memory)
    compute_only = max(s * gpu, s * memory, gpu + memory)
    return period, period - compute_only


def simulate_pipeline(gpu: float, memory: float, link: float, sub_batches: int, layers: int = 200) -> float:
    """The reference for :func:`pipeline`: an event simulation of ``sub_batches`` jobs,
    each running ``layers`` times the chain GPU -> link -> memory (per-layer shares of
    the given seconds), on three resources that serve one job at a time, the job that
    can start earliest first. Returns the iteration's seconds. :func:`pipeline`'s
    closed form agrees with it to within a layer's fill and drain for one or two
    sub-batches (tests/test_l3_dimm_pim.py), the only splits the systems use."""
    chain = [("gpu", gpu / layers), ("link", link / layers), ("memory", memory / layers)]
    free = {"gpu": 0.0, "link": 0.0, "memory": 0.0}
    ready = [0.0] * sub_batches
    step = [0] * sub_batches
    for _ in range(sub_batches * layers * 3):
        start, job, res, dur = min(
            (max(ready[j], free[chain[step[j] % 3][0]]), j, *chain[step[j] % 3])
            for j in range(sub_batches) if step[j] < layers * 3
        )
        free[res] = ready[job] = start + dur
        step[job] += 1
    return max(ready)


def schedule(n: int, sub_batches: int, stages) -> tuple[float, float, int, float, float, float]:
    """The fastest split of ``n`` requests into 1..``sub_batches`` sub-batches: the
    adaptive scheduler [inferred: it splits only when overlap pays for re-reading the
    weights once per sub-batch]. ``stages(s)`` gives one sub-batch's ``(gpu, memory,
    link)`` seconds; returns ``(seconds, exposed comm, s, gpu, memory, link)``."""
    best = None
    for s in range(1, max(1, min(sub_batches, n)) + 1):
        g, p, c = stages(s)
        t, exposed = pipeline(g, p, c, s)
        if best is None or t < best[0] * (1 - 1e-9):
            best = (t, exposed, s, g, p, c)
    return best


# -- the reference systems ---------------------------------------------------------------------

def _weights_fit(batch: Batch, capacity_bytes: float, where: str) -> None:
    if batch.gemm_weight_bytes > capacity_bytes:
        raise ValueError(
            f"the model's weights ({batch.gemm_weight_bytes / GB:.1f} GB) do not fit in {where} "
            f"({capacity_bytes / GB:.1f} GB); set accelerator.gpus to more GPUs, or 0 to choose enough"
        )


def _no_request_fits(batch: Batch, capacity_bytes: float, where: str) -> ValueError:
    return ValueError(
        f"not one request fits: {batch.kv_bytes_per_request / GB:.2f} GB of KV cache per request "
        f"(mean context {batch.mean_context:.0f} tokens) against {capacity_bytes / GB:.2f} GB free in {where}"
    )


def gpu_only_cost(trace_or_batch, gpu: GpuConfig) -> Iteration:
    """Everything on the GPU(s): weights and KV caches share HBM; per iteration the GEMMs,
    then decode attention reading every KV cache from HBM (vLLM-style, no overlap)."""
    b = trace_or_batch if isinstance(trace_or_batch, Batch) else Batch.from_trace(trace_or_batch)
    gpus = gpus_for(b, gpu)
    hbm = gpu.gpu_hbm_gb * GB * gpus
    _weights_fit(b, hbm, f"{gpus} GPU(s) of {gpu.gpu_hbm_gb:g} GB")
    capacity = hbm - b.gemm_weight_bytes
    max_batch = b.max_batch(capacity, gpu.max_batch_limit)
    if max_batch == 0 and b.kv_bytes_per_request > 0:
        raise _no_request_fits(b, capacity, "GPU HBM")
    n, fits = b.served(max_batch)
    bw = gpu.gpu_hbm_gbs * GB * gpu.bw_efficiency * gpus
    gemm = gemm_seconds(b, n, gpu, gpus, b.prefill_chunk) + prefill_attention_seconds(b, gpu, gpus)
    attention = n * b.kv_bytes_per_request / bw
    t = gemm + attention
    return Iteration(t, n, max_batch, fits, t, 0.0, 0.0, attention, capacity, gpus)


@dataclass
class HbmPimConfig(GpuConfig):
    """HBM-PIM (AttAcc / NeuPIMs style): bank-level PIM in the GPU's own HBM stacks runs
    decode attention; weights and KV caches share the HBM capacity (so the batch is
    capacity-bound exactly as on the GPU alone), and the GEMMs of one sub-batch overlap
    the PIM attention of the other. ``pim_bw_multiplier``: PIM-internal over external
    bandwidth [inferred: 4x, the bank-parallel gain of Samsung's HBM-PIM (Lee et al.,
    ISCA 2021) and AttAcc's HBM-PIM (Park et al., ASPLOS 2024) order of magnitude]."""

    pim_bw_multiplier: float = field(default=4.0, metadata=valid(gt=0, why="[inferred] internal/external bandwidth"))
    sub_batches: int = field(default=2, metadata=valid(ge=1, le=2, why=SUB_BATCHES))


def hbm_pim_cost(trace_or_batch, cfg: HbmPimConfig) -> Iteration:
    b = trace_or_batch if isinstance(trace_or_batch, Batch) else Batch.from_trace(trace_or_batch)
    gpus = gpus_for(b, cfg)
    hbm = cfg.gpu_hbm_gb * GB * gpus
    _weights_fit(b, hbm, f"{gpus} GPU(s) of {cfg.gpu_hbm_gb:g} GB")
    capacity = hbm - b.gemm_weight_bytes
    max_batch = b.max_batch(capacity, cfg.max_batch_limit)
    if max_batch == 0 and b.kv_bytes_per_request > 0:
        raise _no_request_fits(b, capacity, "HBM-PIM")
    n, fits = b.served(max_batch)
    pim_bw = cfg.gpu_hbm_gbs * GB * cfg.bw_efficiency * cfg.pim_bw_multiplier * gpus

    def stages(s):
        g = gemm_seconds(b, n / s, cfg, gpus, b.prefill_chunk / s) + prefill_attention_seconds(b, cfg, gpus) / s
        return g, (n / s) * b.kv_bytes_per_request / pim_bw, 0.0

    t, exposed, s, g, p, _ = schedule(n, cfg.sub_batches, stages)
    return Iteration(t, n, max_batch, fits, s * g, s * p, exposed, s * p, capacity, gpus,
                     {"accelerator/sub_batches": float(s)})


@dataclass
class CpuOffloadConfig(GpuConfig, HostMemoryConfig):
    """KV caches in the host's DIMMs (capacity: all of them), weights on the GPU.
    ``attention_on``: ``cpu`` (FlexGen-style: the host computes decode attention at its
    DRAM bandwidth, only per-token Q/K/V and outputs cross PCIe) or ``pcie`` (every
    iteration streams the KV caches over PCIe to the GPU). ``host_bw_efficiency``:
    [inferred] sustained/peak DRAM bandwidth of the host's attention kernels."""

    attention_on: str = field(default="cpu", metadata=valid(one_of=("cpu", "pcie")))
    host_bw_efficiency: float = field(default=0.7, metadata=valid(gt=0, le=1, why="[inferred]"))
    sub_batches: int = field(default=2, metadata=valid(ge=1, le=2, why=SUB_BATCHES))


def cpu_offload_cost(trace_or_batch, cfg: CpuOffloadConfig) -> Iteration:
    b = trace_or_batch if isinstance(trace_or_batch, Batch) else Batch.from_trace(trace_or_batch)
    gpus = gpus_for(b, cfg)
    _weights_fit(b, cfg.gpu_hbm_gb * GB * gpus, f"{gpus} GPU(s) of {cfg.gpu_hbm_gb:g} GB")
    capacity = cfg.host_gb * GB
    max_batch = b.max_batch(capacity, cfg.max_batch_limit)
    if max_batch == 0 and b.kv_bytes_per_request > 0:
        raise _no_request_fits(b, capacity, "host DIMMs")
    n, fits = b.served(max_batch)
    pcie = cfg.pcie_gbs * GB * cfg.pcie_efficiency * gpus
    host_bw = cfg.channels * cfg.channel_gbs * GB * cfg.host_bw_efficiency
    hbm_bw = cfg.gpu_hbm_gbs * GB * cfg.bw_efficiency * gpus

    def stages(s):
        g = gemm_seconds(b, n / s, cfg, gpus, b.prefill_chunk / s) + prefill_attention_seconds(b, cfg, gpus) / s
        prefill_kv = b.prefill_chunk / s * b.kv_bytes_per_token / pcie
        kv = (n / s) * b.kv_bytes_per_request
        if cfg.attention_on == "cpu":
            return g, kv / host_bw, (n / s) * b.io_bytes_per_request / pcie + prefill_kv
        # KV streamed to the GPU: the link carries every cache, the GPU attends from HBM.
        return g + kv / hbm_bw, 0.0, kv / pcie + prefill_kv

    t, exposed, s, g, p, c = schedule(n, cfg.sub_batches, stages)
    attention = s * p if cfg.attention_on == "cpu" else n * b.kv_bytes_per_request / hbm_bw
    return Iteration(t, n, max_batch, fits, s * g, s * p, exposed, attention, capacity, gpus,
                     {"accelerator/sub_batches": float(s)})
