"""Swappable matmul backends: how a workload's GEMMs reach an accelerator's numerics.

Every GEMM of a forward pass calls ``backend.matmul(a, b)``. The contract:

* ``a`` has shape ``(M, K)`` and ``b`` ``(K, N)``; the result is ``(M, N)``.
* Floating inputs: the result is float32, the accelerator's approximation of
  ``a @ b`` (a backend that works on integers quantizes internally and rescales).
* Integer inputs (any integer dtype, values in the workload's quantized range,
  for example int8 codes): the result is float64 holding the accelerator's
  estimate of the integer product. The exact backend returns it exactly
  (float64 is exact for int8 products with K < 2**38), so "exact INT8" is the
  exact backend fed integer codes.

A backend is a plain object with a ``name`` and a ``matmul`` method; nothing has to
subclass anything. :class:`ExactBackend` is the reference every other backend is
compared against.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["ExactBackend", "MatmulBackend", "EXACT", "is_integer_input"]


@runtime_checkable
class MatmulBackend(Protocol):
    """What an accelerator's numerics provide (see the module docstring)."""

    name: str

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray: ...


def is_integer_input(a: np.ndarray, b: np.ndarray) -> bool:
    """True when both operands are integer arrays (quantized codes)."""
    return np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer)


class ExactBackend:
    """Reference numerics: float32 BLAS, or the exact integer product for codes."""

    name = "exact"

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
            raise ValueError(f"matmul needs (M,K) @ (K,N), got {a.shape} @ {b.shape}")
        if is_integer_input(a, b):
            return a.astype(np.float64) @ b.astype(np.float64)
        return np.asarray(a, dtype=np.float32) @ np.asarray(b, dtype=np.float32)

    def __repr__(self) -> str:
        return "ExactBackend()"


#: The shared exact backend instance.
EXACT = ExactBackend()
