"""Plain numpy reference of the DS-CIM stochastic MVM, one sample at a time.

Same arithmetic as :func:`harness_plugins.ds_cim.kernels.mvm_counts`, written the
obvious way so the bit-sliced kernel has something independent to agree with:
the PRNG words are unpacked into one integer random number per sample (slot, u,
v), each row's firing is a plain integer comparison, an OR tree is ``any`` over
the group's rows, and a counter is a sum. Only the PRNG (splitmix64 over the
same counter layout) is shared with the kernel; everything after it is computed
differently. ``tests/test_ds_cim.py`` requires bit-for-bit equal counters, and
``benchmarks/bench_ds_cim.py`` measures how much faster the kernel is.
"""

from __future__ import annotations

import numpy as np

from harness_plugins.ds_cim.kernels import EXCLUSIVE, GOLDEN, INDEPENDENT, MIX1, MIX2, PARTITION_WEIGHT, REMAP_POW2

__all__ = ["mvm_counts_reference", "pow2_shifts", "prng_words"]


def pow2_shifts(group_max: np.ndarray, bits: int) -> np.ndarray:
    """Per-group left shift of ``remap=pow2``: the largest ``s`` with ``max * 2**s <= 2**bits``.

    Written as ``bits - ceil(log2(max))`` via ``np.frexp`` (exact for integers),
    not as the kernel's loop; 0 where the group is all zeros.
    """
    group_max = np.asarray(group_max, dtype=np.int64)
    mantissa, exponent = np.frexp(np.maximum(group_max, 1).astype(np.float64))
    ceil_log2 = np.where(mantissa == 0.5, exponent - 1, exponent)  # exact powers of two
    return np.where(group_max > 0, bits - ceil_log2, 0).astype(np.int64)


def prng_words(key: int, counters: np.ndarray) -> np.ndarray:
    """splitmix64 outputs ``counters + 1`` of the stream seeded with ``key`` (uint64 arrays)."""
    with np.errstate(over="ignore"):
        z = np.uint64(key) + (counters.astype(np.uint64) + np.uint64(1)) * GOLDEN
        z = (z ^ (z >> np.uint64(30))) * MIX1
        z = (z ^ (z >> np.uint64(27))) * MIX2
        return z ^ (z >> np.uint64(31))


def _sample_values(words: np.ndarray, first: int, nbits: int, length: int) -> np.ndarray:
    """Integer random number of every sample from bit planes ``words[..., first:first+nbits]``.

    ``words`` has shape ``(..., n_words, n_planes)``; the result ``(..., length)``.
    """
    shifts = np.arange(64, dtype=np.uint64)
    value = np.zeros(words.shape[:-1] + (64,), dtype=np.int64)
    for k in range(nbits):
        bit = (words[..., first + k, None] >> shifts) & np.uint64(1)
        value |= bit.astype(np.int64) << k
    return value.reshape(words.shape[:-2] + (-1,))[..., :length]


def mvm_counts_reference(
    xmag: np.ndarray,
    xneg: np.ndarray,
    wmag: np.ndarray,
    wneg: np.ndarray,
    key: int,
    scheme: int,
    length: int,
    bits: int,
    group: int,
    groups_per_stream: int,
    remap: int = 0,
    partition: int = 0,
) -> np.ndarray:
    """Counter values ``(M, N, 2)`` (positive, negative), as the kernel defines them
    (with ``remap=pow2`` or ``partition=weight``: group counts weighted by
    ``2**(log2(G) + 2 bits - sx - sw)``)."""
    m_count, k_count = xmag.shape
    n_count = wmag.shape[1]
    n_words = (length + 63) // 64
    lg = int(np.log2(group)) if scheme == EXCLUSIVE else 0
    n_planes = lg + 2 * bits
    n_groups = -(-k_count // group)
    n_streams = k_count if scheme == INDEPENDENT else -(-n_groups // groups_per_stream)
    by_weight = scheme == EXCLUSIVE and partition == PARTITION_WEIGHT
    weighted = remap == REMAP_POW2 or by_weight
    counts = np.zeros((m_count, n_count, 2), dtype=np.int64)
    m_index = np.arange(m_count)[:, None, None]
    t_index = np.arange(n_words)[None, :, None]
    p_index = np.arange(n_planes)[None, None, :]

    def samples(stream: int):
        base = ((m_index * n_streams + stream) * n_words + t_index) * n_planes + p_index
        words = prng_words(key, base)  # (M, n_words, n_planes)
        if by_weight:  # u first, then one (lg + bits)-bit slice coordinate
            u = _sample_values(words, 0, bits, length)
            s = _sample_values(words, bits, lg + bits, length)
            return s, u, s
        slot = _sample_values(words, 0, lg, length)
        u = _sample_values(words, lg, bits, length)
        v = _sample_values(words, lg + bits, bits, length)
        return slot, u, v  # each (M, L)

    wneg = wneg.astype(bool)
    xneg = xneg.astype(bool)
    xmag = np.asarray(xmag, dtype=np.int64)
    wmag = np.asarray(wmag, dtype=np.int64)
    for g in range(n_groups):
        rows = range(g * group, min((g + 1) * group, k_count))
        x_g = xmag[:, rows.start:rows.stop]  # (M, rows)
        w_g = wmag[rows.start:rows.stop]  # (rows, N)
        sx = np.zeros(m_count, dtype=np.int64)
        sw = np.zeros(n_count, dtype=np.int64)
        if remap == REMAP_POW2:
            sx = pow2_shifts(x_g.max(axis=1), bits)  # (M,)
            x_g = x_g * (2 ** sx)[:, None]
        if by_weight:
            # Each row owns the slice [lo, hi) of the slice axis, sized |w| and scaled
            # so that the group's weight sum fills more than half of 2**(lg + bits).
            sw = pow2_shifts(w_g.sum(axis=0), lg + bits)  # (N,)
            hi = np.cumsum(w_g, axis=0) * (2 ** sw)[None, :]
            lo = hi - w_g * (2 ** sw)[None, :]
        elif remap == REMAP_POW2:
            sw = pow2_shifts(w_g.max(axis=0), bits)  # (N,)
            w_g = w_g * (2 ** sw)[None, :]
        tree = np.zeros((m_count, length, n_count, 2), dtype=bool)
        if scheme != INDEPENDENT:
            slot, u, v = samples(g // groups_per_stream)
        for i in rows:
            if scheme == INDEPENDENT:
                slot, u, v = samples(i)
            row_on = u < x_g[:, i - rows.start, None]  # (M, L)
            if by_weight:
                r = i - rows.start
                fire = row_on[:, :, None] & (lo[r] <= v[:, :, None]) & (v[:, :, None] < hi[r])  # (M, L, N)
            else:
                if scheme == EXCLUSIVE:
                    row_on &= slot == (i - g * group)
                fire = row_on[:, :, None] & (v[:, :, None] < w_g[i - rows.start][None, None, :])  # (M, L, N)
            negative = xneg[:, i, None] ^ wneg[i][None, :]  # (M, N)
            tree[..., 0] |= fire & ~negative[:, None, :]
            tree[..., 1] |= fire & negative[:, None, :]
        if weighted:
            weight = 2 ** (lg + 2 * bits - sx[:, None] - sw[None, :])  # (M, N)
            counts += tree.sum(axis=1) * weight[:, :, None]
        else:
            counts += tree.sum(axis=1)
    return counts
