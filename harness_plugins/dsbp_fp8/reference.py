"""Plain numpy reference of the FP8 DCIM group MAC, computed the way the macro does it.

Same arithmetic as :func:`harness_plugins.dsbp_fp8.kernels.dsbp_gemm`, written
differently so the kernel has something independent to agree with:

* alignment in floating point: ``q = floor(|v| / LSB)`` with ``LSB = 2**(E + 2 - B)``
  (exact: both are powers-of-two multiples), not integer shifts;
* the predictor's estimate summed per element over the whole group at once, for
  every candidate bitwidth, not from a histogram;
* the MAC **bit-serially**: the aligned input magnitudes stream MSB first, one
  bit plane per cycle; each cycle the adder tree of every column sums the
  (sign-applied) weights of the rows whose bit is 1, and the column's accumulator
  shifts left and adds. ``B - 1`` magnitude cycles plus the sign make ``B``
  cycles, as in the hardware.

Only the float32 power-of-two table is shared. ``tests/test_dsbp_fp8.py``
requires bit-for-bit equal outputs and bitwidths; ``benchmarks/bench_dsbp_fp8.py``
measures how much faster the kernel is.
"""

from __future__ import annotations

import numpy as np

from harness_plugins.dsbp_fp8.kernels import D_CAP, POW2, POW2_OFFSET, PRED_FULLSCALE, PRED_PERCENTILE, ROUND_NEAREST

__all__ = ["dsbp_gemm_reference", "predict_bits_reference"]


def predict_bits_reference(d: np.ndarray, nonzero: np.ndarray, man_bits: int, predictor: int, threshold: float,
                           bx_min: int, bx_max: int, top_shift=None) -> np.ndarray:
    """B_x per row of one group, from the shifts ``d`` (rows, group) of its non-zero inputs
    (and, for the full-scale budget, each row's group maximum's shift below the format's top)."""
    d = np.minimum(d, D_CAP)
    nnz = nonzero.sum(axis=1)
    out = np.full(d.shape[0], bx_min, dtype=np.int64)
    if predictor == PRED_PERCENTILE:
        for r in np.flatnonzero(nnz):
            shifts = np.sort(d[r][nonzero[r]])
            # smallest shift whose cumulative count reaches threshold * nnz
            counts = np.arange(1, len(shifts) + 1)
            dq = shifts[np.argmax(counts >= threshold * nnz[r])] if np.any(counts >= threshold * nnz[r]) else D_CAP
            out[r] = min(max(man_bits + 2 + dq, bx_min), bx_max)
        return out
    flush = np.where(nonzero, 27 * 2 ** (32 - 2 * d), 0).astype(np.int64)  # 3 * (1.5 * 2**-d)**2, units 2**-34
    if predictor == PRED_FULLSCALE:
        top = np.minimum(np.maximum(np.asarray(top_shift), 0), 60)
        full = (nnz * 27 * 2**32).astype(np.float64) * POW2[2 * top + POW2_OFFSET].astype(np.float64)
        budget = threshold * full
    else:
        budget = threshold * flush.sum(axis=1).astype(np.float64)
    decided = nnz == 0
    for b in range(bx_min, bx_max + 1):
        lossy = nonzero & (man_bits + 2 + d > b)
        term = np.where(d >= b - 1, flush, np.int64(2 ** (38 - 2 * b)))
        err = np.where(lossy, term, 0).sum(axis=1).astype(np.float64)
        take = ~decided & (err <= budget)
        out[take] = b
        decided |= take
    out[~decided] = bx_max
    return out


def dsbp_gemm_reference(xsign, xexp, xsig, rows, row_bits, group, man_bits, e_top, predictor, threshold, bx_min,
                        bx_max, rounding, qw, lw):
    """``(out float32 (M, N), bits (M, groups))``, as :func:`kernels.dsbp_gemm`, one input
    vector at a time (as the macro takes them), one group and one cycle after the other."""
    xsign, xexp, xsig = (np.asarray(v, dtype=np.int64)[np.asarray(rows)] for v in (xsign, xexp, xsig))
    qw = np.asarray(qw, dtype=np.int64)
    m_rows, k_len = xsig.shape
    n_cols = qw.shape[1]
    n_groups = -(-k_len // group)
    out = np.zeros((m_rows, n_cols), dtype=np.float32)
    bits = np.zeros((m_rows, n_groups), dtype=np.int64)
    for m in range(m_rows):
        for g in range(n_groups):
            sl = slice(g * group, min((g + 1) * group, k_len))
            sig, exp, neg = xsig[m, sl], xexp[m, sl], xsign[m, sl]
            nonzero = sig != 0
            if not nonzero.any():
                bits[m, g] = row_bits[m] if row_bits[m] > 0 else bx_min
                continue  # an all-zero group adds nothing
            emax = exp[nonzero].max()
            d = np.where(nonzero, emax - exp, 0)
            b = int(row_bits[m])
            if b <= 0:
                b = int(predict_bits_reference(d[None], nonzero[None], man_bits, predictor, threshold,
                                               bx_min, bx_max, np.array([e_top - emax]))[0])
            bits[m, g] = b
            # |v| / 2**(emax - man_bits) and the LSB in the same unit: floor of the ratio is the magnitude
            ratio = sig * np.exp2(-d.astype(np.float64)) / 2.0 ** (man_bits + 2 - b)
            q = np.floor(ratio + 0.5) if rounding == ROUND_NEAREST else np.floor(ratio)
            q = np.minimum(q, 2 ** (b - 1) - 1).astype(np.int64)
            sign = np.where(neg == 1, -1, 1)
            acc = np.zeros(n_cols, dtype=np.int64)
            for cycle in range(b - 1):  # MSB first: the column accumulators shift, the adder trees add
                bit = (q >> (b - 2 - cycle)) & 1
                acc = 2 * acc + (bit * sign) @ qw[sl]
            partial = acc.astype(np.float32) * POW2[emax + 2 - b + np.asarray(lw[g]) + POW2_OFFSET]
            out[m] += partial
    return out, bits
