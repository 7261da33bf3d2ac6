"""Compacted dropout training of an MLP (Dense/ReLU stacks of :mod:`harness.nn`).

One step with kept units ``K_l`` per hidden layer (``None``: all kept)::

    Wc = W[K_{l-1}][:, K_l]          gather_block, one contiguous copy
    Zc = Hc @ Wc + b[K_l]            forward GEMM on kept inputs x kept outputs
    Hc' = relu(Zc) * n_l / |K_l|     inverted dropout, scaled per pattern
    dWc = Hc.T @ dZc                 grad_weight GEMM, compact
    dHc = dZc @ Wc.T                 grad_input GEMM, compact (not for the first layer)
    sgd_block_step(W, dWc, ...)      full SGD step, the compact gradient scattered on the fly

Every GEMM is ``(B x |K_{l-1}|) @ (|K_{l-1}| x |K_l|)``: dropped rows and columns
are never read. :func:`masked_dense_step` is the same step with full matrices and
0/1 unit masks, the reference the compacted one must equal (tests). Bernoulli
dropout (the accuracy reference) and no dropout run through this same class with
every unit kept, so the three differ only in what dropout does.
"""

from __future__ import annotations

import time

import numpy as np

from harness.nn.layers import Dense, Flatten, ReLU
from harness.nn.kernels import sgd_momentum_step
from harness.nn.losses import softmax_cross_entropy

from harness_plugins.approx_dropout.kernels import gather_block, positions, sgd_block_step
from harness_plugins.approx_dropout.patterns import keep_indices

__all__ = ["CompactMlp", "PatternDraw", "dense_layers", "masked_dense_step"]

F32 = np.float32


def dense_layers(model) -> list[Dense]:
    """The Dense layers of a Flatten?/Dense/ReLU/.../Dense stack, or ValueError saying why not."""
    stack = list(getattr(model, "stack", []))
    if stack and isinstance(stack[0], Flatten):
        stack = stack[1:]
    dense = stack[0::2]
    relus = stack[1::2]
    ok = (stack and all(isinstance(d, Dense) for d in dense) and all(isinstance(r, ReLU) for r in relus)
          and len(dense) == len(relus) + 1)
    if not ok:
        kinds = ", ".join(type(l).__name__ for l in getattr(model, "stack", []))
        raise ValueError(f"compacted dropout trains Dense/ReLU MLPs (digits_mlp, mnist_mlp); this model is [{kinds}]")
    for d in dense:
        if d.weight_mask is not None or d.in_mask is not None or d.channel_mask is not None:
            raise ValueError(f"layer {d.name} carries masks; compacted dropout trains unmasked MLPs")
    return dense


class PatternDraw:
    """Draws a pattern per hidden layer per step from pi (random offset each time).

    A layer narrower than ``dp`` groups (e.g. 32 units with 32-unit tiles) can draw
    a pattern that keeps nothing; such a draw is redrawn, so a step never drops a
    whole layer (never the case on the wide MLP: 2,048 units are 64 tiles)."""

    def __init__(self, patterns, cum, tile: int, rng: np.random.Generator):
        self.patterns, self.cum, self.tile, self.rng = patterns, cum, tile, rng

    def __call__(self, n: int) -> np.ndarray | None:
        while True:
            j = min(int(np.searchsorted(self.cum, self.rng.random(), side="right")), len(self.patterns) - 1)
            pt = self.patterns[j]
            if pt.k == pt.dp:
                return None
            kept = keep_indices(n, pt.dp, pt.k, int(self.rng.integers(pt.dp)), self.tile)
            if kept.size:
                return kept


class CompactMlp:
    """Trains the Dense layers of ``model`` in place with SGD momentum and L2 decay
    (the semantics of :class:`harness.nn.optim.SGD`)."""

    def __init__(self, model, momentum: float, weight_decay: float, fixed_scale: float | None = None):
        #: None: a pattern's kept units are scaled by n/|kept| (exact per pattern);
        #: a number (1/(1-p)): one scale for every pattern.
        self.fixed_scale = fixed_scale
        self.model = model
        self.layers = dense_layers(model)
        self.momentum, self.weight_decay = momentum, weight_decay
        self.vel = [(np.zeros_like(d.params["W"]), np.zeros_like(d.params["b"])[None]) for d in self.layers]
        self.widths = [d.params["W"].shape[1] for d in self.layers]

    def forward_backward(self, x, y, keeps=None, masks=None):
        """Loss, logits, compact grads [(dWc, dbc)] and MACs of one step.

        ``keeps[l]``: kept units of hidden layer l (None: all); ``masks[l]``: a
        (B, n_l) pre-scaled Bernoulli mask (None: none).
        """
        nh = len(self.layers) - 1
        patterned = keeps is not None and self.fixed_scale is not None
        keeps = keeps or [None] * nh
        masks = masks or [None] * nh
        h = x.reshape(x.shape[0], -1)
        m = h.shape[0]
        kin = None
        cache = []
        macs = 0
        for l, layer in enumerate(self.layers):
            hidden = l < nh
            kout = keeps[l] if hidden else None
            wc = gather_block(layer.params["W"], kin, kout)
            b = layer.params["b"]
            z = h @ wc
            z += b if kout is None else b[kout]
            macs += m * wc.shape[0] * wc.shape[1] * (2 if l == 0 else 3)
            if hidden:
                if masks[l] is not None:
                    scale = masks[l]
                elif patterned:
                    scale = F32(self.fixed_scale)
                elif kout is not None:
                    scale = F32(self.widths[l] / kout.size)
                else:
                    scale = None
                a = np.maximum(z, F32(0))
                if scale is not None:
                    a *= scale
                cache.append((h, wc, z, scale))
                h = a
            else:
                cache.append((h, wc, None, None))
                h = z
            kin = kout
        logits = h
        loss, dz = softmax_cross_entropy(logits, y)
        grads = [None] * len(self.layers)
        for l in range(len(self.layers) - 1, -1, -1):
            hin, wc, _, _ = cache[l]
            grads[l] = (hin.T @ dz, dz.sum(axis=0)[None])
            if l == 0:
                break
            dh = dz @ wc.T
            _, _, zp, scale = cache[l - 1]
            if scale is not None:
                dh *= scale
            dh[zp <= 0] = 0
            dz = dh
        return loss, logits, grads, macs

    def permute_units(self, rng: np.random.Generator) -> None:
        """Relabel every hidden layer's units by a random permutation, in place.

        The network computes the same function (its columns, bias, velocity and the
        next layer's rows move together), but which units a regular pattern keeps
        together changes: under a fixed labelling units ``i`` and ``i + dp`` are
        always kept or dropped as a pair, which Bernoulli dropout never does.
        """
        for l in range(len(self.layers) - 1):
            perm = rng.permutation(self.widths[l])
            w, b = self.layers[l].params["W"], self.layers[l].params["b"]
            vw, vb = self.vel[l]
            w[...] = w[:, perm]
            vw[...] = vw[:, perm]
            b[...] = b[perm]
            vb[...] = vb[:, perm]
            w2, vw2 = self.layers[l + 1].params["W"], self.vel[l + 1][0]
            w2[...] = w2[perm]
            vw2[...] = vw2[perm]

    def step(self, x, y, lr, keeps=None, masks=None):
        loss, logits, grads, macs = self.forward_backward(x, y, keeps, masks)
        nh = len(self.layers) - 1
        keeps = keeps or [None] * nh
        for l, layer in enumerate(self.layers):
            kin = keeps[l - 1] if l > 0 else None
            kout = keeps[l] if l < nh else None
            w, b = layer.params["W"], layer.params["b"]
            vw, vb = self.vel[l]
            if kin is None and kout is None:  # nothing dropped: the harness's dense SGD kernel (Bernoulli, none)
                sgd_momentum_step(w, grads[l][0], vw, lr, self.momentum, self.weight_decay)
                sgd_momentum_step(b[None], grads[l][1], vb, lr, self.momentum, 0.0)
                continue
            rpos = positions(w.shape[0], kin)
            cpos = positions(w.shape[1], kout)
            sgd_block_step(w, grads[l][0], vw, rpos, cpos, lr, self.momentum, self.weight_decay)
            sgd_block_step(b[None], grads[l][1], vb, np.zeros(1, np.int64), cpos, lr, self.momentum, 0.0)
        return loss, logits, macs


def masked_dense_step(layers, x, y, unit_masks):
    """Reference: full GEMMs, hidden activations times ``unit_masks[l]`` (a 0/1 or
    scaled vector per unit, or a (B, n) matrix). Returns loss, logits, full grads."""
    h = x.reshape(x.shape[0], -1)
    cache = []
    for l, layer in enumerate(layers):
        z = h @ layer.params["W"] + layer.params["b"]
        if l < len(layers) - 1:
            cache.append((h, z))
            h = np.maximum(z, 0) * unit_masks[l]
        else:
            cache.append((h, None))
            h = z
    loss, dz = softmax_cross_entropy(h, y)
    logits = h
    grads = [None] * len(layers)
    for l in range(len(layers) - 1, -1, -1):
        hin, _ = cache[l]
        grads[l] = (hin.T @ dz, dz.sum(axis=0))
        if l == 0:
            break
        _, zp = cache[l - 1]
        dz = (dz @ layers[l].params["W"].T) * unit_masks[l - 1] * (zp > 0)
    return loss, logits, grads


def run_epoch(trainer: CompactMlp, x, y, batch_size: int, lr_at, rng, method: str, p: float,
              draw: PatternDraw | None, shuffle_every: int = 0) -> dict:
    """One epoch of ``method`` (row/tile: drawn patterns; bernoulli; none), timed.
    Row/tile relabel the hidden units every ``shuffle_every`` steps (0: never)."""
    order = rng.permutation(len(x))
    steps = -(-len(x) // batch_size)
    nh = len(trainer.layers) - 1
    loss_sum, correct, macs, kept_frac = 0.0, 0, 0, 0.0
    keep_scale = F32(1.0 / (1.0 - p)) if p < 1 else F32(0)
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    for s in range(steps):
        idx = order[s * batch_size:(s + 1) * batch_size]
        xb, yb = x[idx], y[idx]
        keeps = masks = None
        if method in ("row", "tile"):
            if shuffle_every and s % shuffle_every == 0:
                trainer.permute_units(draw.rng)
            keeps = [draw(trainer.widths[l]) for l in range(nh)]
        elif method == "bernoulli" and p > 0:
            masks = [(rng.random((len(idx), trainer.widths[l]), dtype=F32) >= p) * keep_scale for l in range(nh)]
        loss, logits, m = trainer.step(xb, yb, lr_at(s / steps), keeps, masks)
        loss_sum += loss * len(idx)
        correct += int(np.sum(logits.argmax(axis=1) == yb))
        macs += m
        if keeps is not None:
            kept_frac += np.mean([1.0 if k is None else k.size / trainer.widths[l] for l, k in enumerate(keeps)])
        else:
            kept_frac += 1.0 - (p if method == "bernoulli" else 0.0)
    return {
        "seconds": time.perf_counter() - wall0,
        "cpu_seconds": time.thread_time() - cpu0,
        "loss": loss_sum / len(x),
        "accuracy": correct / len(x),
        "macs": float(macs),
        "kept_fraction": kept_frac / steps,
    }
