"""How a forward pass runs: training or evaluation, which matmul backend, which precision.

Every GEMM of a layer goes through :func:`linear` (activation x weight) or
:func:`act_matmul` (activation x activation, attention's ``Q K^T`` and ``A V``).

* Training (``Runtime(training=True)``) always uses exact float32 BLAS: techniques
  change what is trained, accelerators change how inference is computed.
* Evaluation calls ``rt.backend.matmul`` for every GEMM (default
  :data:`~harness.numerics.backend.EXACT`).
* Quantized evaluation (``quant_bits=b``, 2..16): activations are quantized
  per-tensor symmetric and weights per-output-channel symmetric to signed integer
  codes in ``[-(2**(b-1)-1), 2**(b-1)-1]`` held in int32; the backend multiplies
  the codes (so an integer accelerator sees real INT-b operands, and the exact
  backend gives exact INT-b arithmetic) and the float64 result is rescaled.
  "Per-tensor" means one scale per *sample's* tensor, not per evaluation batch,
  so accuracy does not depend on the evaluation batch size.

An :class:`OpRecorder` attached to the runtime collects one
:class:`~harness.optrace.Op` per GEMM site with the shapes of one sample and the
densities actually seen (weights after masks, inputs after ReLU/token pruning).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.numerics.backend import EXACT, MatmulBackend
from harness.optrace import Op, OpTrace

__all__ = ["OpRecorder", "Runtime", "act_matmul", "blas_threads", "linear", "quantize_symmetric"]


def blas_threads(n: int = 1):
    """Context manager limiting BLAS to ``n`` threads (a no-op without threadpoolctl).

    The layers' GEMMs are small (a LeNet batch is at most 25k x 150); on a busy
    two-core machine a multi-threaded OpenBLAS spends more time spin-waiting than
    computing (measured: 10x slower epochs while another job ran). One thread is
    also what makes results independent of the machine's core count.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


@dataclass
class OpRecorder:
    """Collects the op trace of a forward pass (shapes per sample, measured densities)."""

    ops: dict[str, dict[str, Any]] = field(default_factory=dict)

    def record(self, name: str, m: int, k: int, n: int, count: int, has_weights: bool,
               weight_density: float, input_density: float, bits: int) -> None:
        entry = self.ops.setdefault(
            name, dict(m=m, k=k, n=n, count=count, has_weights=has_weights, wd=[], idn=[], bits=bits)
        )
        entry["wd"].append(weight_density)
        entry["idn"].append(input_density)

    def trace(self) -> OpTrace:
        ops = []
        for name, e in self.ops.items():
            b = e["bits"] or 32
            ops.append(
                Op(
                    name,
                    m=int(e["m"]),
                    k=int(e["k"]),
                    n=int(e["n"]),
                    count=int(e["count"]),
                    has_weights=e["has_weights"],
                    weight_density=float(np.clip(np.mean(e["wd"]), 0.0, 1.0)),
                    input_density=float(np.clip(np.mean(e["idn"]), 0.0, 1.0)),
                    weight_bits=b,
                    input_bits=b,
                    kind="gemm" if e["has_weights"] else "attention",
                )
            )
        return OpTrace(tuple(ops))


@dataclass
class Runtime:
    """Mode of one forward pass (see the module docstring).

    ``token_keep`` (ViT only) is a ``(B, T)`` float 0/1 array of tokens still alive;
    ``keep_attention`` asks attention layers to keep their maps in ``last_attention``.
    """

    training: bool = False
    backend: MatmulBackend = EXACT
    quant_bits: int = 0
    recorder: OpRecorder | None = None
    keep_attention: bool = False
    token_keep: np.ndarray | None = None
    bn_calibrate: bool = False

    def __post_init__(self) -> None:
        if self.quant_bits and not 2 <= self.quant_bits <= 16:
            raise ValueError(f"quant_bits={self.quant_bits}: use 0 (float) or 2..16 (signed integer codes)")
        if self.training and self.quant_bits:
            raise ValueError("training always runs in exact float32; quant_bits applies to evaluation only")

    @property
    def grad(self) -> bool:
        """True when layers must keep what their backward pass needs."""
        return self.training and not self.bn_calibrate


def quantize_symmetric(x: np.ndarray, bits: int, axis: int | tuple | None) -> tuple[np.ndarray, np.ndarray]:
    """Signed symmetric codes (int32 holding ``bits``-bit values) and scales.

    The scale is ``max|x| / (2**(bits-1)-1)`` reduced over ``axis`` (kept as size-1
    dims, so ``codes * scale`` approximates ``x``); an all-zero slice gets scale 1.
    """
    qmax = 2 ** (bits - 1) - 1
    amax = np.max(np.abs(x), axis=axis, keepdims=True).astype(np.float64)
    scale = np.where(amax > 0, amax / qmax, 1.0)
    codes = np.clip(np.rint(x / scale), -qmax, qmax).astype(np.int32)
    return codes, scale


def _density(a: np.ndarray) -> float:
    return float(np.count_nonzero(a)) / a.size if a.size else 1.0


def linear(a: np.ndarray, w: np.ndarray, rt: Runtime, name: str, samples: int,
           weight_density: float | None = None) -> np.ndarray:
    """``a (M,K) @ w (K,N)`` for a weight layer; ``samples`` is the batch size, so
    each sample owns ``M / samples`` consecutive rows (one activation scale each)."""
    if rt.recorder is not None:
        rt.recorder.record(
            name, a.shape[0] // samples, a.shape[1], w.shape[1], 1, True,
            _density(w) if weight_density is None else weight_density, _density(a), rt.quant_bits,
        )
    if rt.training:
        return a @ w
    if not rt.quant_bits:
        return np.asarray(rt.backend.matmul(a, w), dtype=np.float32)
    ac, sa = quantize_symmetric(a.reshape(samples, -1), rt.quant_bits, axis=1)
    wc, sw = quantize_symmetric(w, rt.quant_bits, axis=0)
    y = np.asarray(rt.backend.matmul(ac.reshape(a.shape), wc), dtype=np.float64)
    rows = a.shape[0] // samples
    y = y.reshape(samples, rows, -1) * sa[:, :, None] * sw
    return y.reshape(a.shape[0], -1).astype(np.float32)


def act_matmul(a: np.ndarray, b: np.ndarray, rt: Runtime) -> np.ndarray:
    """Batched activation x activation product ``a (..., M, K) @ b (..., K, N)``.

    Evaluation sends each ``(M, K) @ (K, N)`` slice to the backend separately (the
    backend contract is 2-D); with ``quant_bits`` both operands get one scale per
    slice. The op-trace entry is recorded by the caller, which knows the densities.
    """
    if rt.training:
        return np.matmul(a, b)
    lead = a.shape[:-2]
    a2 = a.reshape(-1, *a.shape[-2:])
    b2 = b.reshape(-1, *b.shape[-2:])
    out = np.empty((a2.shape[0], a.shape[-2], b.shape[-1]), dtype=np.float32)
    for i in range(a2.shape[0]):
        if rt.quant_bits:
            ac, sa = quantize_symmetric(a2[i], rt.quant_bits, axis=None)
            bc, sb = quantize_symmetric(b2[i], rt.quant_bits, axis=None)
            out[i] = np.asarray(rt.backend.matmul(ac, bc), dtype=np.float64) * (sa * sb)
        else:
            out[i] = rt.backend.matmul(a2[i], b2[i])
    return out.reshape(*lead, a.shape[-2], b.shape[-1])
