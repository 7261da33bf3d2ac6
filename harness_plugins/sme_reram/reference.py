"""Plain numpy reference of the crossbar MVM, one crossbar and one input bit at a time.

The same arithmetic as :func:`harness_plugins.sme_reram.kernels.mvm`, written the
obvious way: for every allocated crossbar (its rows are driven by the original
inputs they hold, kept rows and hosted spare rows alike) and every input bit
``t`` (two's complement, bit-serial: the top bit weighs ``-2**(B-1)``), the column
currents are ``bits(x[:, rows], t) @ cells``, the ADC clips each column to
``adc_max``, and the periphery adds ``col_weight * 2**t * code`` into the
column's output. ``tests/test_sme_reram.py`` requires bit-for-bit agreement with
the numba kernel, and with ``a @ rounded_weights`` when the ADC cannot clip.
"""

from __future__ import annotations

import numpy as np

from harness_plugins.sme_reram.mapping import LayerMap

__all__ = ["mvm_reference"]


def mvm_reference(a: np.ndarray, layer: LayerMap, input_bits: int, adc_max: int) -> np.ndarray:
    """Integer product (int64, ``(M, N)``) of input codes ``a`` (``(M, K)``, within
    ``input_bits`` two's complement) through the crossbars of ``layer``."""
    a = np.asarray(a, dtype=np.int64)
    out = np.zeros((a.shape[0], layer.n), np.int64)
    for xb in layer.crossbars:
        x = a[:, xb.rows]
        scatter = np.zeros((xb.cells.shape[1], layer.n), np.int64)  # physical column -> output, with its weight
        scatter[np.arange(xb.cells.shape[1]), xb.col_out] = xb.col_weight
        for t in range(input_bits):
            weight = -(1 << t) if t == input_bits - 1 else 1 << t
            current = ((x >> t) & 1) @ xb.cells.astype(np.int64)  # popcount per column
            out += weight * (np.minimum(current, adc_max) @ scatter)
    return out
