"""Layers with forward, backward and pruning masks, in numpy (BLAS GEMMs) and numba.

Conventions
-----------
* float32 throughout; activations NHWC for images, ``(B, T, D)`` for tokens.
* A layer's parameters live in ``layer.params[key]`` and its gradients, after
  ``backward``, in ``layer.grads[key]``. A model names them ``"<layer>.<key>"``.
* GEMM weights are stored in the GEMM's own orientation: Dense ``W`` is
  ``(in, out)``, Conv2d ``W`` is HWIO ``(kh, kw, C_in, C_out)``, so the im2col GEMM
  is ``cols @ W.reshape(-1, C_out)`` without a transpose.
* Masks never modify the stored weights, so a technique can try a mask and take it
  back. A weight layer multiplies ``W`` by ``weight_mask`` (elementwise, W-shaped),
  ``in_mask`` (per input channel) and ``channel_mask`` (per output channel, also
  zeroing the bias) before the GEMM, and masks its gradients the same way. Per-channel
  layers that follow (BatchNorm) carry the producer's ``channel_mask`` too, so a
  masked channel is exactly zero downstream.
* Training GEMMs (forward, and in ``backward`` the input and weight gradients) go
  through ``rt.train_gemm`` when a technique sets one (:mod:`harness.nn.train_gemm`);
  ``backward(dy)`` has no runtime, so a layer keeps it from its forward pass.
* Weight layers take ``backward(dy, input_grad=False)`` when the caller drops the
  input gradient (a model's first layer, whose input is the data): the dX GEMM and
  col2im are skipped and None is returned. A training GEMM still gets its
  ``grad_input`` call, so a technique sees every op in every role.
"""

from __future__ import annotations

import math

import numpy as np

from harness.nn import kernels
from harness.nn.runtime import Runtime, act_matmul, linear

__all__ = [
    "AvgPool2d",
    "BatchNorm",
    "Conv2d",
    "Dense",
    "Flatten",
    "GELU",
    "Layer",
    "LayerNorm",
    "MaxPool2d",
    "MultiHeadSelfAttention",
    "ReLU",
]

F32 = np.float32


class Layer:
    """Base class: a named node with parameters, gradients and a cache for backward."""

    #: True for layers that act per channel (they inherit the producer's channel mask).
    per_channel = False
    #: True for layers whose output channels can be pruned (Dense, Conv2d).
    producer = False

    def __init__(self, name: str):
        self.name = name
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def forward(self, x: np.ndarray, rt: Runtime) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def sublayers(self) -> list["Layer"]:
        """Layers nested inside this one (attention holds two Dense layers)."""
        return []

    def param_mask(self, key: str) -> np.ndarray | None:
        """The combined 0/1 mask that applies to ``params[key]`` (None: unmasked)."""
        return None

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self.params.items())
        return f"{type(self).__name__}({self.name!r}{', ' + shapes if shapes else ''})"


class _WeightLayer(Layer):
    """Shared mask handling of Dense and Conv2d (``W`` with output channels last)."""

    producer = True
    #: What follows the GEMM directly (``"relu"``), set by the model; backends see
    #: it as ``GemmCall.epilogue`` (an ADC may stop converting negative outputs).
    epilogue: str | None = None

    def __init__(self, name: str):
        super().__init__(name)
        self.weight_mask: np.ndarray | None = None
        self.in_mask: np.ndarray | None = None
        self.channel_mask: np.ndarray | None = None

    @property
    def in_channels(self) -> int:
        return self.params["W"].shape[-2]

    @property
    def out_channels(self) -> int:
        return self.params["W"].shape[-1]

    def param_mask(self, key: str) -> np.ndarray | None:
        w = self.params["W"]
        if key == "W":
            mask = None
            if self.weight_mask is not None:
                mask = self.weight_mask.astype(F32)
            if self.in_mask is not None:
                shape = [1] * w.ndim
                shape[-2] = -1
                m = self.in_mask.astype(F32).reshape(shape)
                mask = m if mask is None else mask * m
            if self.channel_mask is not None:
                m = self.channel_mask.astype(F32)
                mask = m if mask is None else mask * m
            return None if mask is None else np.broadcast_to(mask, w.shape)
        if key == "b" and self.channel_mask is not None:
            return self.channel_mask.astype(F32)
        return None

    def effective(self, key: str) -> np.ndarray:
        mask = self.param_mask(key)
        p = self.params[key]
        return p if mask is None else p * mask

    def weight_density(self) -> float:
        w = self.effective("W")
        return float(np.count_nonzero(w)) / w.size

    def _masked_grads(self) -> None:
        for key in list(self.grads):
            mask = self.param_mask(key)
            if mask is not None:
                self.grads[key] = self.grads[key] * mask


class Dense(_WeightLayer):
    """``y = x @ W + b`` over the last axis (works on ``(B, D)`` and ``(B, T, D)``)."""

    def __init__(self, name: str, fan_in: int, fan_out: int, rng: np.random.Generator,
                 init: str = "he", bias: bool = True):
        super().__init__(name)
        if init == "he":
            std = math.sqrt(2.0 / fan_in)
            w = rng.normal(0.0, std, (fan_in, fan_out))
        elif init == "xavier":
            lim = math.sqrt(6.0 / (fan_in + fan_out))
            w = rng.uniform(-lim, lim, (fan_in, fan_out))
        else:
            raise ValueError(f"init={init!r}: valid are 'he', 'xavier'")
        self.params["W"] = w.astype(F32)
        if bias:
            self.params["b"] = np.zeros(fan_out, F32)

    def forward(self, x, rt):
        shape = x.shape
        a = x.reshape(-1, shape[-1])
        w = self.effective("W")
        y = linear(a, w, rt, self.name, samples=shape[0], epilogue=self.epilogue,
                   bias=self.effective("b") if self.epilogue and "b" in self.params else None)
        if "b" in self.params:
            y = y + self.effective("b")
        if rt.grad:
            self._cache = (a, w, shape, rt.train_gemm)
        return y.reshape(*shape[:-1], w.shape[1])

    def backward(self, dy, input_grad=True):
        a, w, shape, gemm = self._cache
        d2 = dy.reshape(-1, w.shape[1])
        if gemm is None:
            self.grads["W"] = a.T @ d2
        else:
            self.grads["W"] = gemm(a.T, d2, self.name, "grad_weight", False)
        if "b" in self.params:
            self.grads["b"] = d2.sum(axis=0)
        self._masked_grads()
        if gemm is not None:  # routed in every role, even when the caller drops dX
            dx = gemm(d2, w.T, self.name, "grad_input", True)
        elif input_grad:
            dx = d2 @ w.T
        if not input_grad:
            return None
        return dx.reshape(shape)


class Conv2d(_WeightLayer):
    """2-D convolution on NHWC input, lowered to im2col + one GEMM."""

    def __init__(self, name: str, c_in: int, c_out: int, kernel: int, rng: np.random.Generator,
                 stride: int = 1, padding: int = 0):
        super().__init__(name)
        std = math.sqrt(2.0 / (c_in * kernel * kernel))
        self.params["W"] = rng.normal(0.0, std, (kernel, kernel, c_in, c_out)).astype(F32)
        self.params["b"] = np.zeros(c_out, F32)
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def output_shape(self, h: int, w: int) -> tuple[int, int]:
        k, s, p = self.kernel, self.stride, self.padding
        return kernels.out_size(h + 2 * p, k, s), kernels.out_size(w + 2 * p, k, s)

    def forward(self, x, rt):
        p, k = self.padding, self.kernel
        b = x.shape[0]
        # padding fused in; training takes the faster layout (a technique's training
        # GEMM then sees conv1's operand Fortran-ordered), evaluation C-ordered rows
        cols = kernels.im2col(x, k, k, self.stride, p, any_order=rt.training)
        w = self.effective("W")
        w2 = w.reshape(-1, w.shape[-1])
        bias = self.effective("b")
        y = kernels.add_bias(linear(cols, w2, rt, self.name, samples=b, epilogue=self.epilogue,
                                    bias=bias if self.epilogue else None), bias)
        ho, wo = self.output_shape(x.shape[1], x.shape[2])
        if rt.grad:
            self._cache = (cols, w2, x.shape, rt.train_gemm)
        return y.reshape(b, ho, wo, -1)

    def backward(self, dy, input_grad=True):
        cols, w2, x_shape, gemm = self._cache
        d2 = dy.reshape(-1, w2.shape[1])
        if gemm is None:
            dw = cols.T @ d2
            dcols = d2 @ w2.T if input_grad else None
        else:
            dw = gemm(cols.T, d2, self.name, "grad_weight", False)
            dcols = gemm(d2, w2.T, self.name, "grad_input", True)
        self.grads["W"] = dw.reshape(self.params["W"].shape)
        self.grads["b"] = kernels.column_sums(d2)
        self._masked_grads()
        if not input_grad:
            return None
        return kernels.col2im(dcols, x_shape, self.kernel, self.kernel, self.stride, self.padding)


class ReLU(Layer):
    def forward(self, x, rt):
        if rt.grad:
            y, self._mask = kernels.relu_forward(x)
            return y
        return np.maximum(x, 0)

    def backward(self, dy):
        return kernels.relu_backward(dy, self._mask)


_GELU_C = math.sqrt(2.0 / math.pi)


class GELU(Layer):
    """GELU, tanh approximation (as in BERT/ViT implementations)."""

    def forward(self, x, rt):
        t = np.tanh(_GELU_C * (x + 0.044715 * x**3))
        if rt.grad:
            self._cache = (x, t)
        return (0.5 * x * (1.0 + t)).astype(F32)

    def backward(self, dy):
        x, t = self._cache
        dt = (1.0 - t * t) * _GELU_C * (1.0 + 3 * 0.044715 * x * x)
        return (dy * (0.5 * (1.0 + t) + 0.5 * x * dt)).astype(F32)


class Flatten(Layer):
    def forward(self, x, rt):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self._shape)


class MaxPool2d(Layer):
    """Max pooling over ``kernel x kernel`` windows (numba kernel, see kernels.py)."""

    def __init__(self, name: str, kernel: int = 2, stride: int | None = None):
        super().__init__(name)
        self.kernel, self.stride = kernel, stride or kernel

    def forward(self, x, rt):
        y, arg = kernels.maxpool_forward(x, self.kernel, self.stride)
        if rt.grad:
            self._cache = (arg, x.shape)
        return y

    def backward(self, dy):
        arg, shape = self._cache
        return kernels.maxpool_backward(dy, arg, shape, self.kernel, self.stride)


class AvgPool2d(Layer):
    """Average pooling; its backward spreads gradients with the col2im kernel."""

    def __init__(self, name: str, kernel: int = 2, stride: int | None = None):
        super().__init__(name)
        self.kernel, self.stride = kernel, stride or kernel

    def forward(self, x, rt):
        k, s = self.kernel, self.stride
        b, h, w, c = x.shape
        ho, wo = kernels.out_size(h, k, s), kernels.out_size(w, k, s)
        cols = kernels.im2col(x, k, k, s).reshape(b, ho, wo, k * k, c)
        if rt.grad:
            self._shape = x.shape
        return cols.mean(axis=3, dtype=F32)

    def backward(self, dy):
        k, s = self.kernel, self.stride
        b, ho, wo, c = dy.shape
        cols = np.broadcast_to((dy / (k * k))[:, :, :, None, :], (b, ho, wo, k * k, c))
        return kernels.col2im(np.ascontiguousarray(cols).reshape(b * ho * wo, -1), self._shape, k, k, s)


class BatchNorm(Layer):
    """Batch normalization over every axis but the last (channels).

    Training normalizes with batch statistics and updates running ones
    (``momentum``); evaluation uses the running ones. With ``Runtime(bn_calibrate=True)``
    it accumulates exact population statistics instead (see
    :func:`harness.nn.models.recalibrate_batchnorm`), which is what MetaPruning does
    before scoring a pruned structure.
    """

    per_channel = True

    def __init__(self, name: str, channels: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__(name)
        self.params["gamma"] = np.ones(channels, F32)
        self.params["beta"] = np.zeros(channels, F32)
        self.running_mean = np.zeros(channels, F32)
        self.running_var = np.ones(channels, F32)
        self.momentum, self.eps = momentum, eps
        self.channel_mask: np.ndarray | None = None
        self._calib: list | None = None

    def param_mask(self, key):
        return None if self.channel_mask is None else self.channel_mask.astype(F32)

    def forward(self, x, rt):
        axes = tuple(range(x.ndim - 1))
        if rt.training:
            mean = x.mean(axis=axes, dtype=np.float64)
            var = x.var(axis=axes, dtype=np.float64)
            if rt.bn_calibrate:
                n = x.size // x.shape[-1]
                if self._calib is None:
                    self._calib = [np.zeros_like(mean), np.zeros_like(mean), 0]
                self._calib[0] += mean * n
                self._calib[1] += (var + mean**2) * n
                self._calib[2] += n
            else:
                m = self.momentum
                n = x.size // x.shape[-1]
                self.running_mean = ((1 - m) * self.running_mean + m * mean).astype(F32)
                self.running_var = ((1 - m) * self.running_var + m * var * n / max(n - 1, 1)).astype(F32)
        else:
            mean, var = self.running_mean, self.running_var
        inv = (1.0 / np.sqrt(var + self.eps)).astype(F32)
        xhat = (x - mean.astype(F32)) * inv
        y = xhat * self.params["gamma"] + self.params["beta"]
        if self.channel_mask is not None:
            y = y * self.channel_mask.astype(F32)
        if rt.grad:
            self._cache = (xhat, inv)
        return y.astype(F32)

    def finish_calibration(self) -> None:
        """Replace the running statistics by the accumulated population ones."""
        if self._calib is None:
            raise RuntimeError(f"{self.name}: no calibration batches were seen")
        s, sq, n = self._calib
        mean = s / n
        self.running_mean = mean.astype(F32)
        self.running_var = np.maximum(sq / n - mean**2, 0.0).astype(F32)
        self._calib = None

    def backward(self, dy):
        xhat, inv = self._cache
        if self.channel_mask is not None:
            dy = dy * self.channel_mask.astype(F32)
        axes = tuple(range(dy.ndim - 1))
        n = dy.size // dy.shape[-1]
        self.grads["gamma"] = (dy * xhat).sum(axis=axes)
        self.grads["beta"] = dy.sum(axis=axes)
        dxhat = dy * self.params["gamma"]
        dx = inv / n * (n * dxhat - dxhat.sum(axis=axes) - xhat * (dxhat * xhat).sum(axis=axes))
        return dx.astype(F32)


class LayerNorm(Layer):
    """Normalization over the last axis with a learned scale and shift."""

    def __init__(self, name: str, dim: int, eps: float = 1e-5):
        super().__init__(name)
        self.params["gamma"] = np.ones(dim, F32)
        self.params["beta"] = np.zeros(dim, F32)
        self.eps = eps

    def forward(self, x, rt):
        mean = x.mean(axis=-1, keepdims=True)
        xc = x - mean
        inv = 1.0 / np.sqrt((xc * xc).mean(axis=-1, keepdims=True) + self.eps)
        xhat = xc * inv
        if rt.grad:
            self._cache = (xhat, inv)
        return (xhat * self.params["gamma"] + self.params["beta"]).astype(F32)

    def backward(self, dy):
        xhat, inv = self._cache
        axes = tuple(range(dy.ndim - 1))
        self.grads["gamma"] = (dy * xhat).sum(axis=axes)
        self.grads["beta"] = dy.sum(axis=axes)
        dxhat = dy * self.params["gamma"]
        d = dxhat.shape[-1]
        dx = inv / d * (d * dxhat - dxhat.sum(-1, keepdims=True) - xhat * (dxhat * xhat).sum(-1, keepdims=True))
        return dx.astype(F32)


def softmax(s: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(s - s.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class MultiHeadSelfAttention(Layer):
    """Multi-head self-attention on ``(B, T, D)`` with head and token masks.

    * ``set_head_mask(mask)``: a 0/1 vector over heads. A pruned head's Q, K, V
      columns and its rows of the output projection are masked, so it contributes
      exactly nothing and the op trace counts only live heads.
    * Token pruning: when ``rt.token_keep`` (``(B, T)`` 0/1) is set, dropped tokens
      are excluded as keys and get zero queries and values, which is equivalent to
      removing them from the sequence.
    * ``last_attention``: the ``(B, H, T, T)`` attention maps of the latest forward
      pass, kept when ``rt.keep_attention`` is true (CP-ViT scores tokens on them).
    """

    def __init__(self, name: str, dim: int, heads: int, rng: np.random.Generator):
        super().__init__(name)
        if dim % heads:
            raise ValueError(f"{name}: dim={dim} is not divisible by heads={heads}")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.qkv = Dense(f"{name}.qkv", dim, 3 * dim, rng, init="xavier")
        self.proj = Dense(f"{name}.proj", dim, dim, rng, init="xavier")
        self.head_mask: np.ndarray | None = None
        self.last_attention: np.ndarray | None = None

    def sublayers(self):
        return [self.qkv, self.proj]

    def set_head_mask(self, mask: np.ndarray | None) -> None:
        if mask is None:
            self.head_mask = self.qkv.channel_mask = self.proj.in_mask = None
            return
        mask = np.asarray(mask, dtype=F32).reshape(-1)
        if mask.shape != (self.heads,):
            raise ValueError(f"{self.name}: head mask needs {self.heads} entries, got {mask.shape}")
        self.head_mask = mask
        per_dim = np.repeat(mask, self.head_dim)
        self.qkv.channel_mask = np.tile(per_dim, 3)
        self.proj.in_mask = per_dim

    def forward(self, x, rt):
        b, t, d = x.shape
        h, dh = self.heads, self.head_dim
        qkv = self.qkv.forward(x, rt).reshape(b, t, 3, h, dh).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        keep = rt.token_keep
        kv = None if keep is None else keep.astype(F32)[:, None, :, None]
        if kv is not None:
            q, k, v = q * kv, k * kv, v * kv
        scale = F32(1.0 / math.sqrt(dh))
        s = act_matmul(q, k.transpose(0, 1, 3, 2), rt, op=f"{self.name}.qk") * scale
        if keep is not None:
            s = np.where(keep[:, None, None, :] > 0, s, F32(-1e9))
        a = softmax(s).astype(F32)
        if kv is not None:
            a = a * kv
        o = act_matmul(a, v, rt, op=f"{self.name}.av")
        if rt.recorder is not None:
            live = h if self.head_mask is None else int(np.count_nonzero(self.head_mask))
            frac = 1.0 if keep is None else float(np.mean(keep.mean(axis=1) ** 2))
            rt.recorder.record(f"{self.name}.qk", t, dh, t, live, False, 1.0, frac, rt.quant_bits)
            rt.recorder.record(f"{self.name}.av", t, t, dh, live, False, 1.0, frac, rt.quant_bits)
        if rt.keep_attention:
            self.last_attention = a
        if rt.grad:
            self._cache = (q, k, v, a, kv, scale, rt.train_gemm)
        y = self.proj.forward(o.transpose(0, 2, 1, 3).reshape(b, t, d), rt)
        return y

    def backward(self, dy):
        q, k, v, a, kv, scale, gemm = self._cache
        b, h, t, dh = q.shape
        do = self.proj.backward(dy).reshape(b, t, h, dh).transpose(0, 2, 1, 3)
        if gemm is None:
            da = do @ v.transpose(0, 1, 3, 2)
            dv = a.transpose(0, 1, 3, 2) @ do
        else:  # O = A @ V
            da = gemm.batched(do, v.transpose(0, 1, 3, 2), f"{self.name}.av", "grad_input")
            dv = gemm.batched(a.transpose(0, 1, 3, 2), do, f"{self.name}.av", "grad_weight")
        if kv is not None:
            da = da * kv
        ds = a * (da - (da * a).sum(axis=-1, keepdims=True)) * scale
        if gemm is None:
            dq = ds @ k
            dk = ds.transpose(0, 1, 3, 2) @ q
        else:  # S = Q @ K.T: dQ = dS @ K, d(K.T) = Q.T @ dS
            dq = gemm.batched(ds, k, f"{self.name}.qk", "grad_input")
            dk = gemm.batched(q.transpose(0, 1, 3, 2), ds, f"{self.name}.qk", "grad_weight").transpose(0, 1, 3, 2)
        if kv is not None:
            dq, dk, dv = dq * kv, dk * kv, dv * kv
        dqkv = np.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(b, t, 3 * h * dh)
        return self.qkv.backward(dqkv.astype(F32))
