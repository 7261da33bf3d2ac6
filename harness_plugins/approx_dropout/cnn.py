"""Sensitivity-aware dropout of a CNN's input feature maps, as a training GEMM.

For each convolution with more than one input channel, every ``rescore_every``
steps the GEMM runs dense and scores each input feature map ``c`` by
``sum |X_c * dX_c|`` (|grad x activation| over the batch and the kernel window, the
first-order loss change of removing it); in the steps between, the fraction ``p``
of feature maps with the lowest score is skipped in all three products: the im2col
columns (rows of the weight matrix) of the dropped channels are left out of the
forward GEMM, the weight-gradient GEMM and the input-gradient GEMM
(``harness.nn.train_gemm`` roles). Kept maps are not rescaled: the skipped maps
are the ones the loss is least sensitive to, not a random sample [inferred].

Plugs into :func:`harness.nn.train.fit` (``gemm=``): the contract-v2 hook.
"""

from __future__ import annotations

import numpy as np

from harness.nn.layers import Conv2d

__all__ = ["SensitivityDropoutGemm", "channel_columns"]


def channel_columns(window: int, channels: int, kept: np.ndarray) -> np.ndarray:
    """im2col columns of the kept input channels (row layout ``(p, q, ch)``)."""
    return (np.arange(window)[:, None] * channels + np.asarray(kept)[None, :]).reshape(-1)


class SensitivityDropoutGemm:
    name = "sensitivity_dropout"

    def __init__(self, model, p: float, rescore_every: int = 10):
        self.p, self.rescore_every = p, rescore_every
        #: op -> (kernel window size, input channels) for the convolutions it may thin
        self.convs = {l.name: (l.kernel * l.kernel, l.in_channels) for l in model.layers()
                      if isinstance(l, Conv2d) and l.in_channels > 1}
        self.keep: dict[str, np.ndarray | None] = {op: None for op in self.convs}
        self.cols: dict[str, np.ndarray | None] = {op: None for op in self.convs}
        self.scores: dict[str, np.ndarray] = {}
        self._seed: dict[str, int] = {}
        self._steps: dict[str, int] = {op: -1 for op in self.convs}
        self._x: dict[str, np.ndarray] = {}
        self.macs = 0
        self.dense_macs = 0

    def _compact(self, op: str) -> bool:
        return op in self.convs and self.cols[op] is not None and self._steps[op] % self.rescore_every != 0

    def matmul(self, a, b, call):
        op, role = call.op, call.role
        m, k = a.shape
        n = b.shape[1]
        self.dense_macs += m * k * n
        if op in self.convs and role == "forward" and call.seed != self._seed.get(op):
            self._seed[op] = call.seed
            self._steps[op] += 1
        if not self._compact(op):
            if op in self.convs and role == "forward":
                self._x[op] = a
            out = a @ b
            if op in self.convs and role == "grad_input" and op in self._x:
                self._rescore(op, self._x.pop(op), out)
            self.macs += m * k * n
            return out
        idx = self.cols[op]
        if role == "forward":
            self.macs += m * idx.size * n
            return a[:, idx] @ b[idx]
        if role == "grad_weight":  # a = X.T (K, M), b = dY
            out = np.zeros((m, n), np.float32)
            out[idx] = a[idx] @ b
            self.macs += idx.size * k * n
            return out
        out = np.zeros((m, n), np.float32)  # grad_input: a = dY (M, N), b = W.T (N, K)
        out[:, idx] = a @ b[:, idx]
        self.macs += m * k * idx.size
        return out

    def _rescore(self, op, x, dx):
        window, channels = self.convs[op]
        s = np.abs(np.asarray(x, np.float32) * dx).reshape(-1, window, channels).sum(axis=(0, 1))
        self.scores[op] = s
        drop = int(round(self.p * channels))
        kept = np.sort(np.argsort(-s, kind="stable")[: channels - drop])
        self.keep[op] = kept
        self.cols[op] = channel_columns(window, channels, kept) if drop else None
