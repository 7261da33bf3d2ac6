"""Dropout patterns and the SGD search of their distribution pi.

A pattern keeps ``k`` of every ``dp`` consecutive groups of a layer's units,
starting at a random ``offset`` (``k = 1``: the paper's "keep every dp-th unit").
A group is one unit (row pattern: one row of the next GEMM's weight) or ``tile``
consecutive units (tile pattern: a band of ``tile``-wide GEMM tiles). The kept
units are a sorted index array, so every GEMM runs on a compacted copy of the
operands and the dropped units are never touched.

Each unit is kept with probability ``k/dp`` under a random offset, so the drop
rate of pi is ``sum_j pi_j (1 - k_j/dp_j)``. The search fits pi (softmax of
logits, plain gradient descent) so that this equals ``p`` and the distribution of
the number of dropped groups in a window of ``window`` consecutive groups matches
Binomial(window, p) (KL(q || Binomial)) [inferred: the paper states the target,
not the window; over a whole 2,048-unit layer the binomial is a spike no regular
pattern can match, so the window is a config field].
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np

__all__ = ["Pattern", "PatternSet", "binomial_pmf", "count_distribution", "keep_indices", "search_pi"]


@dataclass(frozen=True)
class Pattern:
    dp: int  # period, in groups
    k: int  # groups kept per period

    @property
    def drop_rate(self) -> float:
        return 1.0 - self.k / self.dp


def keep_indices(n: int, dp: int, k: int, offset: int, tile: int = 1) -> np.ndarray:
    """Sorted units kept out of ``n``: groups ``g`` of ``tile`` units with
    ``(g - offset) mod dp < k``."""
    groups = np.arange(-(-n // tile))
    kept = groups[(groups - offset) % dp < k]
    if tile == 1:
        return kept.astype(np.int64)
    idx = (kept[:, None] * tile + np.arange(tile)[None, :]).reshape(-1)
    return idx[idx < n].astype(np.int64)


def binomial_pmf(n: int, p: float) -> np.ndarray:
    return np.array([comb(n, c) * p**c * (1 - p) ** (n - c) for c in range(n + 1)])


def count_distribution(pattern: Pattern, window: int) -> np.ndarray:
    """P(c groups dropped in a window of ``window`` groups), c = 0..window, over the offset."""
    out = np.zeros(window + 1)
    for offset in range(pattern.dp):
        kept = int(np.sum((np.arange(window) - offset) % pattern.dp < pattern.k))
        out[window - kept] += 1.0 / pattern.dp
    return out


class PatternSet:
    """All patterns with ``dp <= max_period`` and their count distributions."""

    def __init__(self, max_period: int, window: int):
        self.patterns = [Pattern(dp, k) for dp in range(1, max_period + 1) for k in range(1, dp + 1)
                         if np.gcd(dp, k) == 1]  # (4, 2) keeps what (2, 1) keeps, on a coarser offset grid
        self.window = window
        self.rates = np.array([pt.drop_rate for pt in self.patterns])
        self.counts = np.stack([count_distribution(pt, window) for pt in self.patterns])


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def search_pi(p: float, max_period: int = 8, window: int = 16, steps: int = 3000, lr: float = 0.5,
              rate_weight: float = 100.0) -> dict:
    """Fit pi over :class:`PatternSet` by gradient descent on softmax logits.

    Loss = KL(q || Binomial(window, p)) + rate_weight * (E[drop] - p)^2, where q is
    the pi-mixture of the patterns' dropped-count distributions. Returns pi, the
    patterns, the final KL, the expected drop rate, and the KL of the best single
    pattern (what a fixed pattern would give) for comparison.
    """
    ps = PatternSet(max_period, window)
    target = binomial_pmf(window, p)
    logt = np.log(np.maximum(target, 1e-300))
    z = np.zeros(len(ps.patterns))
    # start near the rate: mass on patterns close to p
    z -= 10.0 * np.abs(ps.rates - p)
    eps = 1e-12
    history = []
    for t in range(steps):
        pi = _softmax(z)
        q = pi @ ps.counts
        kl = float(np.sum(np.where(q > 0, q * (np.log(q + eps) - logt), 0.0)))
        rate = float(pi @ ps.rates)
        dq = np.where(q > 0, np.log(q + eps) - logt + 1.0, 0.0)
        g = ps.counts @ dq + 2.0 * rate_weight * (rate - p) * ps.rates
        z -= lr * pi * (g - pi @ g)
        if t % max(steps // 50, 1) == 0:
            history.append((t, kl, rate))
    pi = _softmax(z)
    q = pi @ ps.counts
    kl = float(np.sum(np.where(q > 0, q * (np.log(q + eps) - logt), 0.0)))
    single = [float(np.sum(np.where(c > 0, c * (np.log(c + eps) - logt), 0.0))) for c in ps.counts]
    best = int(np.argmin(np.abs(ps.rates - p) + 1e-9 * np.array(single)))
    return {
        "patterns": ps.patterns,
        "pi": pi,
        "kl": kl,
        "drop_rate": float(pi @ ps.rates),
        "q": q,
        "target": target,
        "kl_single_pattern": single[best],
        "history": history,
    }


def sampler(result: dict, min_pi: float = 1e-4):
    """(patterns, cumulative probabilities) with negligible patterns removed."""
    keep = [i for i, w in enumerate(result["pi"]) if w >= min_pi]
    pats = [result["patterns"][i] for i in keep]
    w = np.array([result["pi"][i] for i in keep])
    return pats, np.cumsum(w / w.sum())
