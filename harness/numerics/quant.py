"""Integer quantizers shared by the runtime, cost models and plugins."""

from __future__ import annotations

import numpy as np

__all__ = ["quantize_symmetric"]


def quantize_symmetric(x: np.ndarray, bits: int, axis: int | tuple | None) -> tuple[np.ndarray, np.ndarray]:
    """Signed symmetric codes (int32 holding ``bits``-bit values) and scales.

    The scale is ``max|x| / (2**(bits-1)-1)`` reduced over ``axis`` (kept as size-1
    dims, so ``codes * scale`` approximates ``x``); an all-zero slice gets scale 1.
    One bit means binary weights ``alpha * sign(x)``: codes -1 and +1 (0 stays 0 for
    pruned values), the same grid as two bits.
    """
    if not 1 <= bits <= 16:
        raise ValueError(f"quantize_symmetric: bits={bits!r}; use 1..16")
    qmax = max(1, 2 ** (bits - 1) - 1)
    amax = np.max(np.abs(x), axis=axis, keepdims=True).astype(np.float64)
    scale = np.where(amax > 0, amax / qmax, 1.0)
    codes = np.clip(np.rint(x / scale), -qmax, qmax).astype(np.int32)
    return codes, scale
