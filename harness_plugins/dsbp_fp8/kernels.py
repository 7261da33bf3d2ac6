"""Numba kernel of the FP8 DCIM group MAC with on-the-fly input bitwidth prediction.

For every input row ``m`` and group ``g`` of ``group`` consecutive reduction indices:

1. **Pre-alignment** (online): ``E = max`` exponent over the group's non-zero
   inputs; each shift ``d_i = E - e_i``.
2. **Bitwidth** ``B_x``: ``row_bits[m]`` when it is > 0 (fixed mode, or the
   fixed-bitwidth baseline rows), else the DSBP predictor reads the histogram of
   the shifts (never the mantissas: exponents arrive first):

   * ``PRED_BUDGET``: the smallest ``B`` in ``[bx_min, bx_max]`` whose estimated
     discarded error power is at most ``threshold`` times the group's estimated
     signal power. From exponents only, with the group maximum as unit: an element
     keeps every bit when ``M + 2 + d <= B``; it is flushed (truncated to 0) when
     ``d >= B - 1`` and costs its own power, estimated ``(1.5 * 2**-d)**2``;
     otherwise it costs the truncation's ``LSB**2 / 3`` with ``LSB = 2**(2 - B)``.
     Shifts are capped at ``D_CAP`` in the estimate, which makes every term an
     integer (units of ``2**-34``, everything times 3), so the decision does not
     depend on summation order.
   * ``PRED_PERCENTILE``: ``B = clip(M + 2 + d_q, bx_min, bx_max)`` with ``d_q``
     the smallest shift covering a ``threshold`` fraction of the non-zero inputs.

   An all-zero group takes ``bx_min`` (DSBP) or the fixed width.
3. **Truncation** of each significand (``M + 1`` bits) to an aligned magnitude of
   ``B - 1`` bits plus sign: ``q = sig >> (M + 2 + d - B)`` (a left shift when
   that is negative; ``ROUND_NEAREST`` adds half an LSB first and saturates), so
   ``value = q * 2**(E + 2 - B)``.
4. **Integer MAC** against the prepared weights (aligned the same way offline,
   ``qw`` signed, LSB exponents ``lw[g, n]``): ``acc = sum q_i qw_in`` in int64.
   The hardware does it bit-serially over ``B`` cycles; the sum is the same
   integer (``reference.py`` does it cycle by cycle).
5. **Scaling** ``float32(acc) * 2**(E + 2 - B + lw[g, n])`` (a float32 table,
   exact) and **FP32 accumulation** over groups in order: ``out += partial``.

The caller applies the per-row and per-tensor power-of-two scales afterwards.
"""

from __future__ import annotations

import numpy as np
from numba import njit

PRED_BUDGET, PRED_PERCENTILE, PRED_FULLSCALE = 0, 1, 2
PREDICTORS = {"budget": PRED_BUDGET, "percentile": PRED_PERCENTILE, "fullscale": PRED_FULLSCALE}
ROUND_TRUNCATE, ROUND_NEAREST = 0, 1
ROUNDINGS = {"truncate": ROUND_TRUNCATE, "nearest": ROUND_NEAREST}
#: Shifts above this count as this in the predictor's estimate (terms stay exact integers).
D_CAP = 16
#: Offset of exponent 0 in :data:`POW2` (float32 powers of two, 2**-128 .. 2**127 all exact...
POW2_OFFSET = 149
#: ... as float32: 2**-149 (smallest subnormal) to 2**127).
POW2 = np.ldexp(np.float32(1.0), np.arange(-149, 128)).astype(np.float32)


@njit(cache=True, inline="always")
def _flush_term(d):
    """3 * (1.5 * 2**-d)**2 in units of 2**-34 (d <= D_CAP)."""
    return np.int64(27) << np.int64(32 - 2 * d)


@njit(cache=True)
def predict_bits(hist, nnz, man_bits, predictor, threshold, bx_min, bx_max, top_shift, pow2):
    """B_x of one group from its shift histogram (``hist[d]``, d capped at D_CAP) and, for
    ``PRED_FULLSCALE``, the shift ``top_shift`` of the group's maximum below the format's top."""
    if nnz == 0:
        return bx_min
    if predictor == PRED_PERCENTILE:
        need = threshold * nnz
        covered = 0
        dq = D_CAP
        for d in range(D_CAP + 1):
            covered += hist[d]
            if covered >= need:
                dq = d
                break
        b = man_bits + 2 + dq
        return min(max(b, bx_min), bx_max)
    if predictor == PRED_FULLSCALE:  # every input at full scale: a budget in absolute terms
        budget = threshold * (np.float64(nnz * _flush_term(0)) * np.float64(pow2[2 * top_shift + POW2_OFFSET]))
    else:
        signal = np.int64(0)
        for d in range(D_CAP + 1):
            signal += hist[d] * _flush_term(d)
        budget = threshold * np.float64(signal)
    for b in range(bx_min, bx_max + 1):
        lsb2 = np.int64(1) << np.int64(38 - 2 * b)  # 3 * LSB**2 / 3
        err = np.int64(0)
        for d in range(D_CAP + 1):
            if hist[d] == 0 or man_bits + 2 + d <= b:
                continue
            if d >= b - 1:
                err += hist[d] * _flush_term(d)
            else:
                err += hist[d] * lsb2
        if np.float64(err) <= budget:
            return b
    return bx_max


@njit(cache=True, inline="always")
def align(sig, d, man_bits, bits, rounding):
    """Aligned magnitude of a significand shifted right by ``d``, kept to ``bits - 1`` bits."""
    shift = man_bits + 2 + d - bits
    if shift <= 0:
        return sig << (-shift)
    if shift >= 62:
        return np.int64(0)
    if rounding == ROUND_NEAREST:
        q = (sig + (np.int64(1) << (shift - 1))) >> shift
        top = (np.int64(1) << (bits - 1)) - 1
        return min(q, top)
    return sig >> shift


@njit(cache=True)
def dsbp_gemm(xsign, xexp, xsig, rows, row_bits, group, man_bits, e_top, predictor, threshold, bx_min, bx_max,
              rounding, qw, lw, pow2):
    """``(out float32 (R, N), bits int8 (R, groups))``; see the module docstring. Output row
    ``r`` is input row ``rows[r]`` at bitwidth ``row_bits[r]`` (0: predicted), so a call can
    also run sampled rows again at other widths without copying them.

    ``qw`` is int32: an aligned product has at most 11 + 7 bits, so a group of up to
    4096 rows sums below 2**31. Single-threaded on purpose: the GEMMs of a network's
    evaluation are many and small (attention's per-head products), where a parallel
    region costs more than it saves on a shared 2-core machine, and a sweep already
    runs one job per core.
    """
    k_len = xsig.shape[1]
    n_rows = rows.shape[0]
    n_cols = qw.shape[1]
    n_groups = (k_len + group - 1) // group
    out = np.zeros((n_rows, n_cols), dtype=np.float32)
    bits_out = np.zeros((n_rows, n_groups), dtype=np.int8)
    acc = np.zeros(n_cols, dtype=np.int32)
    q = np.zeros(group, dtype=np.int32)
    hist = np.zeros(D_CAP + 1, dtype=np.int64)
    for r in range(n_rows):
        m = rows[r]
        for g in range(n_groups):
            k0 = g * group
            k1 = min(k0 + group, k_len)
            emax = -1000
            nnz = 0
            for k in range(k0, k1):
                if xsig[m, k] != 0:
                    nnz += 1
                    if xexp[m, k] > emax:
                        emax = xexp[m, k]
            b = row_bits[r]
            if b <= 0:
                hist[:] = 0
                for k in range(k0, k1):
                    if xsig[m, k] != 0:
                        hist[min(emax - xexp[m, k], D_CAP)] += 1
                b = predict_bits(hist, nnz, man_bits, predictor, threshold, bx_min, bx_max,
                                 min(max(e_top - emax, 0), 60), pow2)
            bits_out[r, g] = b
            if nnz == 0:
                continue
            for k in range(k0, k1):
                s = np.int64(xsig[m, k])
                if s == 0:
                    q[k - k0] = 0
                    continue
                v = align(s, np.int64(emax - xexp[m, k]), man_bits, b, rounding)
                q[k - k0] = -v if xsign[m, k] else v
            acc[:] = 0
            for k in range(k0, k1):
                qk = q[k - k0]
                if qk != 0:
                    row = qw[k]
                    for n in range(n_cols):
                        acc[n] += qk * row[n]
            lx = emax + 2 - b
            for n in range(n_cols):
                out[r, n] += np.float32(acc[n]) * pow2[lx + lw[g, n] + POW2_OFFSET]
    return out, bits_out


@njit(cache=True)
def align_weights(wsign, wexp, wsig, bw, group, man_bits, rounding):
    """Offline pre-alignment of a weight (K, N) at ``bw[g, n]`` bits per weight group:
    ``(qw int32 (K, N) signed aligned magnitudes, lw int64 (groups, N) LSB exponents)``."""
    k_len, n_cols = wsig.shape
    n_groups = (k_len + group - 1) // group
    qw = np.zeros((k_len, n_cols), dtype=np.int32)
    lw = np.zeros((n_groups, n_cols), dtype=np.int64)
    for g in range(n_groups):
        k0 = g * group
        k1 = min(k0 + group, k_len)
        for n in range(n_cols):
            emax = -1000
            for k in range(k0, k1):
                if wsig[k, n] != 0 and wexp[k, n] > emax:
                    emax = wexp[k, n]
            if emax == -1000:
                emax = 0
            b = bw[g, n]
            lw[g, n] = emax + 2 - b
            for k in range(k0, k1):
                s = np.int64(wsig[k, n])
                if s != 0:
                    v = align(s, np.int64(emax - wexp[k, n]), man_bits, b, rounding)
                    qw[k, n] = -v if wsign[k, n] else v
    return qw, lw
