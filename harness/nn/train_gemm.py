"""Training-time GEMMs: a technique's own forward and backward products.

A training GEMM is any object with ``matmul(a, b, call) -> (M, N) array``, the
same shape as an inference backend (:mod:`harness.numerics.backend`), so one
protocol serves both. ``fit(..., gemm=g)`` sends every training GEMM through
``g``; without one, training is plain float32 ``a @ b`` and nothing here runs.

For a weight layer ``Y = X @ W`` (Dense; Conv2d as its im2col GEMM) with op
``<layer name>``, per step:

* ``role="forward"``: ``a = X (M, K)``, ``b = W (K, N)``, ``weight_stationary=True``;
* ``role="grad_input"``: ``a = dY (M, N)``, ``b = W.T (N, K)``, gives dX,
  ``weight_stationary=True`` (``b`` is the layer's weight, transposed);
* ``role="grad_weight"``: ``a = X.T (K, M)``, ``b = dY (M, N)``, gives dW.

Attention's activation products are routed too, one call per (sample, head)
slice, ``weight_stationary=False``: op ``<attn>.qk`` for ``S = Q @ K.T`` and
``<attn>.av`` for ``O = A @ V``, with the same three roles read as ``Y = A @ B``
(``grad_input``: ``dY @ B.T``, ``grad_weight``: ``A.T @ dY``).

``call.seed`` depends on the run's seed, the op, the training step and the
slice, *not* on the role: the three calls of one op in one step share it, so a
stochastic GEMM (a dropout pattern, stochastic rounding) can draw its pattern
in ``forward`` and draw the same one again for the gradients, without state.
Mix the role in yourself when the roles need independent streams.
``prepare_weight`` is not called (weights change every step); ``call.prepared``
is None and ``a_bits``/``b_bits`` are 0 (training operands are float32).
Operands come in any memory order (``W.T`` and ``X.T`` are views, and a
one-channel convolution's im2col ``X`` is Fortran-ordered): use
``np.ascontiguousarray`` where a kernel needs C order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.numerics.backend import GemmCall, _takes_call, derive_seed

__all__ = ["BoundTrainGemm", "ExactTrainGemm"]

_M64 = (1 << 64) - 1


def _mix(base: int, step: int, index: int) -> int:
    """A 63-bit seed from an op's base seed, the step and a slice index (splitmix64).

    derive_seed costs ~10 us; this runs per call, so it is a few integer operations.
    """
    z = (base + (step * 0x10001 + index + 1) * 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return (z ^ (z >> 31)) >> 1


class ExactTrainGemm:
    """The reference training GEMM: ``a @ b`` in float32, what training does without one."""

    name = "exact"

    def matmul(self, a: np.ndarray, b: np.ndarray, call: GemmCall | None = None) -> np.ndarray:
        return a @ b


class BoundTrainGemm:
    """A training GEMM bound to one training run (see the module docstring).

    Layers call ``bound(a, b, op, role, weight_stationary)``; it builds the
    :class:`GemmCall` with the step's seed, and checks the result's shape (and
    casts it to float32) so a wrong GEMM fails at the op that broke, by name.
    ``step`` is set by the training loop before each step.
    """

    def __init__(self, gemm: Any, seed: int = 0):
        if isinstance(gemm, BoundTrainGemm):
            gemm = gemm.gemm
        matmul = getattr(gemm, "matmul", None)
        if not callable(matmul):
            raise TypeError(f"a training GEMM needs a matmul(a, b, call) method, got {type(gemm).__name__}")
        if not _takes_call(matmul):
            raise TypeError(
                f"training GEMM {type(gemm).__qualname__}.matmul takes (a, b); define matmul(self, a, b, call): "
                "call.role and call.op say which training product it is"
            )
        self.gemm = gemm
        self.name = getattr(gemm, "name", type(gemm).__name__)
        self.seed = int(seed)
        self.step = 0
        self._op_seeds: dict[str, int] = {}

    def seed_of(self, op: str, index: int = 0) -> int:
        """``call.seed`` of ``op`` (slice ``index``) at the current step."""
        base = self._op_seeds.get(op)
        if base is None:
            base = self._op_seeds[op] = derive_seed(self.seed, op)
        return _mix(base, self.step, index)

    def __call__(self, a: np.ndarray, b: np.ndarray, op: str, role: str, weight_stationary: bool,
                 index: int = 0) -> np.ndarray:
        call = GemmCall(op=op, role=role, weight_stationary=weight_stationary, seed=self.seed_of(op, index))
        out = np.asarray(self.gemm.matmul(a, b, call), dtype=np.float32)
        if out.shape != (a.shape[0], b.shape[1]):
            raise ValueError(
                f"training GEMM {self.name!r} returned shape {out.shape} for op {op!r} role {role!r}; "
                f"expected {(a.shape[0], b.shape[1])} (a {a.shape} @ b {b.shape})"
            )
        return out

    def batched(self, a: np.ndarray, b: np.ndarray, op: str, role: str) -> np.ndarray:
        """``a (..., M, K) @ b (..., K, N)`` as one activation-by-activation call per slice."""
        lead = a.shape[:-2]
        a2 = a.reshape(-1, *a.shape[-2:])
        b2 = b.reshape(-1, *b.shape[-2:])
        out = np.empty((a2.shape[0], a.shape[-2], b.shape[-1]), dtype=np.float32)
        for i in range(a2.shape[0]):
            out[i] = self(a2[i], b2[i], op, role, False, index=i)
        return out.reshape(*lead, a.shape[-2], b.shape[-1])

    def __repr__(self) -> str:
        return f"BoundTrainGemm({self.gemm!r}, seed={self.seed}, step={self.step})"
