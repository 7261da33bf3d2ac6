"""Optimizers over a model's named parameters.

Weight decay applies to GEMM weights only (names ending in ``.W``), not to biases,
norms or embeddings, which is the usual practice and keeps pruned-to-zero weights at
zero. Both optimizers take ``step(params, grads, lr, masks)`` so a schedule changes ``lr``;
``masks`` (name -> 0/1 array) zero the whole update of masked entries, weight decay
and momentum included, so a pruned weight does not move.
"""

from __future__ import annotations

import numpy as np

from harness.nn import kernels

__all__ = ["Adam", "SGD", "make_optimizer"]


def _decays(name: str) -> bool:
    return name.endswith(".W")


def _fused(p: np.ndarray, g: np.ndarray, v: np.ndarray) -> bool:
    """True when :func:`~harness.nn.kernels.sgd_momentum_step` computes this update
    bit for bit like the numpy lines below: float32, C order, one shape."""
    return (p.dtype == g.dtype == v.dtype == np.float32 and p.shape == g.shape == v.shape
            and p.flags.c_contiguous and g.flags.c_contiguous and v.flags.c_contiguous)


class SGD:
    """SGD with (optionally Nesterov) momentum and L2 weight decay."""

    def __init__(self, momentum: float = 0.9, weight_decay: float = 0.0, nesterov: bool = False):
        self.momentum, self.weight_decay, self.nesterov = momentum, weight_decay, nesterov
        self.velocity: dict[str, np.ndarray] = {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float,
             masks: dict[str, np.ndarray] | None = None) -> None:
        masks = masks or {}
        scalars = all(type(a) in (float, int) for a in (lr, self.momentum, self.weight_decay))
        for name, g in grads.items():
            p = params[name]
            v = self.velocity.get(name)
            if (scalars and not self.nesterov and name not in masks and v is not None
                    and _fused(p, g, v)):  # the common case, in one numba pass
                kernels.sgd_momentum_step(p, g, v, lr, self.momentum,
                                          self.weight_decay if _decays(name) else 0.0)
                continue
            if self.weight_decay and _decays(name):
                g = g + self.weight_decay * p
            if v is None:
                v = self.velocity[name] = g.copy()
            elif v.shape == g.shape and v.dtype == np.result_type(v, g):
                v *= self.momentum  # in place: the same arithmetic as momentum * v + g
                v += g
            else:
                v = self.velocity[name] = self.momentum * v + g
            update = lr * (g + self.momentum * v) if self.nesterov else lr * v
            if name in masks:
                update *= masks[name]
            p -= update.astype(p.dtype, copy=False)


class Adam:
    """Adam; ``decoupled=True`` applies weight decay as AdamW does."""

    def __init__(self, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled: bool = True):
        self.b1, self.b2 = betas
        self.eps, self.weight_decay, self.decoupled = eps, weight_decay, decoupled
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}
        self.t = 0

    def step(self, params, grads, lr, masks=None):
        masks = masks or {}
        self.t += 1
        c1 = 1 - self.b1**self.t
        c2 = 1 - self.b2**self.t
        for name, g in grads.items():
            p = params[name]
            wd = self.weight_decay if _decays(name) else 0.0
            if wd and not self.decoupled:
                g = g + wd * p
            m = self.m.get(name)
            v = self.v.get(name)
            m = (1 - self.b1) * g if m is None else self.b1 * m + (1 - self.b1) * g
            v = (1 - self.b2) * g * g if v is None else self.b2 * v + (1 - self.b2) * g * g
            self.m[name], self.v[name] = m, v
            update = lr * (m / c1) / (np.sqrt(v / c2) + self.eps)
            if wd and self.decoupled:
                update = update + lr * wd * p
            if name in masks:
                update = update * masks[name]
            p -= update.astype(p.dtype)


OPTIMIZERS = ("sgd", "adam")


def make_optimizer(name: str, momentum: float = 0.9, weight_decay: float = 0.0):
    if name == "sgd":
        return SGD(momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return Adam(weight_decay=weight_decay)
    raise ValueError(f"optimizer={name!r}: valid are {', '.join(OPTIMIZERS)}")
