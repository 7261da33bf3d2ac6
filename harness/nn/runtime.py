"""How a forward pass runs: training or evaluation, which matmul backend, which precision.

Every GEMM of a layer goes through :func:`linear` (activation x weight) or
:func:`act_matmul` (activation x activation, attention's ``Q K^T`` and ``A V``).

* Training (``Runtime(training=True)``) uses exact float32 BLAS, unless a
  technique gives a training GEMM (``Runtime.train_gemm``): then every forward
  and backward GEMM goes through it (:mod:`harness.nn.train_gemm`). Accelerators
  change how inference is computed, not training.
* Evaluation calls ``rt.backend.matmul(a, b, call)`` for every GEMM (default
  :data:`~harness.numerics.backend.EXACT`, bound to a run seed by
  :func:`~harness.numerics.bind`); ``call`` names the op, says whether ``b`` is a
  stationary weight, gives the operands' bits and the fused epilogue (``relu``
  when a ReLU follows the layer directly).
* A technique may set per-layer bit widths (``Runtime.precision``, from
  ``ModelSubject.set_precision``); a layer runs at those, others at ``quant_bits``.
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

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from harness.numerics.backend import EXACT, GemmCall, MatmulBackend, bind
from harness.numerics.quant import quantize_symmetric
from harness.nn.kernels import quantize_rows
from harness.nn.train_gemm import BoundTrainGemm
from harness.optrace import Op, OpTrace, WeightValues

__all__ = ["OpRecorder", "Precision", "Runtime", "act_matmul", "blas_threads", "linear", "quantize_symmetric"]


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


@dataclass(frozen=True)
class Precision:
    """Bit widths a technique sets for one layer (None: the workload's ``quant_bits``).

    ``weight_granularity`` is how weight codes are scaled: one scale per output
    ``channel`` (the default) or one per ``tensor`` (a technique that quantized
    a layer as ``alpha * Q`` with one ``alpha`` keeps its grid exactly with
    ``tensor``).
    """

    weight_bits: int | None = None
    act_bits: int | None = None
    weight_granularity: str = "channel"
    #: The technique's own grid: weights are ``scale * codes`` with this scale (a
    #: float, or one per output channel), so codes are ``rint(W / scale)`` exactly
    #: instead of a max-based rescale that could move them between levels.
    weight_scale: Any = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("weight_bits", "act_bits"):
            bits = getattr(self, name)
            if bits is not None and not (bits == 0 or 1 <= bits <= 16):
                raise ValueError(f"Precision {name}={bits!r}: use None (the workload's), 0 (float) or 1..16")
        if self.weight_granularity not in ("channel", "tensor"):
            raise ValueError(f"Precision weight_granularity={self.weight_granularity!r}: valid are 'channel', 'tensor'")
        if self.weight_scale is not None:
            scale = np.asarray(self.weight_scale, dtype=np.float64).reshape(-1)
            if not np.all(np.isfinite(scale)) or np.any(scale < 0):
                raise ValueError("Precision weight_scale must be finite and >= 0")
            object.__setattr__(self, "weight_scale", scale if scale.size > 1 else float(scale[0]))

    def weight_codes(self, w: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
        """Integer codes and scales of the GEMM-layout weight ``w (K, N)`` at ``bits``."""
        if self.weight_scale is None:
            return quantize_symmetric(w, bits, axis=0 if self.weight_granularity == "channel" else None)
        qmax = max(1, 2 ** (bits - 1) - 1)
        scale = np.asarray(self.weight_scale, dtype=np.float64).reshape(1, -1)
        if scale.shape[1] not in (1, w.shape[1]):
            raise ValueError(f"Precision weight_scale has {scale.shape[1]} values for {w.shape[1]} output channels")
        safe = np.where(scale > 0, scale, 1.0)
        return np.clip(np.rint(w / safe), -qmax, qmax).astype(np.int32), safe


_DEFAULT_PRECISION = Precision()


@dataclass
class OpRecorder:
    """Collects the op trace of a forward pass (shapes per sample, measured densities,
    bit widths as run, and each weighted op's effective weights)."""

    ops: dict[str, dict[str, Any]] = field(default_factory=dict)
    phase: str = "inference"

    def record(self, name: str, m: int, k: int, n: int, count: int, has_weights: bool,
               weight_density: float, input_density: float, bits: int, weight_bits: int | None = None,
               values: np.ndarray | None = None, precision: "Precision | None" = None) -> None:
        entry = self.ops.get(name)
        if entry is None:
            entry = self.ops[name] = dict(
                m=m, k=k, n=n, count=count, has_weights=has_weights, wd=[], idn=[], bits=bits,
                wbits=bits if weight_bits is None else weight_bits, values=None, precision=precision,
            )
            if values is not None:
                entry["values"] = np.array(values, dtype=np.float32, copy=True)
        entry["wd"].append(weight_density)
        entry["idn"].append(input_density)

    def trace(self) -> OpTrace:
        ops, values = [], {}
        for name, e in self.ops.items():
            abits = e["bits"] or 32
            wbits = e["wbits"] or 32
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
                    weight_bits=wbits if e["has_weights"] else abits,
                    input_bits=abits,
                    kind="gemm" if e["has_weights"] else "attention",
                    phase=self.phase,
                )
            )
            if e["values"] is not None:
                prec = e["precision"] or _DEFAULT_PRECISION
                values[name] = WeightValues(e["values"], bits=e["wbits"], granularity=prec.weight_granularity,
                                            scale=prec.weight_scale)
        return OpTrace(tuple(ops), values)


@dataclass
class Runtime:
    """Mode of one forward pass (see the module docstring).

    ``token_keep`` (ViT only) is a ``(B, T)`` float 0/1 array of tokens still alive;
    ``keep_attention`` asks attention layers to keep their maps in ``last_attention``.
    """

    training: bool = False
    backend: MatmulBackend = EXACT
    quant_bits: int = 0
    #: Per-layer bit widths set by a technique (layer name -> Precision); layers
    #: not named run at ``quant_bits``.
    precision: Mapping[str, "Precision"] | None = None
    recorder: OpRecorder | None = None
    keep_attention: bool = False
    token_keep: np.ndarray | None = None
    bn_calibrate: bool = False
    #: The training GEMM (``matmul(a, b, call)``, see :mod:`harness.nn.train_gemm`);
    #: None: plain float32 ``a @ b``. Layers keep it from forward for their backward.
    train_gemm: Any = None

    def __post_init__(self) -> None:
        if self.train_gemm is not None:
            if not self.training:
                raise ValueError("train_gemm applies to training; evaluation computes through backend")
            if not isinstance(self.train_gemm, BoundTrainGemm):
                self.train_gemm = BoundTrainGemm(self.train_gemm)
        if not self.training:
            self.backend = bind(self.backend)
        if self.quant_bits and not 2 <= self.quant_bits <= 16:
            raise ValueError(f"quant_bits={self.quant_bits}: use 0 (float) or 2..16 (signed integer codes)")
        if self.training and self.quant_bits:
            raise ValueError("training always runs in exact float32; quant_bits applies to evaluation only")

    def bits_of(self, layer: str) -> tuple[int, int, "Precision"]:
        """``(weight_bits, act_bits, precision)`` of ``layer`` (0 = float)."""
        prec = self.precision.get(layer) if self.precision else None
        if prec is None:
            return self.quant_bits, self.quant_bits, _DEFAULT_PRECISION
        w = self.quant_bits if prec.weight_bits is None else prec.weight_bits
        a = self.quant_bits if prec.act_bits is None else prec.act_bits
        return w, a, prec

    @property
    def grad(self) -> bool:
        """True when layers must keep what their backward pass needs."""
        return self.training and not self.bn_calibrate


def _density(a: np.ndarray) -> float:
    return float(np.count_nonzero(a)) / a.size if a.size else 1.0


def linear(a: np.ndarray, w: np.ndarray, rt: Runtime, name: str, samples: int,
           weight_density: float | None = None, epilogue: str | None = None,
           bias: np.ndarray | None = None) -> np.ndarray:
    """``a (M,K) @ w (K,N)`` for weight layer ``name``; ``samples`` is the batch size,
    so each sample owns ``M / samples`` consecutive rows (one activation scale each).

    Evaluation runs the layer at its bit widths (:meth:`Runtime.bits_of`): integer
    codes for both operands when both have bits, float otherwise (weights a
    technique put on a grid stay float then). ``epilogue`` ("relu") tells the
    backend what is applied to the result right after, with the layer's ``bias``
    (added by the caller, who also applies the epilogue) as ``call.epilogue_offset``.
    """
    if rt.recorder is not None:
        wbits, abits, prec = rt.bits_of(name)
        rt.recorder.record(
            name, a.shape[0] // samples, a.shape[1], w.shape[1], 1, True,
            _density(w) if weight_density is None else weight_density, _density(a), abits,
            weight_bits=wbits, values=w, precision=prec,
        )
    if rt.training:
        return a @ w if rt.train_gemm is None else rt.train_gemm(a, w, name, "forward", True)
    wbits, abits, prec = rt.bits_of(name)
    integer = wbits > 0 and abits > 0
    call = GemmCall(op=name, weight_stationary=True, a_bits=abits if integer else 0,
                    b_bits=wbits if integer else 0, epilogue=epilogue)
    if not integer:
        if epilogue is not None and bias is not None:
            call = replace(call, epilogue_offset=bias)
        return np.asarray(rt.backend.matmul(a, w, call), dtype=np.float32)
    ac, sa = quantize_rows(a.reshape(samples, -1), abits)  # = quantize_symmetric(..., axis=1), fused
    wc, sw = prec.weight_codes(w, wbits)
    rows = a.shape[0] // samples
    if epilogue is not None and bias is not None:  # the bias in integer-product units, per row and column
        call = replace(call, epilogue_offset=bias / (np.repeat(sa[:, 0], rows)[:, None] * sw))
    y = np.asarray(rt.backend.matmul(ac.reshape(a.shape), wc, call), dtype=np.float64)
    y = y.reshape(samples, rows, -1) * sa[:, :, None] * sw
    return y.reshape(a.shape[0], -1).astype(np.float32)


def act_matmul(a: np.ndarray, b: np.ndarray, rt: Runtime, op: str = "act_matmul") -> np.ndarray:
    """Batched activation x activation product ``a (..., M, K) @ b (..., K, N)``.

    Evaluation sends each ``(M, K) @ (K, N)`` slice to the backend separately (the
    backend contract is 2-D); with ``quant_bits`` both operands get one scale per
    slice. The op-trace entry is recorded by the caller, which knows the densities.
    """
    if rt.training:
        return np.matmul(a, b) if rt.train_gemm is None else rt.train_gemm.batched(a, b, op, "forward")
    lead = a.shape[:-2]
    a2 = a.reshape(-1, *a.shape[-2:])
    b2 = b.reshape(-1, *b.shape[-2:])
    out = np.empty((a2.shape[0], a.shape[-2], b.shape[-1]), dtype=np.float32)
    bits = rt.quant_bits
    call = GemmCall(op=op, weight_stationary=False, a_bits=bits, b_bits=bits)
    for i in range(a2.shape[0]):
        if bits:
            ac, sa = quantize_symmetric(a2[i], bits, axis=None)
            bc, sb = quantize_symmetric(b2[i], bits, axis=None)
            out[i] = np.asarray(rt.backend.matmul(ac, bc, call), dtype=np.float64) * (sa * sb)
        else:
            out[i] = rt.backend.matmul(a2[i], b2[i], call)
    return out.reshape(*lead, a.shape[-2], b.shape[-1])
