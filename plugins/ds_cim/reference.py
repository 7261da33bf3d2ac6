"""Plain numpy reference of the DS-CIM stochastic MVM, one sample at a time.

Same arithmetic as :func:`plugins.ds_cim.kernels.mvm_counts`, written the
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

from plugins.ds_cim.kernels import EXCLUSIVE, GOLDEN, INDEPENDENT, MIX1, MIX2

__all__ = ["mvm_counts_reference", "prng_words"]


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
) -> np.ndarray:
    """Counter values ``(M, N, 2)`` (positive, negative), as the kernel defines them."""
    m_count, k_count = xmag.shape
    n_count = wmag.shape[1]
    n_words = (length + 63) // 64
    lg = int(np.log2(group)) if scheme == EXCLUSIVE else 0
    n_planes = lg + 2 * bits
    n_groups = -(-k_count // group)
    n_streams = k_count if scheme == INDEPENDENT else -(-n_groups // groups_per_stream)
    counts = np.zeros((m_count, n_count, 2), dtype=np.int64)
    m_index = np.arange(m_count)[:, None, None]
    t_index = np.arange(n_words)[None, :, None]
    p_index = np.arange(n_planes)[None, None, :]

    def samples(stream: int):
        base = ((m_index * n_streams + stream) * n_words + t_index) * n_planes + p_index
        words = prng_words(key, base)  # (M, n_words, n_planes)
        slot = _sample_values(words, 0, lg, length)
        u = _sample_values(words, lg, bits, length)
        v = _sample_values(words, lg + bits, bits, length)
        return slot, u, v  # each (M, L)

    wneg = wneg.astype(bool)
    xneg = xneg.astype(bool)
    for g in range(n_groups):
        rows = range(g * group, min((g + 1) * group, k_count))
        tree = np.zeros((m_count, length, n_count, 2), dtype=bool)
        if scheme != INDEPENDENT:
            slot, u, v = samples(g // groups_per_stream)
        for i in rows:
            if scheme == INDEPENDENT:
                slot, u, v = samples(i)
            row_on = u < xmag[:, i, None]  # (M, L)
            if scheme == EXCLUSIVE:
                row_on &= slot == (i - g * group)
            fire = row_on[:, :, None] & (v[:, :, None] < wmag[i][None, None, :])  # (M, L, N)
            negative = xneg[:, i, None] ^ wneg[i][None, :]  # (M, N)
            tree[..., 0] |= fire & ~negative[:, None, :]
            tree[..., 1] |= fire & negative[:, None, :]
        counts += tree.sum(axis=1)
    return counts
