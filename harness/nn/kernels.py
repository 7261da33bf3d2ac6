"""The loops of the layer library: numba kernels, each next to a plain numpy reference.

Only the operations that numpy cannot express as one vectorized call live here:
scattering im2col gradients back onto the image (``col2im``) and max pooling with
its argmax bookkeeping. GEMMs are BLAS (through the matmul backend in evaluation).
Every kernel has a ``*_reference`` twin written in plain numpy; the tests check that
the two agree, and ``benchmarks/`` compares their speed.

Layout: activations are NHWC (batch, height, width, channels), so an im2col row
is ``(kh, kw, C)`` in C order and a convolution weight in HWIO order reshapes to
the GEMM's ``(kh*kw*C_in, C_out)`` matrix without a copy.

The numba kernels are single-threaded loops (training runs one BLAS thread too, see
``runtime.blas_threads``): each output is written in a fixed order, so results do
not depend on the machine's thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "col2im",
    "col2im_reference",
    "im2col",
    "maxpool_backward",
    "maxpool_backward_reference",
    "maxpool_forward",
    "maxpool_forward_reference",
    "out_size",
]


def out_size(size: int, kernel: int, stride: int) -> int:
    """Output length of a valid (already padded) window sweep."""
    if size < kernel:
        raise ValueError(f"input size {size} is smaller than the kernel {kernel}")
    return (size - kernel) // stride + 1


def im2col(x: np.ndarray, kh: int, kw: int, stride: int) -> np.ndarray:
    """Patches of an (already padded) NHWC batch as rows ``(B*Ho*Wo, kh*kw*C)``.

    A strided view plus one copy; numpy does this at memory speed, so there is no
    numba twin.
    """
    b, h, w, c = x.shape
    ho, wo = out_size(h, kh, stride), out_size(w, kw, stride)
    s0, s1, s2, s3 = x.strides
    view = np.lib.stride_tricks.as_strided(
        x, shape=(b, ho, wo, kh, kw, c), strides=(s0, s1 * stride, s2 * stride, s1, s2, s3), writeable=False
    )
    return np.ascontiguousarray(view).reshape(b * ho * wo, kh * kw * c)


@njit(cache=True)
def _col2im_kernel(cols, b, h, w, c, kh, kw, stride, ho, wo):
    out = np.zeros((b, h, w, c), dtype=cols.dtype)
    d = cols.reshape(b, ho, wo, kh, kw, c)
    for n in range(b):
        for i in range(ho):
            for j in range(wo):
                for p in range(kh):
                    for q in range(kw):
                        for ch in range(c):
                            out[n, i * stride + p, j * stride + q, ch] += d[n, i, j, p, q, ch]
    return out


def col2im(cols: np.ndarray, shape: tuple[int, int, int, int], kh: int, kw: int, stride: int) -> np.ndarray:
    """Adjoint of :func:`im2col`: sum patch gradients back into an NHWC image of ``shape``."""
    b, h, w, c = shape
    ho, wo = out_size(h, kh, stride), out_size(w, kw, stride)
    return _col2im_kernel(np.ascontiguousarray(cols), b, h, w, c, kh, kw, stride, ho, wo)


def col2im_reference(cols: np.ndarray, shape: tuple[int, int, int, int], kh: int, kw: int, stride: int) -> np.ndarray:
    """numpy twin of :func:`col2im`: one strided add per kernel offset."""
    b, h, w, c = shape
    ho, wo = out_size(h, kh, stride), out_size(w, kw, stride)
    d = cols.reshape(b, ho, wo, kh, kw, c)
    out = np.zeros(shape, dtype=cols.dtype)
    for p in range(kh):
        for q in range(kw):
            out[:, p : p + stride * (ho - 1) + 1 : stride, q : q + stride * (wo - 1) + 1 : stride, :] += d[:, :, :, p, q, :]
    return out


@njit(cache=True)
def _maxpool_fwd_kernel(x, k, stride, ho, wo):
    b, h, w, c = x.shape
    out = np.empty((b, ho, wo, c), dtype=x.dtype)
    arg = np.empty((b, ho, wo, c), dtype=np.int32)
    for n in range(b):
        for i in range(ho):
            for j in range(wo):
                for ch in range(c):
                    best = x[n, i * stride, j * stride, ch]
                    besti = 0
                    for p in range(k):
                        for q in range(k):
                            v = x[n, i * stride + p, j * stride + q, ch]
                            if v > best:
                                best = v
                                besti = p * k + q
                    out[n, i, j, ch] = best
                    arg[n, i, j, ch] = besti
    return out, arg


def maxpool_forward(x: np.ndarray, k: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Max over ``k x k`` windows of an NHWC batch; returns the output and the
    argmax offset ``p*k+q`` within each window (first maximum wins)."""
    ho, wo = out_size(x.shape[1], k, stride), out_size(x.shape[2], k, stride)
    return _maxpool_fwd_kernel(np.ascontiguousarray(x), k, stride, ho, wo)


def maxpool_forward_reference(x: np.ndarray, k: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    b, h, w, c = x.shape
    ho, wo = out_size(h, k, stride), out_size(w, k, stride)
    s0, s1, s2, s3 = x.strides
    win = np.lib.stride_tricks.as_strided(
        x, shape=(b, ho, wo, c, k, k), strides=(s0, s1 * stride, s2 * stride, s3, s1, s2)
    ).reshape(b, ho, wo, c, k * k)
    arg = win.argmax(axis=-1).astype(np.int32)
    return np.take_along_axis(win, arg[..., None], axis=-1)[..., 0], arg


@njit(cache=True)
def _maxpool_bwd_kernel(dy, arg, b, h, w, c, k, stride):
    dx = np.zeros((b, h, w, c), dtype=dy.dtype)
    ho, wo = dy.shape[1], dy.shape[2]
    for n in range(b):
        for i in range(ho):
            for j in range(wo):
                for ch in range(c):
                    a = arg[n, i, j, ch]
                    dx[n, i * stride + a // k, j * stride + a % k, ch] += dy[n, i, j, ch]
    return dx


def maxpool_backward(dy: np.ndarray, arg: np.ndarray, shape: tuple[int, int, int, int], k: int, stride: int) -> np.ndarray:
    """Route each output gradient to the input position that won the max."""
    b, h, w, c = shape
    return _maxpool_bwd_kernel(np.ascontiguousarray(dy), arg, b, h, w, c, k, stride)


def maxpool_backward_reference(dy, arg, shape, k, stride):
    b, h, w, c = shape
    ho, wo = dy.shape[1], dy.shape[2]
    dx = np.zeros(shape, dtype=dy.dtype)
    nn_, ii, jj, cc = np.indices((b, ho, wo, c))
    rows = ii * stride + arg // k
    cols = jj * stride + arg % k
    np.add.at(dx, (nn_, rows, cols, cc), dy)
    return dx
