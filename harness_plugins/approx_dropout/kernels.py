"""Kernels of compacted dropout training, each next to a plain numpy reference.

* ``gather_block(W, rows, cols)``: the kept rows x kept columns of a weight as one
  C-ordered matrix, the operand of the compacted GEMMs (BLAS does the GEMMs).
* ``sgd_block_step``: the SGD momentum + weight decay step of a whole weight whose
  gradient is zero outside the kept block, given only the compact block: one pass,
  no full-size gradient is ever materialized. Every weight still decays and keeps
  its momentum, exactly as under Bernoulli dropout (where a dropped unit's weights
  get a zero gradient, not no update).

Both numba kernels are bit-identical to their references (integer-free, the same
float32 operations in the same order); tests/test_approx_dropout.py checks it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["gather_block", "gather_block_reference", "positions", "sgd_block_step", "sgd_block_step_reference"]


@njit(cache=True)
def _gather_block_kernel(w, rows, cols, out):
    nc = cols.size
    for i in range(rows.size):
        src = w[rows[i]]
        dst = out[i]
        for j in range(nc):
            dst[j] = src[cols[j]]


@njit(cache=True)
def _gather_cols_kernel(w, cols, out):
    nc = cols.size
    for i in range(w.shape[0]):
        src = w[i]
        dst = out[i]
        for j in range(nc):
            dst[j] = src[cols[j]]


def gather_block(w: np.ndarray, rows: np.ndarray | None, cols: np.ndarray | None) -> np.ndarray:
    """``w[rows][:, cols]`` as a new C-ordered array; None keeps every row/column."""
    if rows is None and cols is None:
        return w
    if cols is None:
        return w[rows]  # whole rows: numpy's take is a memcpy per row
    out = np.empty((w.shape[0] if rows is None else rows.size, cols.size), dtype=w.dtype)
    if rows is None:
        _gather_cols_kernel(w, cols, out)
    else:
        _gather_block_kernel(w, rows, cols, out)
    return out


def gather_block_reference(w, rows, cols):
    r = np.arange(w.shape[0]) if rows is None else rows
    c = np.arange(w.shape[1]) if cols is None else cols
    return np.ascontiguousarray(w[np.ix_(r, c)])


def positions(n: int, kept: np.ndarray | None) -> np.ndarray:
    """``pos[i]`` = index of unit ``i`` in the compact block, -1 if dropped."""
    pos = np.full(n, -1, dtype=np.int64)
    if kept is None:
        pos[:] = np.arange(n)
    else:
        pos[kept] = np.arange(kept.size)
    return pos


@njit(cache=True)
def _sgd_block_kernel(p, gc, v, rpos, cpos, lr, momentum, weight_decay):
    zero = np.float32(0.0)
    for i in range(p.shape[0]):
        ri = rpos[i]
        prow = p[i]
        vrow = v[i]
        for j in range(p.shape[1]):
            cj = cpos[j]
            g = gc[ri, cj] if (ri >= 0 and cj >= 0) else zero
            g = g + weight_decay * prow[j]
            vi = vrow[j] * momentum + g
            vrow[j] = vi
            prow[j] -= lr * vi


def sgd_block_step(p: np.ndarray, gc: np.ndarray, v: np.ndarray, rpos: np.ndarray, cpos: np.ndarray,
                   lr: float, momentum: float, weight_decay: float) -> None:
    """In place, for 2-D float32 ``p``/``v`` (a bias as ``b[None]``): the gradient is
    ``gc[rpos[i], cpos[j]]`` where both are kept, else 0; then
    ``v = momentum * v + (g + weight_decay * p)``, ``p -= lr * v``."""
    f = np.float32
    _sgd_block_kernel(p, gc, v, rpos, cpos, f(lr), f(momentum), f(weight_decay))


def sgd_block_step_reference(p, gc, v, rpos, cpos, lr, momentum, weight_decay):
    g = np.zeros_like(p)
    rows, cols = np.nonzero(rpos >= 0)[0], np.nonzero(cpos >= 0)[0]
    g[np.ix_(rows, cols)] = gc[np.ix_(rpos[rows], cpos[cols])]
    f = np.float32
    g = g + f(weight_decay) * p
    v *= f(momentum)
    v += g
    p -= f(lr) * v
