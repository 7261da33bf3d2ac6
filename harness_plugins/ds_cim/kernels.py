"""Bit-parallel numba kernels of the DS-CIM stochastic MVM (64 samples per uint64 word).

Two kernels compute the same counters, bit for bit: :func:`mvm_counts_prepared` (every
scheme and partition) and :func:`mvm_counts_sliced` (exclusive scheme with weight slices,
the DS-CIM1 default: a cheaper order of work, see its docstring); :func:`mvm_counts` and
the backend pick one (:func:`uses_sliced_kernel`).

A kernel returns *counter values*, not products: for every input vector ``m``
and column ``j`` the sum over OR groups of popcount(OR-tree output) over the
``L`` samples, once for the positive tree and once for the negative tree. The
caller (``harness_plugins.ds_cim.DsCimBackend``) rescales and applies the digital
corrections. :mod:`harness_plugins.ds_cim.reference` computes the same counters sample
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

Data remapping (``remap`` argument) [inferred reading of the abstract's "data
remapping"]:

* ``REMAP_NONE`` (0): operands as given; the result is the plain counter values.
* ``REMAP_POW2`` (1): per OR group, every operand is shifted left by the
  leading-zero count of the group's largest magnitude (the largest ``s`` with
  ``max << s <= 2**bits``; 0 for an all-zero group): weights per (group, column),
  computed once per weight tensor (:func:`weight_tables`, offline as in hardware), inputs per (input vector, group)
  (online). Each group then uses the full unipolar range, so its rows fire up to
  ``2**(sx + sw)`` times as often. Shifting integers is exact, so the estimate
  stays unbiased once the group's count is scaled back by ``2**-(sx + sw)``. The
  kernel returns that exactly, in integers:
  ``sum_g count_g << (log2(G) + 2 bits - sx - sw)`` (``log2(G)`` is 0 for the
  naive schemes), so ``counts / L`` is the estimate of the integer product.

Partition of an exclusive group's sample space (``partition`` argument, EXCLUSIVE only):

* ``PARTITION_SLOT`` (0): equal slots, as above.
* ``PARTITION_WEIGHT`` (1) [inferred]: the point is ``(u, s)``: ``bits`` u bits
  (planes ``[0, bits)``) and a ``log2(G) + bits``-bit slice coordinate ``s``
  (planes ``[bits, 2 bits + log2(G))``, same plane count as the slot layout).
  Per (group, column) the weights' cumulative magnitudes, shifted by
  ``sw = pow2_shift(sum |w|, log2(G) + bits)`` so the group's weight sum fills
  more than half of ``s``'s range, give row ``i`` the slice ``[lo_i, hi_i)``;
  it fires iff ``lo_i <= s < hi_i and u < x_i``. Disjoint slices: OR = sum;
  ``P = |w| 2**sw / 2**(log2 G + bits) * x / 2**bits``. The counts are weighted
  as for ``REMAP_POW2`` (with this ``sw``); inputs are shifted too if ``remap``
  is ``REMAP_POW2``.

A stream is shared by ``groups_per_stream`` consecutive OR groups (the rows of
one array share one PRNG point per sample when that is ``rows / G``; each group
draws its own when it is 1). For ``INDEPENDENT`` the stream is the row.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

EXCLUSIVE, INDEPENDENT, NESTED = 0, 1, 2
SCHEMES = {"exclusive": EXCLUSIVE, "independent": INDEPENDENT, "nested": NESTED}
REMAP_NONE, REMAP_POW2 = 0, 1
REMAPS = {"none": REMAP_NONE, "pow2": REMAP_POW2}
PARTITION_SLOT, PARTITION_WEIGHT = 0, 1
PARTITIONS = {"slot": PARTITION_SLOT, "weight": PARTITION_WEIGHT}

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


@njit(cache=True, inline="always")
def fill_slice_tables(planes, bits, lg, low, high_lt, high_eq):
    """Two-level comparison tables for the ``lg + bits``-bit slice coordinate ``s``.

    ``s = s_low + 2**bits * s_high`` with ``s_low`` on planes ``[bits, 2 bits)`` and
    ``s_high`` on ``[2 bits, 2 bits + lg)``: ``low[c] = (s_low < c)``,
    ``high_lt[h] = (s_high < h)``, ``high_eq[h] = (s_high == h)``. Then
    ``s < c`` is ``high_lt[c >> bits] | (high_eq[c >> bits] & low[c & (2**bits - 1)])``
    (:func:`slice_lt`), three loads per cell instead of ``lg + bits`` plane steps.
    """
    for c in range(low.shape[0]):
        low[c] = lt_mask(planes, bits, bits, c)
    for h in range(high_lt.shape[0]):
        high_lt[h] = lt_mask(planes, 2 * bits, lg, h)
        mask = ALL_ONES
        for k in range(lg):
            if (h >> k) & 1:
                mask &= planes[2 * bits + k]
            else:
                mask &= ~planes[2 * bits + k]
        high_eq[h] = mask


@njit(cache=True, inline="always")
def slice_lt(low, high_lt, high_eq, bits, c):
    """Mask of the samples whose slice coordinate is below ``c`` (tables of :func:`fill_slice_tables`)."""
    h = c >> bits
    if h >= high_lt.shape[0]:
        return ALL_ONES
    return high_lt[h] | (high_eq[h] & low[c & ((np.int64(1) << bits) - 1)])


@njit(cache=True, inline="always")
def pow2_shift(mx, bits):
    """Largest ``s`` with ``mx << s <= 2**bits`` (0 for ``mx <= 0``): the leading-zero count."""
    s = np.int64(0)
    if mx <= 0:
        return s
    full = np.int64(1) << np.int64(bits)
    while (np.int64(mx) << (s + np.int64(1))) <= full:
        s += np.int64(1)
    return s


def mvm_counts(xmag, xneg, wmag, wneg, key, scheme, length, bits, group, groups_per_stream, remap=0, partition=0):
    """Counter values of the stochastic MVM ``(M, K) x (K, N)``: int64 ``(M, N, 2)``.

    ``xmag``/``wmag`` are the unipolar magnitudes (any integer type, ``0 .. 2**bits``),
    ``xneg``/``wneg`` the sign bits (uint8) routing a row's product to the
    negative OR tree. ``[..., 0]`` is the positive count, ``[..., 1]`` the
    negative one. ``group`` must be a power of two. With ``remap=REMAP_POW2`` or
    ``partition=PARTITION_WEIGHT`` (exclusive only) every group's count is
    weighted by ``2**(log2(G) + 2 bits - sx - sw)`` (module docstring), so
    ``counts / L`` is the estimate of the integer product.

    The inputs go to the kernels as uint8, as the backend feeds them
    (:func:`encode_codes`): each kernel is then compiled once, for the types it runs with
    (another integer type would compile it again, ~10 s per kernel).
    """
    xmag, xneg = np.asarray(xmag), np.asarray(xneg)
    if xmag.size and (xmag.min() < 0 or xmag.max() > 255):
        raise ValueError(f"mvm_counts: input magnitudes must be in [0, 255], got [{xmag.min()}, {xmag.max()}]")
    xmag = np.ascontiguousarray(xmag, dtype=np.uint8)
    xneg = np.ascontiguousarray(xneg != 0, dtype=np.uint8)
    tables = weight_tables(wmag, scheme, bits, group, remap, partition)
    if uses_sliced_kernel(scheme, partition, length):
        return mvm_counts_sliced(xmag, xneg, sliced_tables(tables, wneg, bits, group), key, length, bits, group,
                                 groups_per_stream, remap)
    return mvm_counts_prepared(xmag, xneg, wneg, tables, key, scheme, length, bits, group, groups_per_stream,
                               remap, partition)


def uses_sliced_kernel(scheme, partition, length):
    """True when :func:`mvm_counts_sliced` computes the counters: exclusive scheme, weight slices,
    and more than one 64-sample word (it works on 4 words at a time, so a single word would be
    padded 4x: there the general kernel is as fast). Every other case runs :func:`mvm_counts_prepared`;
    both give the same counters."""
    return scheme == EXCLUSIVE and partition == PARTITION_WEIGHT and length > 64


@njit(cache=True)
def weight_tables(wmag, scheme, bits, group, remap=0, partition=0):
    """The weight side of the MVM, offline: ``(wshift, wm, lo, hi)``.

    Per (group, column) the pow2 shift, the shifted magnitudes (slot partition) or
    each row's slice ``[lo, hi)`` of the slice axis (weight partition). It depends
    only on the stationary weights, so the backend computes it once per weight
    tensor (``prepare_weight``) and every call reuses it.
    """
    k_count = wmag.shape[0]
    n_count = wmag.shape[1]
    lg = 0
    if scheme == EXCLUSIVE:
        while (1 << lg) < group:
            lg += 1
    by_weight = scheme == EXCLUSIVE and partition == PARTITION_WEIGHT
    s_bits = lg + bits
    n_groups = (k_count + group - 1) // group
    wshift = np.zeros((n_groups, n_count), dtype=np.int64)
    wm = wmag.copy()
    lo = np.zeros((k_count, n_count), dtype=np.int64)
    hi = np.zeros((k_count, n_count), dtype=np.int64)
    for g in range(n_groups):
        r0 = g * group
        r1 = min(r0 + group, k_count)
        for j in range(n_count):
            if by_weight:
                total = np.int64(0)
                for i in range(r0, r1):
                    total += np.int64(wmag[i, j])
                sh = pow2_shift(total, s_bits)
                acc = np.int64(0)
                for i in range(r0, r1):
                    lo[i, j] = acc << sh
                    acc += np.int64(wmag[i, j])
                    hi[i, j] = acc << sh
                wshift[g, j] = sh
            elif remap == REMAP_POW2:
                mx = np.int64(0)
                for i in range(r0, r1):
                    mx = max(mx, np.int64(wmag[i, j]))
                sh = pow2_shift(mx, bits)
                wshift[g, j] = sh
                for i in range(r0, r1):
                    wm[i, j] = np.int64(wmag[i, j]) << sh
    return wshift, wm, lo, hi


@njit(cache=True, parallel=True)
def mvm_counts_prepared(xmag, xneg, wneg, tables, key, scheme, length, bits, group, groups_per_stream,
                        remap=0, partition=0):
    """:func:`mvm_counts` with the weight side precomputed by :func:`weight_tables`."""
    wshift, wm, lo, hi = tables
    m_count, k_count = xmag.shape
    n_count = wm.shape[1]
    key = np.uint64(key)
    n_words = (length + 63) // 64
    tail = length - 64 * (n_words - 1)
    tail_mask = ALL_ONES if tail == 64 else (np.uint64(1) << np.uint64(tail)) - np.uint64(1)
    lg = 0
    if scheme == EXCLUSIVE:
        while (1 << lg) < group:
            lg += 1
    by_weight = scheme == EXCLUSIVE and partition == PARTITION_WEIGHT
    weighted = remap == REMAP_POW2 or by_weight
    top = np.int64(lg + 2 * bits)  # weighted counts are in units of 2**-top
    n_planes = lg + 2 * bits
    s_bits = lg + bits  # PARTITION_WEIGHT: the point's slice coordinate
    n_groups = (k_count + group - 1) // group
    if scheme == INDEPENDENT:
        n_streams = k_count
    else:
        n_streams = (n_groups + groups_per_stream - 1) // groups_per_stream
    # Cells sharing one stream's point per word: the rows of its groups times the columns.
    rows_per_stream = 1 if scheme == INDEPENDENT else group * groups_per_stream
    n_thresholds = (1 << bits) + 1
    use_table = (not by_weight) and rows_per_stream * n_count > n_thresholds
    counts = np.zeros((m_count, n_count, 2), dtype=np.int64)
    for m in prange(m_count):
        # Input remapping (online): per (input vector, group) shift.
        xrow = np.empty(k_count, dtype=np.int64)
        xshift = np.zeros(n_groups, dtype=np.int64)
        for i in range(k_count):
            xrow[i] = xmag[m, i]
        if remap == REMAP_POW2:
            for g in range(n_groups):
                mx = np.int64(0)
                for i in range(g * group, min(g * group + group, k_count)):
                    mx = max(mx, xrow[i])
                sh = pow2_shift(mx, bits)
                xshift[g] = sh
                for i in range(g * group, min(g * group + group, k_count)):
                    xrow[i] = xrow[i] << sh
        planes = np.empty(n_planes, dtype=np.uint64)
        v_table = np.empty(n_thresholds, dtype=np.uint64)
        s_high_lt = np.empty(1 << lg, dtype=np.uint64)
        s_high_eq = np.empty(1 << lg, dtype=np.uint64)
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
                        elif by_weight:
                            fill_slice_tables(planes, bits, lg, v_table[: 1 << bits], s_high_lt, s_high_eq)
                        last_stream = stream
                    x = xrow[i]
                    if x == 0:
                        continue  # empty region: the row never fires
                    sx = xneg[m, i]
                    if by_weight:
                        # u on planes [0, bits), slice coordinate on [bits, bits + s_bits).
                        xs = lt_mask(planes, 0, bits, x)
                        if xs == 0:
                            continue
                        for j in range(n_count):
                            if hi[i, j] == lo[i, j]:
                                continue  # zero weight: empty slice
                            below_hi = slice_lt(v_table, s_high_lt, s_high_eq, bits, hi[i, j])
                            below_lo = slice_lt(v_table, s_high_lt, s_high_eq, bits, lo[i, j])
                            fire = xs & below_hi & ~below_lo
                            neg = np.uint64(0) - np.uint64(sx ^ wneg[i, j])
                            or_neg[j] |= fire & neg
                            or_pos[j] |= fire & ~neg
                        continue
                    xs = lt_mask(planes, lg, bits, x)
                    if scheme == EXCLUSIVE:
                        xs &= slot_mask(planes, lg, i - r0)
                    if xs == 0:
                        continue
                    for j in range(n_count):
                        if use_table:
                            fire = xs & v_table[wm[i, j]]
                        else:
                            fire = xs & lt_mask(planes, lg + bits, bits, wm[i, j])
                        # Branch-free routing to the positive or negative OR tree.
                        neg = np.uint64(0) - np.uint64(sx ^ wneg[i, j])
                        or_neg[j] |= fire & neg
                        or_pos[j] |= fire & ~neg
                if weighted:
                    for j in range(n_count):
                        w8 = top - xshift[g] - wshift[g, j]
                        counts[m, j, 0] += popcount64(or_pos[j] & valid) << w8
                        counts[m, j, 1] += popcount64(or_neg[j] & valid) << w8
                else:
                    for j in range(n_count):
                        counts[m, j, 0] += popcount64(or_pos[j] & valid)
                        counts[m, j, 1] += popcount64(or_neg[j] & valid)
    return counts


# ----------------------------------------------------------------- weight-sliced exclusive kernel


@njit(cache=True)
def sliced_tables(tables, wneg, bits, group):
    """Offline side of :func:`mvm_counts_sliced`: per (group, column) where each slice cut sits in
    the per-point comparison tables, and the weights' signs.

    Row ``k`` of group ``g`` owns ``[cut_k, cut_{k+1})`` of the slice coordinate (the cumulative
    shifted ``|w|`` of :func:`weight_tables`; rows past the end of a short last group get empty
    slices). ``cut_low[g, j, k]`` and ``cut_high[g, j, k]`` are the cut's positions in the low and
    high halves of :func:`_split_tables`' threshold axis, ``neg[g, j, k]`` the weight's sign as
    a 64-bit mask; laid out so the kernel reads one column's rows contiguously.
    """
    wshift, wm, lo, hi = tables
    k_count, n_count = lo.shape
    lg = 0
    while (1 << lg) < group:
        lg += 1
    s_low = (lg + bits + 1) // 2
    high_at = (1 << s_low) + 1  # where the high half starts in a table row
    n_groups = (k_count + group - 1) // group
    cut_low = np.zeros((n_groups, n_count, group + 1), dtype=np.uint16)
    cut_high = np.zeros((n_groups, n_count, group + 1), dtype=np.uint16)
    neg = np.zeros((n_groups, n_count, group), dtype=np.uint64)
    for g in range(n_groups):
        r0 = g * group
        r1 = min(r0 + group, k_count)
        for j in range(n_count):
            for k in range(group + 1):
                c = lo[r0 + k, j] if r0 + k < r1 else hi[r1 - 1, j]
                cut_low[g, j, k] = c & ((1 << s_low) - 1)
                cut_high[g, j, k] = high_at + (c >> s_low)
            for i in range(r0, r1):
                neg[g, j, i - r0] = ALL_ONES if wneg[i, j] else np.uint64(0)
    return wshift, cut_low, cut_high, neg


@njit(cache=True, inline="always")
def _split_tables(raw, first, nbits, tab, tb):
    """Two-level comparison tables of the ``nbits``-bit random values ``v`` of the 4 words of
    block ``tb`` (bit ``k`` of word ``4 tb + q`` on ``raw[first + k, 4 tb + q]``), for every
    threshold, into ``tab[tb]``: ``tab[tb, c, q]`` is word ``4 tb + q``'s mask.

    With ``lb = (nbits + 1) // 2`` low bits: ``tab[tb, c] = (v_low < c)`` for ``c <= 2**lb``, then
    from ``tab[tb, 2**lb + 1 + h]`` on ``(v_high < h)`` (all ones from ``h = 2**(nbits - lb)``). Then
    ``v < c`` is ``high[h] | (high[h + 1] & low[l])`` with ``h, l = c >> lb, c & (2**lb - 1)``:
    ``high[h + 1] & ~high[h]`` is ``v_high == h``, and the ``~high[h]`` is absorbed by the OR.
    Each half is built by doubling, one bit plane at a time from the low bit up (the recurrence of
    :func:`lt_mask` for every threshold at once). A threshold's 4 words are adjacent, so every
    step and every lookup (:func:`_lookup`) is one 256-bit operation.
    """
    lb = (nbits + 1) // 2
    high_at = (1 << lb) + 1
    _doubling_lt(raw, first, lb, tab, tb, 0)
    _doubling_lt(raw, first + lb, nbits - lb, tab, tb, high_at)
    for h in range(high_at + (1 << (nbits - lb)), high_at + (1 << (nbits - lb)) + 2):
        for q in range(4):
            tab[tb, h, q] = ALL_ONES


@njit(cache=True, inline="always")
def _doubling_lt(raw, first, nbits, out, tb, at):
    """``out[tb, at + c, q] = (v_q < c)`` for ``c < 2**nbits``: see :func:`_split_tables`."""
    t0 = 4 * tb
    for q in range(4):
        out[tb, at, q] = np.uint64(0)
    size = 1
    for k in range(nbits):
        n0 = ~raw[first + k, t0]
        n1 = ~raw[first + k, t0 + 1]
        n2 = ~raw[first + k, t0 + 2]
        n3 = ~raw[first + k, t0 + 3]
        for c in range(at, at + size):
            out[tb, c + size, 0] = n0 | out[tb, c, 0]
            out[tb, c + size, 1] = n1 | out[tb, c, 1]
            out[tb, c + size, 2] = n2 | out[tb, c, 2]
            out[tb, c + size, 3] = n3 | out[tb, c, 3]
        for c in range(at, at + size):
            out[tb, c, 0] &= n0
            out[tb, c, 1] &= n1
            out[tb, c, 2] &= n2
            out[tb, c, 3] &= n3
        size *= 2


@njit(cache=True, inline="always")
def _lookup(tab, tb, q, high, low):
    """``v < c`` for word ``4 tb + q`` from a table of :func:`_split_tables` (``high``, ``low``: the cut's positions)."""
    return tab[tb, high, q] | (tab[tb, high + 1, q] & tab[tb, low, q])


@njit(cache=True, parallel=True)
def mvm_counts_sliced(xmag, xneg, sliced, key, length, bits, group, groups_per_stream, remap=0):
    """:func:`mvm_counts_prepared` for ``scheme=EXCLUSIVE, partition=PARTITION_WEIGHT``: the same
    counters, bit for bit, with less work per MAC.

    Disjoint slices make a column's OR tree a sum over its rows, and row ``i``'s firing
    mask is ``X_i & S(hi_i) & ~S(lo_i)`` with ``X_i = (u < x_i)``, ``S(c) = (s < c)``.
    Per PRNG point (input vector, group) ``S`` and ``X`` are tabulated for every
    threshold (two levels each, built by doubling); a column's rows own consecutive
    slices, so ``S(lo_i) = S(hi_{i-1})`` is carried, and a MAC is, per 64 samples, one
    ``S`` lookup (3 loads, 2 ops), an and-not, an and and a popcount, 4 words at a time
    with everything in registers. Zero inputs are dropped from the point's row list;
    groups of zero inputs skip their point. Cuts are offline (:func:`sliced_tables`).
    """
    wshift, cut_low, cut_high, wneg = sliced
    m_count, k_count = xmag.shape
    n_count = cut_low.shape[1]
    key = np.uint64(key)
    n_words = (length + 63) // 64
    n_blocks = (n_words + 3) // 4  # 4 words at a time; words past the stream never fire
    n_pad = 4 * n_blocks
    tail = length - 64 * (n_words - 1)
    tail_mask = ALL_ONES if tail == 64 else (np.uint64(1) << np.uint64(tail)) - np.uint64(1)
    lg = 0
    while (1 << lg) < group:
        lg += 1
    top = np.int64(lg + 2 * bits)
    n_planes = lg + 2 * bits
    s_bits = lg + bits
    s_width = (1 << ((s_bits + 1) // 2)) + 1 + (1 << (s_bits - (s_bits + 1) // 2)) + 2
    u_low = (bits + 1) // 2
    u_width = (1 << u_low) + 1 + (1 << (bits - u_low)) + 2
    n_groups = (k_count + group - 1) // group
    n_streams = (n_groups + groups_per_stream - 1) // groups_per_stream
    counts = np.zeros((m_count, n_count, 2), dtype=np.int64)
    n_chunks = min(m_count, 256)  # scratch is allocated per chunk of input vectors, not per vector
    for ch in prange(n_chunks):
        m0 = ch * m_count // n_chunks
        m1 = (ch + 1) * m_count // n_chunks
        xrow = np.empty(k_count, dtype=np.int64)
        xshift = np.zeros(n_groups, dtype=np.int64)
        raw = np.zeros((n_planes, n_pad), dtype=np.uint64)  # raw[plane, word]
        valid = np.zeros(n_pad, dtype=np.uint64)
        valid[:n_words] = ALL_ONES
        valid[n_words - 1] = tail_mask
        u_tab = np.empty((n_blocks, u_width, 4), dtype=np.uint64)  # per block of 4 words: tables of u (for X) ...
        s_tab = np.empty((n_blocks, s_width, 4), dtype=np.uint64)  # ... and of the slice coordinate s (for S)
        # The point's row list: slice-cut index (-1 ends it), the row's X masks (0: only reload S(lo)), sign.
        op_cut = np.empty(2 * group + 1, dtype=np.uint64)
        op_end = np.empty(2 * group + 1, dtype=np.bool_)
        op_sx = np.empty(2 * group, dtype=np.uint64)
        op_x = np.empty((2 * group, n_pad), dtype=np.uint64)
        for m in range(m0, m1):
            for i in range(k_count):
                xrow[i] = xmag[m, i]
            if remap == REMAP_POW2:
                for g in range(n_groups):
                    mx = np.int64(0)
                    for i in range(g * group, min(g * group + group, k_count)):
                        mx = max(mx, xrow[i])
                    sh = pow2_shift(mx, bits)
                    xshift[g] = sh
                    for i in range(g * group, min(g * group + group, k_count)):
                        xrow[i] = xrow[i] << sh
            last_stream = -1
            for g in range(n_groups):
                r0 = g * group
                r1 = min(r0 + group, k_count)
                any_x = False
                for i in range(r0, r1):
                    any_x |= xrow[i] != 0
                if not any_x:
                    continue  # every region is empty: nothing fires, the point is not needed
                stream = g // groups_per_stream
                if stream != last_stream:
                    base = (m * n_streams + stream) * n_words * n_planes
                    for t in range(n_words):
                        for p in range(n_planes):
                            raw[p, t] = prng_word(key, base + t * n_planes + p)
                    for tb in range(n_blocks):
                        _split_tables(raw, 0, bits, u_tab, tb)
                        _split_tables(raw, bits, s_bits, s_tab, tb)
                    last_stream = stream
                n_ops = 0
                prev = 0  # the carried S(lo) is that of cut `prev`; S(cut 0) = S(0) = 0
                for i in range(r0, r1):
                    x = xrow[i]
                    if x == 0:
                        continue
                    k = i - r0
                    if k != prev:  # rows skipped since the last: reload S(lo) of this row
                        op_cut[n_ops] = k
                        op_end[n_ops] = False
                        op_sx[n_ops] = np.uint64(0)
                        for t in range(n_pad):
                            op_x[n_ops, t] = np.uint64(0)
                        n_ops += 1
                    op_cut[n_ops] = k + 1
                    op_end[n_ops] = False
                    op_sx[n_ops] = ALL_ONES if xneg[m, i] else np.uint64(0)
                    high = (1 << u_low) + 1 + (x >> u_low)
                    low = x & ((1 << u_low) - 1)
                    for tb in range(n_blocks):
                        for q in range(4):
                            op_x[n_ops, 4 * tb + q] = _lookup(u_tab, tb, q, high, low) & valid[4 * tb + q]
                    n_ops += 1
                    prev = k + 1
                op_end[n_ops] = True
                for j in range(n_count):
                    every = np.uint64(0)  # firing samples of the column's OR trees, and the negative ones
                    negative = np.uint64(0)
                    for tb in range(n_blocks):
                        t = 4 * tb
                        p0 = p1 = p2 = p3 = np.uint64(0)  # S(lo) carried from the previous row
                        e = 0
                        while not op_end[e]:  # not a counted loop: LLVM would vectorize it across rows, with gathers
                            kc = op_cut[e]
                            high = np.int64(cut_high[g, j, kc])
                            low = np.int64(cut_low[g, j, kc])
                            a0 = _lookup(s_tab, tb, 0, high, low)
                            a1 = _lookup(s_tab, tb, 1, high, low)
                            a2 = _lookup(s_tab, tb, 2, high, low)
                            a3 = _lookup(s_tab, tb, 3, high, low)
                            fired = (_popcount_u(op_x[e, t] & a0 & ~p0) + _popcount_u(op_x[e, t + 1] & a1 & ~p1)
                                     + _popcount_u(op_x[e, t + 2] & a2 & ~p2) + _popcount_u(op_x[e, t + 3] & a3 & ~p3))
                            p0, p1, p2, p3 = a0, a1, a2, a3
                            every += fired
                            negative += fired & (op_sx[e] ^ wneg[g, j, kc - np.uint64(1)])
                            e += 1
                    w8 = top - xshift[g] - wshift[g, j]
                    counts[m, j, 0] += np.int64(every - negative) << w8
                    counts[m, j, 1] += np.int64(negative) << w8
    return counts


@njit(cache=True, inline="always")
def _popcount_u(x):
    """:func:`popcount64` as a uint64."""
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@njit(cache=True, parallel=True)
def encode_codes(codes, offset_binary):
    """Unipolar magnitudes and sign bits (both uint8) of int8-range codes, in one pass.

    ``sign_split``: ``|c|`` (``0..128``) and ``c < 0``; ``offset_binary``: ``c + 128`` and 0.
    The same values as ``harness_plugins.ds_cim.encode_operand``, 8x less memory than int64.
    """
    m_count, k_count = codes.shape
    mag = np.empty((m_count, k_count), dtype=np.uint8)
    neg = np.zeros((m_count, k_count), dtype=np.uint8)
    for m in prange(m_count):
        for i in range(k_count):
            c = np.int64(codes[m, i])
            if offset_binary:
                mag[m, i] = c + 128
            elif c < 0:
                mag[m, i] = -c
                neg[m, i] = 1
            else:
                mag[m, i] = c
    return mag, neg
