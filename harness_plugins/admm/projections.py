"""The Euclidean projections ADMM alternates with training, and the ratio allocation.

ADMM splits ``min_W loss(W)  s.t. W in S`` into a training step on
``loss(W) + rho/2 ||W - Z + U||^2`` and a projection ``Z = Proj_S(W + U)``. Every
function here is such a projection (the closest point of ``S`` in the L2 sense)
or the bookkeeping that decides what ``S`` is for each layer. They are plain
numpy, deterministic (stable sorts, ties broken by position) and do not touch the
model: the technique in :mod:`harness_plugins.admm.admm` calls them with arrays.

Layouts follow :mod:`harness.nn`: the last axis of every weight is the output
channel (Dense ``(in, out)``, Conv2d HWIO ``(kh, kw, C_in, C_out)``), so the GEMM
matrix is ``W.reshape(-1, C_out)``: ``k`` rows (one per input position) by ``n``
columns (one per filter).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

__all__ = [
    "ALLOCATIONS",
    "PROJECTIONS",
    "allocate_keep",
    "group_norms",
    "keep_count",
    "project_prune",
    "project_quant",
    "project_quant_tensor",
    "prune_support",
    "quant_levels",
]

#: ``irregular``: any weights (top-k by magnitude). ``filter``: whole output
#: channels (a conv filter ``W[..., c]``, a neuron's input weights). ``column``:
#: whole columns of the paper's ``(filters x C*kh*kw)`` weight matrix, i.e. one
#: input position ``(i, j, c_in)`` across every filter (a row of our ``(k, n)``
#: GEMM matrix; for Dense, one input feature).
PROJECTIONS = ("irregular", "filter", "column")

#: How a global ratio is spread over the layers without an override: ``erk``
#: gives each layer non-zeros proportional to the sum of its dimensions
#: (Erdos-Renyi-kernel, so small layers such as conv1 and the classifier keep more,
#: like the paper's hand-set LeNet ratios); ``uniform`` keeps the same fraction of
#: every layer; ``global`` sets one magnitude threshold over all free layers of
#: the trained dense model (layers whose weights are small, typically the big
#: fully connected ones, lose the most) [inferred: the paper hand-sets ratios].
ALLOCATIONS = ("erk", "uniform", "global")


def _check_projection(projection: str) -> None:
    if projection not in PROJECTIONS:
        raise ValueError(f"projection={projection!r}: valid are {', '.join(PROJECTIONS)}")


def group_norms(w: np.ndarray, projection: str) -> np.ndarray:
    """L2 norm of each prunable group: one per filter (``n``) or per column (``k``)."""
    _check_projection(projection)
    mat = w.reshape(-1, w.shape[-1]).astype(np.float64)
    if projection == "filter":
        return np.sqrt(np.sum(mat * mat, axis=0))
    if projection == "column":
        return np.sqrt(np.sum(mat * mat, axis=1))
    raise ValueError("irregular pruning has no groups")


def _top(scores: np.ndarray, keep: int) -> np.ndarray:
    """Boolean mask of the ``keep`` largest scores (ties: the earlier index wins)."""
    flat = scores.reshape(-1)
    keep = int(min(max(keep, 0), flat.size))
    out = np.zeros(flat.size, dtype=bool)
    if keep:
        out[np.argsort(-flat, kind="stable")[:keep]] = True
    return out.reshape(scores.shape)


def prune_support(w: np.ndarray, keep: int, projection: str = "irregular") -> np.ndarray:
    """The 0/1 support (float32, W-shaped) that :func:`project_prune` keeps.

    ``keep`` counts weights for ``irregular`` and groups (filters or columns) for
    the structured projections.
    """
    _check_projection(projection)
    if projection == "irregular":
        return _top(np.abs(w), keep).astype(np.float32)
    norms = group_norms(w, projection)
    chosen = _top(norms, keep)
    k, n = int(np.prod(w.shape[:-1])), w.shape[-1]
    if projection == "filter":
        support = np.broadcast_to(chosen[None, :], (k, n))
    else:
        support = np.broadcast_to(chosen[:, None], (k, n))
    return support.reshape(w.shape).astype(np.float32)


def project_prune(w: np.ndarray, keep: int, projection: str = "irregular") -> np.ndarray:
    """Closest point to ``w`` with at most ``keep`` non-zero weights (or groups).

    For a cardinality constraint the Euclidean projection keeps the largest
    entries (or the groups with the largest L2 norms) unchanged and zeroes the
    rest, which is why magnitude is the pruning criterion inside ADMM.
    """
    return (w * prune_support(w, keep, projection)).astype(w.dtype)


def quant_levels(bits: int) -> int:
    """Largest integer level ``M`` of a ``bits``-bit symmetric code: Q in {-M..M}.

    1 bit is binary ``{-1, +1}`` (returned as 1, with zero excluded); ``b >= 2``
    bits hold ``{-(2^(b-1)-1), ..., 2^(b-1)-1}`` (zero included, so pruned weights
    stay representable).
    """
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
        raise ValueError(f"bits={bits!r}: use an integer in 1..16 (1 = binary alpha*sign)")
    return 1 if bits == 1 else 2 ** (bits - 1) - 1


def project_quant(w: np.ndarray, bits: int, support: np.ndarray | None = None, iterations: int = 20,
                  per_channel: bool = False) -> tuple[np.ndarray, float | np.ndarray]:
    """Closest ``alpha * Q`` with one ``alpha`` per layer, or per output channel.

    ``per_channel=True`` fits every filter ``W[..., c]`` its own scale (as
    XNOR-Net does for binary weights) and returns the array of scales; the codes
    are still ``bits`` wide. See :func:`project_quant_tensor` for the projection.
    """
    if not per_channel:
        return project_quant_tensor(w, bits, support, iterations)
    n = w.shape[-1]
    mat = w.reshape(-1, n)
    sup = None if support is None else np.broadcast_to(support, w.shape).reshape(-1, n)
    out = np.zeros_like(mat)
    alphas = np.zeros(n)
    for c in range(n):
        out[:, c], alphas[c] = project_quant_tensor(mat[:, c], bits, None if sup is None else sup[:, c], iterations)
    return out.reshape(w.shape), alphas


def project_quant_tensor(w: np.ndarray, bits: int, support: np.ndarray | None = None,
                         iterations: int = 20) -> tuple[np.ndarray, float]:
    """Closest ``alpha * Q`` to ``w`` (``Q`` integer codes of ``bits`` bits), and ``alpha``.

    Only entries in ``support`` (pruned weights are outside it and stay 0) are
    quantized. 1 bit: ``Q = sign(w)`` and the optimal scale is ``alpha = mean|w|``
    (closed form: minimize ``sum (|w_i| - alpha)^2``). More bits: alternate
    ``Q = clip(round(w / alpha), -M, M)`` and ``alpha = <w, Q> / <Q, Q>`` (each step
    lowers the error; started from ``alpha = max|w| / M``) [inferred: the paper
    states the projection, not how alpha is searched].
    """
    m = quant_levels(bits)
    live = np.ones(w.shape, dtype=bool) if support is None else np.asarray(support) != 0
    x = w[live].astype(np.float64)
    out = np.zeros_like(w)
    if x.size == 0 or not np.any(x):
        return out, 0.0
    if bits == 1:
        alpha = float(np.mean(np.abs(x)))
        q = np.where(x >= 0, 1.0, -1.0)
    else:
        alpha = float(np.max(np.abs(x))) / m
        q = np.clip(np.rint(x / alpha), -m, m)
        for _ in range(iterations):
            qq = float(np.dot(q, q))
            if qq == 0:
                break
            new_alpha = float(np.dot(x, q)) / qq
            new_q = np.clip(np.rint(x / new_alpha), -m, m)
            if new_alpha == alpha and np.array_equal(new_q, q):
                break
            alpha, q = new_alpha, new_q
    out[live] = (alpha * q).astype(w.dtype)
    return out, alpha


def _solve_scale(weights: dict[str, float], caps: dict[str, float], budget: float) -> dict[str, float]:
    """Non-zeros ``min(eps * weight_l, cap_l)`` summing to ``budget`` (water filling)."""
    capped: dict[str, float] = {}
    free = dict(weights)
    while free:
        eps = (budget - sum(capped.values())) / sum(free.values())
        over = [n for n, wgt in free.items() if eps * wgt >= caps[n]]
        if not over:
            return {**capped, **{n: eps * wgt for n, wgt in free.items()}}
        for n in over:
            capped[n] = caps[n]
            del free[n]
    return capped


def allocate_keep(shapes: Mapping[str, tuple[int, ...]], ratio: float, overrides: Mapping[str, float] | None = None,
                  allocation: str = "erk", weights: Mapping[str, np.ndarray] | None = None) -> dict[str, float]:
    """Fraction of weights each layer keeps so the whole model is ``ratio`` x smaller.

    ``ratio`` is total / non-zero over all prunable weights. ``overrides`` pin some
    layers' own ratios (``{"conv1.W": 5}`` keeps a fifth of conv1); the remaining
    non-zero budget is spread over the other layers by ``allocation`` (see
    :data:`ALLOCATIONS`), no layer keeping more than all of its weights.
    ``global`` needs ``weights`` (the arrays whose magnitudes set the threshold).
    """
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation={allocation!r}: valid are {', '.join(ALLOCATIONS)}")
    if not ratio >= 1.0:
        raise ValueError(f"ratio={ratio!r}: the compression ratio must be >= 1 (1 = no pruning)")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(shapes))
    if unknown:
        raise ValueError(f"layer ratio overrides {unknown} name no prunable weight; valid are {sorted(shapes)}")
    for name, r in overrides.items():
        if not r >= 1.0:
            raise ValueError(f"layer ratio {name}={r!r}: must be >= 1")
    sizes = {n: float(np.prod(s)) for n, s in shapes.items()}
    budget = sum(sizes.values()) / ratio
    pinned = {n: sizes[n] / overrides[n] for n in overrides}
    rest = budget - sum(pinned.values())
    free = [n for n in shapes if n not in overrides]
    if free and rest <= 0:
        raise ValueError(
            f"ratio={ratio}: the overrides {overrides} already keep {sum(pinned.values()):.0f} weights, "
            f"more than the {budget:.0f} the whole model may keep; raise their ratios or lower ratio"
        )
    if free and allocation == "global":
        if weights is None:
            raise ValueError("allocation='global' needs the weights whose magnitudes set the threshold")
        mags = np.concatenate([np.abs(np.asarray(weights[n], dtype=np.float64)).reshape(-1) for n in free])
        keep = int(round(min(rest, mags.size)))
        chosen = np.zeros(mags.size, dtype=bool)
        chosen[np.argsort(-mags, kind="stable")[:keep]] = True
        counts, start = {}, 0
        for n in free:
            counts[n] = float(chosen[start : start + int(sizes[n])].sum())
            start += int(sizes[n])
    elif free:
        if allocation == "erk":
            weights = {n: float(sum(shapes[n])) for n in free}
        else:
            weights = {n: sizes[n] for n in free}
        counts = _solve_scale(weights, {n: sizes[n] for n in free}, min(rest, sum(sizes[n] for n in free)))
    else:
        counts = {}
    counts.update(pinned)
    return {n: min(1.0, counts[n] / sizes[n]) for n in shapes}


def keep_count(shape: tuple[int, ...], fraction: float, projection: str) -> int:
    """How many weights (irregular) or groups (structured) a keep ``fraction`` means."""
    _check_projection(projection)
    size = int(np.prod(shape))
    if projection == "irregular":
        units = size
    elif projection == "filter":
        units = int(shape[-1])
    else:
        units = size // int(shape[-1])
    return max(1, min(units, int(math.floor(fraction * units + 0.5))))
