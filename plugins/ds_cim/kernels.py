"""Bit-parallel numba kernel of the DS-CIM stochastic MVM (64 samples per uint64 word).

The kernel returns *counter values*, not products: for every input vector ``m``
and column ``j`` the sum over OR groups of popcount(OR-tree output) over the
``L`` samples, once for the positive tree and once for the negative tree. The
caller (``plugins.ds_cim.DsCimBackend``) rescales and applies the digital
corrections. :mod:`plugins.ds_cim.reference` computes the same counters sample
by sample in plain numpy; ``tests/test_ds_cim.py`` checks they agree bit for bit.

Random numbers are *bit-sliced*: one 64-bit PRNG word is one bit plane of 64
samples (bit ``s`` of plane ``k`` is bit ``k`` of sample ``s``'s random number).
A threshold comparison ``u < c`` of 64 samples then costs ``bits`` word
operations (LSB-first recurrence, see :func:`lt_mask`), which is what a
bit-parallel stochastic number generator does, and what makes this fast.

The PRNG is a counter-based splitmix64 hash (an ideal uniform source; the
hardware's LFSR and its correlations are **not** modelled [inferred]): word
``(m, stream, t, plane)`` is ``mix(key + (c + 1) * GOLDEN)`` with
``c = ((m * n_streams + stream) * n_words + t) * n_planes + plane``. Indexing
by ``m`` gives every input vector a fresh segment of the stream, so errors of
different dot products are independent (the estimate of each is unbiased either
way; independence is what makes a standard error over many dot products honest).

Schemes (``scheme`` argument):

* ``EXCLUSIVE`` (0): one 2-D point per sample and stream: ``log2(G)`` slot bits,
  ``bits`` u bits, ``bits`` v bits. Row ``i`` of an OR-``G`` group fires iff
  ``slot == i mod G and u < x_i and v < w_ij``: the group's rows own disjoint
  sub-squares, so at most one fires per sample and OR = sum.
* ``INDEPENDENT`` (1): every row has its own PRNG (stream = row): row ``i``
  fires iff ``u_i < x_i and v_i < w_ij``; OR gives ``1 - prod(1 - p_i)``.
* ``NESTED`` (2): one shared point, no slots: regions are rectangles nested at
  the origin, OR gives the area of their union (about the largest product).

A stream is shared by ``groups_per_stream`` consecutive OR groups (the rows of
one array share one PRNG point per sample when that is ``rows / G``; each group
draws its own when it is 1). For ``INDEPENDENT`` the stream is the row.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

EXCLUSIVE, INDEPENDENT, NESTED = 0, 1, 2
SCHEMES = {"exclusive": EXCLUSIVE, "independent": INDEPENDENT, "nested": NESTED}

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


@njit(cache=True, inline="always")
def prng_word(key, counter):
    """splitmix64 output number ``counter + 1`` of the stream seeded with ``key``."""
    z = key + (np.uint64(counter) + np.uint64(1)) * GOLDEN
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def popcount64(x):
    """SWAR popcount (LLVM turns it into one instruction where available)."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * np.uint64(0x0101010101010101)) >> np.uint64(56))


@njit(cache=True, inline="always")
def lt_mask(planes, first, bits, c):
    """Mask of the 64 samples whose ``bits``-bit random number is below ``c``.

    LSB-first recurrence over bit planes ``planes[first:first+bits]``: with
    ``lt`` the answer for the lower bits, bit ``k`` of ``c`` set gives
    ``~u_k | lt`` and clear gives ``~u_k & lt``. ``c >= 2**bits`` is always true
    (a sign-split magnitude of 128 with 7-bit random numbers).
    """
    if c >= (np.int64(1) << bits):
        return ALL_ONES
    lt = np.uint64(0)
    for k in range(bits):
        nu = ~planes[first + k]
        # Branch-free select (the bits of c are data: a branch would mispredict).
        cm = np.uint64(0) - np.uint64((c >> k) & 1)
        lt = (nu & lt) | (cm & (nu | lt))
    return lt


@njit(cache=True, inline="always")
def fill_lt_table(planes, first, bits, table):
    """``table[c] = lt_mask(planes, first, bits, c)`` for every threshold ``0 .. 2**bits``.

    Built once per sample word and stream, it replaces a ``bits``-step comparison
    per cell by one load: worth it when more cells than thresholds share the stream.
    """
    for c in range(table.shape[0]):
        table[c] = lt_mask(planes, first, bits, c)


@njit(cache=True, inline="always")
def slot_mask(planes, lg, slot):
    """Mask of the samples whose ``lg`` slot bits spell ``slot``."""
    mask = ALL_ONES
    for k in range(lg):
        if (slot >> k) & 1:
            mask &= planes[k]
        else:
            mask &= ~planes[k]
    return mask


@njit(cache=True, parallel=True)
def mvm_counts(xmag, xneg, wmag, wneg, key, scheme, length, bits, group, groups_per_stream):
    """Counter values of the stochastic MVM ``(M, K) x (K, N)``: int64 ``(M, N, 2)``.

    ``xmag``/``wmag`` are the unipolar magnitudes (int64, ``0 .. 2**bits``),
    ``xneg``/``wneg`` the sign bits (uint8) routing a row's product to the
    negative OR tree. ``[..., 0]`` is the positive count, ``[..., 1]`` the
    negative one. ``group`` must be a power of two.
    """
    m_count, k_count = xmag.shape
    n_count = wmag.shape[1]
    key = np.uint64(key)
    n_words = (length + 63) // 64
    tail = length - 64 * (n_words - 1)
    tail_mask = ALL_ONES if tail == 64 else (np.uint64(1) << np.uint64(tail)) - np.uint64(1)
    lg = 0
    if scheme == EXCLUSIVE:
        while (1 << lg) < group:
            lg += 1
    n_planes = lg + 2 * bits
    n_groups = (k_count + group - 1) // group
    if scheme == INDEPENDENT:
        n_streams = k_count
    else:
        n_streams = (n_groups + groups_per_stream - 1) // groups_per_stream
    # Cells sharing one stream's point per word: the rows of its groups times the columns.
    rows_per_stream = 1 if scheme == INDEPENDENT else group * groups_per_stream
    n_thresholds = (1 << bits) + 1
    use_table = rows_per_stream * n_count > n_thresholds
    counts = np.zeros((m_count, n_count, 2), dtype=np.int64)
    for m in prange(m_count):
        planes = np.empty(n_planes, dtype=np.uint64)
        v_table = np.empty(n_thresholds, dtype=np.uint64)
        or_pos = np.empty(n_count, dtype=np.uint64)
        or_neg = np.empty(n_count, dtype=np.uint64)
        for t in range(n_words):
            valid = tail_mask if t == n_words - 1 else ALL_ONES
            last_stream = -1
            for g in range(n_groups):
                for j in range(n_count):
                    or_pos[j] = np.uint64(0)
                    or_neg[j] = np.uint64(0)
                r0 = g * group
                r1 = min(r0 + group, k_count)
                for i in range(r0, r1):
                    if scheme == INDEPENDENT:
                        stream = i
                    else:
                        stream = g // groups_per_stream
                    if stream != last_stream:
                        base = ((m * n_streams + stream) * n_words + t) * n_planes
                        for p in range(n_planes):
                            planes[p] = prng_word(key, base + p)
                        if use_table:
                            fill_lt_table(planes, lg + bits, bits, v_table)
                        last_stream = stream
                    x = xmag[m, i]
                    if x == 0:
                        continue  # empty region: the row never fires
                    xs = lt_mask(planes, lg, bits, x)
                    if scheme == EXCLUSIVE:
                        xs &= slot_mask(planes, lg, i - r0)
                    if xs == 0:
                        continue
                    sx = xneg[m, i]
                    for j in range(n_count):
                        if use_table:
                            fire = xs & v_table[wmag[i, j]]
                        else:
                            fire = xs & lt_mask(planes, lg + bits, bits, wmag[i, j])
                        # Branch-free routing to the positive or negative OR tree.
                        neg = np.uint64(0) - np.uint64(sx ^ wneg[i, j])
                        or_neg[j] |= fire & neg
                        or_pos[j] |= fire & ~neg
                for j in range(n_count):
                    counts[m, j, 0] += popcount64(or_pos[j] & valid)
                    counts[m, j, 1] += popcount64(or_neg[j] & valid)
    return counts
