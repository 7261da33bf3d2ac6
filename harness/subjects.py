"""What a technique may rely on, per family of subject a workload builds.

A workload's ``build`` returns a *subject*; a technique transforms it and an
accelerator runs it. The host never looks inside, so the promises are made here,
one :class:`typing.Protocol` per family. A workload spec declares its family in
``provides`` as ``subject:<family>`` (:data:`SUBJECT_CAPABILITIES`), a technique
declares the family it handles in ``needs``, and a technique checks
``isinstance(subject, protocol_for("pixel"))`` (raising
:class:`harness.api.IncompatibleError` otherwise).

Families: ``model`` (classifiers, :class:`harness.nn.ModelSubject`), ``gemms``
(GEMM operands without a model), ``pixel`` (pixel-to-pixel models such as
super-resolution), ``kernel`` (AxBench-style approximable functions), ``serving``
(LLM decode batches) and ``points`` (point clouds). Small working instances of the
four newer families live in :mod:`harness.testing.toy_workloads`, and
:func:`harness.testing.check_subject` checks any subject against its family.

Rules common to every family: every GEMM of an evaluation goes through the given
matmul backend as ``matmul(a, b, GemmCall(...))`` (bound with
:func:`harness.numerics.bind`), so an accelerator's numerics see all of them;
training is exact float32; ``op_trace()`` describes one inference of one sample
(one decode iteration of the batch, for ``serving``) in op-trace v2 terms
(:mod:`harness.optrace`). Where a family has weights, ``weights()``, ``masks()``,
``set_mask()`` and ``density()`` mean exactly what they mean for
:class:`~harness.nn.ModelSubject`: live ``(in, out)`` arrays (HWIO for
convolutions, the output channel last), W-shaped 0/1 masks the forward pass
applies as ``W * mask``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Protocol, runtime_checkable

import numpy as np

from harness.nn.subject import ModelSubject
from harness.numerics.backend import MatmulBackend
from harness.optrace import OpTrace

__all__ = [
    "FAMILIES",
    "SUBJECT_CAPABILITIES",
    "Approximator",
    "DecoderDims",
    "GemmsSubject",
    "KernelSubject",
    "PixelSubject",
    "PointCloudSubject",
    "ServingSubject",
    "WeightedSubject",
    "capability",
    "families_of",
    "missing_members",
    "protocol_for",
    "psnr",
]


@runtime_checkable
class WeightedSubject(Protocol):
    """Prunable GEMM weights and their masks, as on :class:`~harness.nn.ModelSubject`."""

    def weights(self) -> dict[str, np.ndarray]:
        """The live GEMM weights by name; assigning ``W[...]`` changes the model."""

    def masks(self) -> dict[str, Optional[np.ndarray]]:
        """W-shaped 0/1 masks by weight name (None: unmasked)."""

    def set_mask(self, name: str, mask: Optional[np.ndarray]) -> None:
        """Set (or with None remove) the mask of weight ``name``; weights are not overwritten."""

    def density(self) -> dict[str, float]:
        """Non-zero fraction of each weight after its mask."""


@runtime_checkable
class GemmsSubject(Protocol):
    """GEMM operands without a model (``dot_products``, ``minilm_gemm``).

    ``operands`` maps an op name to ``(a (M, K), b (K, N))``: ``b`` is the weight
    (or weight-like operand), ``a`` the activations that meet it, as float32 or as
    integer codes. There is nothing to train or prune; techniques that act on
    weights need ``subject:model`` instead. The workload's ``evaluate`` sends each
    pair through the backend and reports ``numerics/`` errors against float64.
    """

    operands: Mapping[str, tuple[np.ndarray, np.ndarray]]


@runtime_checkable
class PixelSubject(WeightedSubject, Protocol):
    """A pixel-to-pixel model (super-resolution) with low-/high-res image pairs.

    Images are float32 NHWC in [0, 1]. ``data(split)`` gives ``(lr (B,H,W,C),
    hr (B,sH,sW,C))`` for ``"train"`` or ``"test"``; ``forward(x, backend)`` maps
    ``(B,H,W,C)`` to ``(B,sH,sW,C)`` with every GEMM through ``backend`` (what an
    accelerator's numerics see: convolutions as im2col GEMMs, each op named
    after its layer, weight ``conv1.W`` is op ``conv1``). ``evaluate`` reports ``{"psnr": dB, ...}``: :func:`psnr` of the
    output clipped to [0, 1], per image, averaged over the split.

    ``feature_maps(x)`` gives each hidden layer's per-pixel features ``(B,H,W,F)``
    after its activation, the maps feature regularization penalizes.
    ``feature_policy = f(layer, F) -> F`` (None: off) rewrites those maps during
    ``forward``, ``evaluate`` and ``op_trace`` (zeroing channel groups per pixel);
    the trace then reports the next GEMM's measured input density, so skipped MACs
    reach the cost model. ``train(epochs, ..., grad_hook, feature_hook)`` continues
    training in exact float32 on the train split: ``grad_hook(name, W)`` adds to a
    weight's gradient as on ModelSubject, ``feature_hook(layer, F)`` returns an
    extra ``dLoss/dF`` (a group-lasso term) or None.
    """

    scale: int
    feature_policy: Optional[Callable[[str, np.ndarray], np.ndarray]]

    def data(self, split: str) -> tuple[np.ndarray, np.ndarray]: ...

    def forward(self, x: np.ndarray, backend: MatmulBackend = ...) -> np.ndarray: ...

    def feature_maps(self, x: np.ndarray, backend: MatmulBackend = ...) -> dict[str, np.ndarray]: ...

    def evaluate(self, backend: MatmulBackend = ..., split: str = "test") -> dict[str, float]: ...

    def train(self, epochs: int, ctx: Any = None, grad_hook: Any = None, feature_hook: Any = None,
              prefix: str = "train/", **overrides: Any) -> list[dict]: ...

    def op_trace(self) -> OpTrace: ...

    def copy(self) -> "PixelSubject": ...


@runtime_checkable
class Approximator(Protocol):
    """What replaces a kernel's exact function: an NN approximator on an NPU, maybe
    with a predictor or classifier deciding per sample whether to invoke it.

    ``approx(x, backend)`` returns outputs ``(N, d_out)``, or ``(outputs, invoke)``
    with a boolean ``invoke (N,)``: where False the exact function runs instead.
    Its GEMMs go through ``backend``. ``op_trace()`` is one invocation (one sample).
    """

    def __call__(self, x: np.ndarray, backend: MatmulBackend) -> Any: ...

    def op_trace(self) -> OpTrace: ...


@runtime_checkable
class KernelSubject(Protocol):
    """An AxBench-style function to approximate, with its error metric and bound.

    ``exact(x)`` is the reference function ``(N, d_in) -> (N, d_out)``;
    ``data(split)`` gives ``(x, exact(x))`` for ``"train"`` or ``"test"``.
    ``error(y, y_ref)`` is the per-sample error in the kernel's metric, and a
    sample is acceptable when its error is at most ``bound`` (what AXNet's
    predictor and MCMA's classifier learn to foresee). ``topology`` is the
    benchmark's approximator network (e.g. ``(2, 8, 2)``). ``approximator`` is
    what the technique leaves in place (the workload builds a plain MLP); a
    technique may replace it. ``evaluate(approx=None, split, backend)`` runs
    ``approx(x) -> y | (y, invoke)`` (default: the approximator on ``backend``)
    and reports ``error`` (mean per-sample error, exact samples counting 0),
    ``within_bound``, ``invocation`` and ``out_of_bound`` (invoked samples over
    the bound, as a fraction of all samples). ``op_trace()`` is the approximator's.
    """

    name: str
    bound: float
    topology: tuple[int, ...]
    approximator: Approximator

    def exact(self, x: np.ndarray) -> np.ndarray: ...

    def data(self, split: str) -> tuple[np.ndarray, np.ndarray]: ...

    def error(self, y: np.ndarray, y_ref: np.ndarray) -> np.ndarray: ...

    def evaluate(self, approx: Any = None, split: str = "test", backend: MatmulBackend = ...) -> dict[str, float]: ...

    def op_trace(self) -> OpTrace: ...


@dataclass(frozen=True)
class DecoderDims:
    """A decoder-only LLM's shape, as data: enough to size its GEMMs and its KV cache.

    ``kv_heads < heads`` is grouped-query attention; ``gated_ffn`` adds a gate
    projection (SwiGLU). Bit widths are storage precisions (16: fp16/bf16).
    """

    layers: int
    d_model: int
    heads: int
    kv_heads: int
    ffn: int
    head_dim: int = 0  # 0: d_model // heads
    vocab: int = 0  # 0: no LM head in the trace
    gated_ffn: bool = False
    weight_bits: int = 16
    act_bits: int = 16
    kv_bits: int = 16

    def __post_init__(self) -> None:
        if min(self.layers, self.d_model, self.heads, self.kv_heads, self.ffn) < 1 or self.heads % self.kv_heads:
            raise ValueError(f"{self}: sizes must be >= 1 and heads a multiple of kv_heads")
        if not self.head_dim:
            object.__setattr__(self, "head_dim", self.d_model // self.heads)

    @property
    def weight_params(self) -> int:
        """Weights of all GEMMs: QKV, output projection, FFN (and the LM head)."""
        qkv = self.d_model * (self.heads + 2 * self.kv_heads) * self.head_dim
        proj = self.heads * self.head_dim * self.d_model
        ffn = (3 if self.gated_ffn else 2) * self.d_model * self.ffn
        return self.layers * (qkv + proj + ffn) + self.vocab * self.d_model

    @property
    def weight_bytes(self) -> float:
        return self.weight_params * self.weight_bits / 8

    @property
    def kv_bytes_per_token(self) -> float:
        """K and V of one token in every layer: ``2 * layers * kv_heads * head_dim * kv_bits / 8``."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.kv_bits / 8


@runtime_checkable
class ServingSubject(Protocol):
    """One LLM decode iteration of a batch of requests; shapes and bytes, no accuracy.

    ``model`` is a :class:`DecoderDims`; ``context_lengths (B,)`` are the tokens
    already in each request's KV cache, the batch decoded together (one new token
    each). ``op_trace()`` lists, per layer, the weight GEMMs with ``m = B``
    (``layer{i}.qkv``, ``layer{i}.proj``, ``layer{i}.ffn_up`` [``ffn_gate``],
    ``layer{i}.ffn_down``) and one ``decode_attention`` op per request
    (``layer{i}.attn.r{b}``, ``kv_cache_bytes`` = its K and V in that layer,
    ``weight_bits`` = the cache's ``kv_bits``), so
    a cost model can place attention and GEMMs on different devices and split
    the batch. ``weight_bytes()`` (the GEMM weights the trace holds),
    ``kv_bytes_per_token()`` and ``kv_cache_bytes()`` (the whole batch) size
    memory capacity. The trace's attributes (:mod:`harness.optrace`) may say
    ``serving.batch_policy`` (``"fixed"``, the default; or ``"fit"``: the requests
    are a sample and a system admits as many like them as its memory holds) and
    ``serving.prefill_chunk`` (prefill tokens per iteration, default 0). A technique may
    change precision through ``model`` (e.g. ``kv_bits``) and must keep the trace
    consistent with it.
    """

    model: DecoderDims
    context_lengths: np.ndarray

    def op_trace(self) -> OpTrace: ...

    def weight_bytes(self) -> float: ...

    def kv_bytes_per_token(self) -> float: ...

    def kv_cache_bytes(self) -> float: ...


@runtime_checkable
class PointCloudSubject(WeightedSubject, Protocol):
    """A point-cloud model with its point sets (classification per cloud).

    ``data(split)`` gives ``(points (B,N,3), features (B,N,C) or None, labels
    (B,))`` for ``"train"`` or ``"test"``; coordinates are float32, each cloud
    centred and scaled to the unit ball. ``neighbors(points, k)`` gives the
    ``(B,N,k)`` indices of each point's k nearest neighbours in its own cloud
    (itself first; ``scipy.spatial.cKDTree``), what local operators (EdgeConv,
    SEFormer's neighbourhood attention) gather over. ``logits(points, features,
    backend)`` runs the model with every GEMM through ``backend``;
    ``evaluate`` reports ``{"accuracy": ...}``.
    """

    num_classes: int

    def data(self, split: str) -> tuple[np.ndarray, Optional[np.ndarray], np.ndarray]: ...

    def neighbors(self, points: np.ndarray, k: int) -> np.ndarray: ...

    def logits(self, points: np.ndarray, features: Optional[np.ndarray] = None,
               backend: MatmulBackend = ...) -> np.ndarray: ...

    def evaluate(self, backend: MatmulBackend = ..., split: str = "test") -> dict[str, float]: ...

    def op_trace(self) -> OpTrace: ...

    def copy(self) -> "PointCloudSubject": ...


#: Subject families by name; a workload spec provides ``subject:<family>``.
FAMILIES: Mapping[str, type] = {
    "model": ModelSubject,
    "gemms": GemmsSubject,
    "pixel": PixelSubject,
    "kernel": KernelSubject,
    "serving": ServingSubject,
    "points": PointCloudSubject,
}


def capability(family: str) -> str:
    """The capability name a spec lists for ``family`` (``"pixel"`` -> ``"subject:pixel"``)."""
    protocol_for(family)
    return f"subject:{family}"


#: Capability name -> the protocol its subjects satisfy.
SUBJECT_CAPABILITIES: Mapping[str, type] = {f"subject:{name}": proto for name, proto in FAMILIES.items()}


def protocol_for(family: str) -> type:
    """The protocol of ``family``, given as ``"pixel"`` or ``"subject:pixel"``."""
    name = family.split(":", 1)[1] if family.startswith("subject:") else family
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown subject family {family!r}; valid: {', '.join(FAMILIES)}") from None


def missing_members(subject: Any, family: str) -> list[str]:
    """Members of ``family``'s protocol that ``subject`` lacks (empty when it conforms)."""
    proto = protocol_for(family)
    if not getattr(proto, "_is_protocol", False):
        return [] if isinstance(subject, proto) else [f"an instance of {proto.__module__}.{proto.__qualname__}"]
    names: set[str] = set()
    for cls in proto.__mro__:
        if cls is object or cls is Protocol or not getattr(cls, "_is_protocol", False):
            continue
        names.update(getattr(cls, "__annotations__", {}))
        names.update(n for n, v in vars(cls).items() if callable(v) and not n.startswith("_"))
        if "__call__" in vars(cls):
            names.add("__call__")
    return sorted(n for n in names if not hasattr(subject, n))


def families_of(subject: Any) -> tuple[str, ...]:
    """The families ``subject`` satisfies, in :data:`FAMILIES` order."""
    return tuple(name for name, proto in FAMILIES.items() if isinstance(subject, proto))


def psnr(output: np.ndarray, target: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(peak^2 / MSE)`` over all values
    (``inf`` for identical arrays)."""
    mse = float(np.mean((np.asarray(output, np.float64) - np.asarray(target, np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(peak * peak / mse))
