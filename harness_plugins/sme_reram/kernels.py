"""The crossbar MVM in numba: every 1-bit cell of the squeezed mapping, bit-serial inputs.

For each input vector (parallel over vectors), each allocated crossbar and each
input bit ``t`` (two's complement; the top bit weighs ``-2**(B-1)``), a physical
row whose input bit is 1 adds its stored ones into the column counters (cells are
kept as per-row lists of non-zero columns, so zero cells cost nothing); each
column's count goes through the ADC (clipped to ``adc_max``), and is added,
weighted by the column's ``+-2**plane * 2**t``, into the column's output.
:func:`flatten` turns a :class:`~harness_plugins.sme_reram.mapping.LayerMap` into
the flat arrays the kernel reads. ``reference.py`` is the plain numpy version.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from harness_plugins.sme_reram.mapping import LayerMap

__all__ = ["FlatMap", "flatten", "mvm", "mvm_flat"]


@dataclass(frozen=True)
class FlatMap:
    """A layer's crossbars as flat arrays (CSR over physical rows)."""

    n: int
    xb_rows: np.ndarray  # (X+1,) start of each crossbar's rows in ``rows``
    rows: np.ndarray  # (R,) original input row of each physical row
    xb_cols: np.ndarray  # (X+1,) start of each crossbar's columns
    col_out: np.ndarray  # (C,)
    col_weight: np.ndarray  # (C,)
    nz_ptr: np.ndarray  # (R+1,) start of each physical row's non-zero columns
    nz_col: np.ndarray  # local column index of each stored one
    max_cols: int


def flatten(layer: LayerMap) -> FlatMap:
    xb_rows, xb_cols, nz_ptr = [0], [0], [0]
    rows, col_out, col_weight, nz_col = [], [], [], []
    max_cols = 1
    for xb in layer.crossbars:
        rows.append(xb.rows)
        col_out.append(xb.col_out)
        col_weight.append(xb.col_weight)
        xb_rows.append(xb_rows[-1] + len(xb.rows))
        xb_cols.append(xb_cols[-1] + len(xb.col_out))
        max_cols = max(max_cols, len(xb.col_out))
        for r in range(len(xb.rows)):
            nz = np.flatnonzero(xb.cells[r])
            nz_col.append(nz)
            nz_ptr.append(nz_ptr[-1] + len(nz))

    def cat(parts, dtype):
        return np.ascontiguousarray(np.concatenate(parts).astype(dtype)) if parts else np.zeros(0, dtype)

    return FlatMap(layer.n, np.asarray(xb_rows, np.int64), cat(rows, np.int64), np.asarray(xb_cols, np.int64),
                   cat(col_out, np.int64), cat(col_weight, np.int64), np.asarray(nz_ptr, np.int64),
                   cat(nz_col, np.int64), max_cols)


@njit(cache=True)
def _mvm(a, input_bits, adc_max, xb_rows, rows, xb_cols, col_out, col_weight, nz_ptr, nz_col, n, max_cols):
    m_total = a.shape[0]
    out = np.zeros((m_total, n), np.int64)
    for m in range(m_total):
        counts = np.zeros(max_cols, np.int64)
        for x in range(xb_rows.shape[0] - 1):
            c0 = xb_cols[x]
            width = xb_cols[x + 1] - c0
            for t in range(input_bits):
                for j in range(width):
                    counts[j] = 0
                for r in range(xb_rows[x], xb_rows[x + 1]):
                    if (a[m, rows[r]] >> t) & 1:
                        for z in range(nz_ptr[r], nz_ptr[r + 1]):
                            counts[nz_col[z]] += 1
                tw = -(np.int64(1) << t) if t == input_bits - 1 else np.int64(1) << t
                for j in range(width):
                    c = counts[j]
                    if c > adc_max:
                        c = adc_max
                    if c:
                        out[m, col_out[c0 + j]] += col_weight[c0 + j] * tw * c
    return out


def mvm_flat(a: np.ndarray, flat: FlatMap, input_bits: int, adc_max: int) -> np.ndarray:
    """Integer product (int64 ``(M, N)``) of codes ``a`` through a flattened mapping."""
    a = np.ascontiguousarray(a, dtype=np.int64)
    return _mvm(a, np.int64(input_bits), np.int64(adc_max), flat.xb_rows, flat.rows, flat.xb_cols, flat.col_out,
                flat.col_weight, flat.nz_ptr, flat.nz_col, np.int64(flat.n), np.int64(flat.max_cols))


def mvm(a: np.ndarray, layer: LayerMap, input_bits: int, adc_max: int) -> np.ndarray:
    """:func:`mvm_flat` of :func:`flatten`\\ ``(layer)`` (same signature as the reference)."""
    return mvm_flat(a, flatten(layer), input_bits, adc_max)
