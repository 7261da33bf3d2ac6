"""The loops of the layer library: numba kernels, each next to a plain numpy reference.

What numpy cannot do at memory speed lives here: im2col and its adjoint col2im
(padding fused in), max pooling with its argmax bookkeeping (a branch-free 2x2
stride-2 kernel and a general one), ReLU with its mask, the bias gradient's column
sums, the SGD momentum step, and evaluation's per-sample activation quantizer. GEMMs are BLAS (through the matmul backend in
evaluation). Every kernel has a ``*_reference`` twin written in plain numpy; the
tests check that the two agree (bit for bit, except col2im, which adds the same
terms in another order: the order of its earlier numba version, so training gives
the same weights as before), and ``benchmarks/`` compares their speed.

Layout: activations are NHWC (batch, height, width, channels), so an im2col row
is ``(kh, kw, C)`` in C order and a convolution weight in HWIO order reshapes to
the GEMM's ``(kh*kw*C_in, C_out)`` matrix without a copy.

The numba kernels are single-threaded loops (training runs one BLAS thread too, see
``runtime.blas_threads``): each output is written in a fixed order, so results do
not depend on the machine's thread count. They index flat arrays with unsigned
offsets: numba wraps negative signed indices, and that check per access kept the
loops from vectorizing (col2im ran 5x slower with signed indices).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba import uint64 as _U

from harness.numerics.quant import quantize_symmetric

__all__ = [
    "add_bias",
    "col2im",
    "col2im_reference",
    "column_sums",
    "column_sums_reference",
    "im2col",
    "im2col_reference",
    "maxpool_backward",
    "maxpool_backward_reference",
    "maxpool_forward",
    "maxpool_forward_reference",
    "out_size",
    "quantize_rows",
    "quantize_rows_reference",
    "relu_backward",
    "relu_backward_reference",
    "relu_forward",
    "relu_forward_reference",
    "sgd_momentum_step",
    "sgd_momentum_step_reference",
]


def out_size(size: int, kernel: int, stride: int) -> int:
    """Output length of a valid (already padded) window sweep."""
    if size < kernel:
        raise ValueError(f"input size {size} is smaller than the kernel {kernel}")
    return (size - kernel) // stride + 1


# -- im2col / col2im -------------------------------------------------------------

@njit(cache=True)
def _im2col_rows_kernel(x, kh, kw, s, pad, ho, wo):
    """Rows layout: ``cols[(n, i, j), (p, q, ch)]``; a window row is one contiguous copy."""
    b, h, w, c = x.shape
    k = kh * kw * c
    cols = np.empty(b * ho * wo * k, dtype=x.dtype)
    xf = x.reshape(-1)
    seg = _U(kw * c)
    cc = _U(c)
    r = _U(0)
    for n in range(b):
        for i in range(ho):
            for j in range(wo):
                x0 = j * s - pad
                inside = x0 >= 0 and x0 + kw <= w
                for p in range(kh):
                    y = i * s + p - pad
                    dst = r + _U(p) * seg
                    if y < 0 or y >= h:
                        for t in range(seg):
                            cols[dst + t] = 0
                    elif inside:
                        src = _U(((n * h + y) * w + x0) * c)
                        for t in range(seg):
                            cols[dst + t] = xf[src + t]
                    else:
                        for q in range(kw):
                            xx = x0 + q
                            d = dst + _U(q) * cc
                            if xx < 0 or xx >= w:
                                for t in range(cc):
                                    cols[d + t] = 0
                            else:
                                src = _U(((n * h + y) * w + xx) * c)
                                for t in range(cc):
                                    cols[d + t] = xf[src + t]
                r += _U(k)
    return cols.reshape(b * ho * wo, k)


@njit(cache=True)
def _im2col_single_channel_kernel(x, kh, kw, pad, ho, wo):
    """Transposed layout ``colsT[(p, q), (n, i, j)]`` of a one-channel, stride-1 input:
    each output row segment is one contiguous copy of an image row (a rows-layout
    copy would move ``kw`` values at a time)."""
    b, h, w, _ = x.shape
    m = b * ho * wo
    out = np.empty(kh * kw * m, dtype=x.dtype)
    xf = x.reshape(-1)
    for p in range(kh):
        for q in range(kw):
            jlo = min(max(pad - q, 0), wo)  # first j with 0 <= j + q - pad
            jhi = max(min(w + pad - q, wo), jlo)  # one past the last j with j + q - pad < w
            t = p * kw + q
            for n in range(b):
                for i in range(ho):
                    y = i + p - pad
                    ob = _U(t * m + (n * ho + i) * wo)
                    if y < 0 or y >= h:
                        for j in range(_U(wo)):
                            out[ob + j] = 0
                        continue
                    for j in range(_U(jlo)):
                        out[ob + j] = 0
                    for j in range(_U(jhi), _U(wo)):
                        out[ob + j] = 0
                    src = _U((n * h + y) * w + jlo + q - pad)
                    dst = ob + _U(jlo)
                    for j in range(_U(jhi - jlo)):
                        out[dst + j] = xf[src + j]
    return out.reshape(kh * kw, m)


def im2col(x: np.ndarray, kh: int, kw: int, stride: int, padding: int = 0, any_order: bool = False) -> np.ndarray:
    """Patches of an NHWC batch, zero-padded by ``padding``, as rows ``(B*Ho*Wo, kh*kw*C)``.

    C-ordered, unless ``any_order`` allows a Fortran-ordered result (the transpose
    of a C-ordered ``(kh*kw*C, B*Ho*Wo)`` array): for a one-channel stride-1 input
    that is 4x faster to build, and BLAS takes either order at the same speed.
    """
    b, h, w, c = x.shape
    ho, wo = out_size(h + 2 * padding, kh, stride), out_size(w + 2 * padding, kw, stride)
    x = np.ascontiguousarray(x)
    if any_order and c == 1 and stride == 1 and wo > kw:
        return _im2col_single_channel_kernel(x, kh, kw, padding, ho, wo).T
    if kw * c < 8:  # a window row is too short for the copy loop: numpy's strided copy is faster
        return im2col_reference(x, kh, kw, stride, padding)
    return _im2col_rows_kernel(x, kh, kw, stride, padding, ho, wo)


def im2col_reference(x: np.ndarray, kh: int, kw: int, stride: int, padding: int = 0) -> np.ndarray:
    """numpy twin of :func:`im2col`: a padded copy, a strided view, one copy."""
    if padding:
        x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    b, h, w, c = x.shape
    ho, wo = out_size(h, kh, stride), out_size(w, kw, stride)
    s0, s1, s2, s3 = x.strides
    view = np.lib.stride_tricks.as_strided(
        x, shape=(b, ho, wo, kh, kw, c), strides=(s0, s1 * stride, s2 * stride, s1, s2, s3), writeable=False
    )
    return np.ascontiguousarray(view).reshape(b * ho * wo, kh * kw * c)


@njit(cache=True)
def _col2im_kernel(cols, b, h, w, c, kh, kw, s, pad, ho, wo):
    out = np.zeros(b * h * w * c, dtype=cols.dtype)
    cf = cols.reshape(-1)
    k = kh * kw * c
    seg = _U(kw * c)
    cc = _U(c)
    r = _U(0)
    for n in range(b):
        for i in range(ho):
            for j in range(wo):
                x0 = j * s - pad
                inside = x0 >= 0 and x0 + kw <= w
                for p in range(kh):
                    y = i * s + p - pad
                    if y < 0 or y >= h:
                        continue
                    src = r + _U(p) * seg
                    if inside:
                        dst = _U(((n * h + y) * w + x0) * c)
                        for t in range(seg):
                            out[dst + t] += cf[src + t]
                    else:
                        for q in range(kw):
                            xx = x0 + q
                            if xx >= 0 and xx < w:
                                dst = _U(((n * h + y) * w + xx) * c)
                                sq = src + _U(q) * cc
                                for t in range(cc):
                                    out[dst + t] += cf[sq + t]
                r += _U(k)
    return out.reshape(b, h, w, c)


def col2im(cols: np.ndarray, shape: tuple[int, int, int, int], kh: int, kw: int, stride: int,
           padding: int = 0) -> np.ndarray:
    """Adjoint of :func:`im2col`: sum patch gradients back into an NHWC image of
    ``shape`` (the unpadded input's; what fell on the padding is dropped)."""
    b, h, w, c = shape
    ho, wo = out_size(h + 2 * padding, kh, stride), out_size(w + 2 * padding, kw, stride)
    return _col2im_kernel(np.ascontiguousarray(cols), b, h, w, c, kh, kw, stride, padding, ho, wo)


def col2im_reference(cols: np.ndarray, shape: tuple[int, int, int, int], kh: int, kw: int, stride: int,
                     padding: int = 0) -> np.ndarray:
    """numpy twin of :func:`col2im`: one strided add per kernel offset, then the padding cut off."""
    b, h, w, c = shape
    p = padding
    hp, wp = h + 2 * p, w + 2 * p
    ho, wo = out_size(hp, kh, stride), out_size(wp, kw, stride)
    d = cols.reshape(b, ho, wo, kh, kw, c)
    out = np.zeros((b, hp, wp, c), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride, :] += d[:, :, :, i, j, :]
    return out[:, p : p + h, p : p + w, :]


# -- bias -------------------------------------------------------------------------

def _row_block(m: int, n: int) -> int:
    """Rows per block so a block is >= 32 values: numpy's inner loops run over a
    block's row instead of ``n`` (6 for conv1) values at a time."""
    for rows in (16, 8, 4, 2):
        if n * rows <= 128 and m % rows == 0:
            return rows
    return 1


def add_bias(y: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``y + bias`` over the last axis of a C-ordered ``y`` (a new array, the same values)."""
    n = bias.shape[0]
    m = y.size // n
    rows = _row_block(m, n) if y.flags.c_contiguous else 1
    if rows == 1:
        return y + bias
    out = np.empty(y.shape, np.result_type(y, bias))
    np.add(y.reshape(-1, rows * n), np.tile(bias, rows), out=out.reshape(-1, rows * n))
    return out


@njit(cache=True)
def _column_sums_kernel(d):
    m, n = d.shape
    df = d.reshape(-1)
    out = np.empty(n, d.dtype)
    step = _U(n)
    zero = np.zeros(1, d.dtype)[0]
    for c0 in range(0, n, 8):  # up to eight running sums held in registers
        w = min(8, n - c0)
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = zero
        r = _U(c0)
        for _ in range(m):
            a0 += df[r]
            if w > 1:
                a1 += df[r + _U(1)]
            if w > 2:
                a2 += df[r + _U(2)]
            if w > 3:
                a3 += df[r + _U(3)]
            if w > 4:
                a4 += df[r + _U(4)]
            if w > 5:
                a5 += df[r + _U(5)]
            if w > 6:
                a6 += df[r + _U(6)]
            if w > 7:
                a7 += df[r + _U(7)]
            r += step
        sums = (a0, a1, a2, a3, a4, a5, a6, a7)
        for k in range(w):
            out[c0 + k] = sums[k]
    return out


def column_sums(d: np.ndarray) -> np.ndarray:
    """``d.sum(axis=0)`` of an ``(M, N)`` array (the bias gradient), bit for bit: numpy
    adds the rows in order too, but its inner loop runs over ``N`` (6 for conv1)
    values at a time. With one column numpy sums pairwise, so it keeps that case."""
    if d.ndim != 2 or d.shape[1] < 2 or not d.flags.c_contiguous or d.dtype.kind != "f":
        return d.sum(axis=0)
    return _column_sums_kernel(d)


def column_sums_reference(d: np.ndarray) -> np.ndarray:
    return d.sum(axis=0)


# -- ReLU ------------------------------------------------------------------------

@njit(cache=True)
def _relu_fwd_kernel(x):
    xf = x.reshape(-1)
    out = np.empty_like(xf)
    mask = np.empty(xf.size, np.bool_)
    for i in range(_U(xf.size)):
        v = xf[i]
        mask[i] = v > 0
        out[i] = 0 if v <= 0 else v  # NaN passes, as in np.maximum
    return out, mask


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``max(x, 0)`` and the mask ``x > 0`` in one pass."""
    out, mask = _relu_fwd_kernel(np.ascontiguousarray(x))
    return out.reshape(x.shape), mask.reshape(x.shape)


def relu_forward_reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.maximum(x, 0), x > 0


@njit(cache=True)
def _relu_bwd_kernel(dy, mask):
    df = dy.reshape(-1)
    mf = mask.reshape(-1)
    out = np.empty_like(df)
    for i in range(_U(df.size)):
        out[i] = df[i] * mf[i]
    return out


def relu_backward(dy: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``dy * mask``."""
    if dy.shape != mask.shape:
        return dy * mask
    return _relu_bwd_kernel(np.ascontiguousarray(dy), np.ascontiguousarray(mask)).reshape(dy.shape)


def relu_backward_reference(dy: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return dy * mask


# -- max pooling -------------------------------------------------------------------

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


@njit(cache=True)
def _maxpool2_fwd_kernel(x, ho, wo):
    """2x2 windows, stride 2: four loads and three selects per output, no branches
    (a data-dependent branch mispredicts on every other window)."""
    b, h, w, c = x.shape
    out = np.empty(b * ho * wo * c, dtype=x.dtype)
    arg = np.empty(b * ho * wo * c, dtype=np.int32)
    xf = x.reshape(-1)
    cc = _U(c)
    rs = _U(w * c)
    o = _U(0)
    for n in range(b):
        for i in range(ho):
            for j in range(wo):
                a0 = _U(((n * h + 2 * i) * w + 2 * j) * c)
                a1 = a0 + cc
                a2 = a0 + rs
                a3 = a2 + cc
                for ch in range(cc):
                    v1 = xf[a1 + ch]
                    v2 = xf[a2 + ch]
                    v3 = xf[a3 + ch]
                    best = xf[a0 + ch]
                    bi = np.int32(0)
                    g = v1 > best
                    best = v1 if g else best
                    bi = np.int32(1) if g else bi
                    g = v2 > best
                    best = v2 if g else best
                    bi = np.int32(2) if g else bi
                    g = v3 > best
                    best = v3 if g else best
                    bi = np.int32(3) if g else bi
                    out[o + ch] = best
                    arg[o + ch] = bi
                o += cc
    return out.reshape(b, ho, wo, c), arg.reshape(b, ho, wo, c)


def maxpool_forward(x: np.ndarray, k: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Max over ``k x k`` windows of an NHWC batch; returns the output and the
    argmax offset ``p*k+q`` within each window (first maximum wins)."""
    ho, wo = out_size(x.shape[1], k, stride), out_size(x.shape[2], k, stride)
    x = np.ascontiguousarray(x)
    if k == 2 and stride == 2:
        return _maxpool2_fwd_kernel(x, ho, wo)
    return _maxpool_fwd_kernel(x, k, stride, ho, wo)


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
    dx = np.zeros(b * h * w * c, dtype=dy.dtype)
    ho, wo = dy.shape[1], dy.shape[2]
    df = dy.reshape(-1)
    af = arg.reshape(-1)
    cc = _U(c)
    o = _U(0)
    for n in range(b):
        for i in range(ho):
            for j in range(wo):
                for ch in range(cc):
                    a = af[o + ch]
                    p = a // k
                    q = a - p * k
                    dx[_U(((n * h + i * stride + p) * w + j * stride + q) * c) + ch] += df[o + ch]
                o += cc
    return dx.reshape(b, h, w, c)


@njit(cache=True)
def _maxpool2_bwd_kernel(dy, arg, b, h, w, c):
    """2x2 windows, stride 2: every covered input is written once, ``dy * (won)``
    (a product, not a branch; so a non-finite ``dy`` also reaches the window's
    losers, where the reference leaves 0). Only an odd last row or column needs
    zero-filling first."""
    ho, wo = dy.shape[1], dy.shape[2]
    if h == 2 * ho and w == 2 * wo:
        dx = np.empty(b * h * w * c, dtype=dy.dtype)
    else:
        dx = np.zeros(b * h * w * c, dtype=dy.dtype)
    df = dy.reshape(-1)
    af = arg.reshape(-1)
    cc = _U(c)
    rs = _U(w * c)
    o = _U(0)
    for n in range(b):
        for i in range(ho):
            for j in range(wo):
                a0 = _U(((n * h + 2 * i) * w + 2 * j) * c)
                a1 = a0 + cc
                a2 = a0 + rs
                a3 = a2 + cc
                for ch in range(cc):
                    g = df[o + ch]
                    a = af[o + ch]
                    dx[a0 + ch] = g * (a == 0)
                    dx[a1 + ch] = g * (a == 1)
                    dx[a2 + ch] = g * (a == 2)
                    dx[a3 + ch] = g * (a == 3)
                o += cc
    return dx.reshape(b, h, w, c)


def maxpool_backward(dy: np.ndarray, arg: np.ndarray, shape: tuple[int, int, int, int], k: int, stride: int) -> np.ndarray:
    """Route each output gradient to the input position that won the max."""
    b, h, w, c = shape
    dy, arg = np.ascontiguousarray(dy), np.ascontiguousarray(arg)
    if k == 2 and stride == 2:
        return _maxpool2_bwd_kernel(dy, arg, b, h, w, c)
    return _maxpool_bwd_kernel(dy, arg, b, h, w, c, k, stride)


def maxpool_backward_reference(dy, arg, shape, k, stride):
    b, h, w, c = shape
    ho, wo = dy.shape[1], dy.shape[2]
    dx = np.zeros(shape, dtype=dy.dtype)
    nn_, ii, jj, cc = np.indices((b, ho, wo, c))
    rows = ii * stride + arg // k
    cols = jj * stride + arg % k
    np.add.at(dx, (nn_, rows, cols, cc), dy)
    return dx


# -- optimizer -------------------------------------------------------------------

@njit(cache=True)
def _sgd_momentum_kernel(p, g, v, lr, momentum, weight_decay, decay):
    pf = p.reshape(-1)
    gf = g.reshape(-1)
    vf = v.reshape(-1)
    for i in range(_U(pf.size)):
        gi = gf[i] + weight_decay * pf[i] if decay else gf[i]
        vi = vf[i] * momentum + gi
        vf[i] = vi
        pf[i] -= lr * vi


def sgd_momentum_step(p: np.ndarray, g: np.ndarray, v: np.ndarray, lr: float, momentum: float,
                      weight_decay: float) -> None:
    """In place: ``v = momentum * v + (g + weight_decay * p)``, ``p -= lr * v``, for
    float32 C-ordered arrays of one shape; one pass instead of six numpy calls.
    The scalars are rounded to float32 first, as numpy does with Python floats."""
    f = np.float32
    _sgd_momentum_kernel(p, g, v, f(lr), f(momentum), f(weight_decay), bool(weight_decay))


def sgd_momentum_step_reference(p, g, v, lr, momentum, weight_decay):
    if weight_decay:
        g = g + weight_decay * p
    v *= momentum
    v += g
    p -= lr * v


@njit(cache=True, parallel=True)
def _quantize_rows_kernel(x, qmax):
    """Codes and scales of :func:`quantize_rows`; ``ok`` is False if a row's max is not finite.

    Rows are independent, so they run in parallel: each row's values are those of the
    serial loop whatever the thread count."""
    n, k = x.shape
    codes = np.empty((n, k), dtype=np.int32)
    scale = np.empty((n, 1), dtype=np.float64)
    finite = np.ones(n, dtype=np.bool_)
    for i in prange(n):
        amax = abs(x[i, 0])
        for j in range(1, k):
            a = abs(x[i, j])
            if a > amax:
                amax = a
        m = np.float64(amax)
        if not np.isfinite(m):
            finite[i] = False
            continue
        s = m / qmax if m > 0 else 1.0
        scale[i, 0] = s
        for j in range(k):
            v = np.rint(np.float64(x[i, j]) / s)
            if v > qmax:
                v = qmax
            elif v < -qmax:
                v = -qmax
            codes[i, j] = np.int32(v)
    return codes, scale, finite.all()


def quantize_rows(x: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`harness.numerics.quant.quantize_symmetric` of a 2-D array with ``axis=1`` (one
    scale per row: evaluation's per-sample activations), in one pass per row instead of
    numpy's four over float64 temporaries: the same codes and scales, bit for bit. Rows
    with a non-finite value go to the numpy function, whose NaN handling this keeps."""
    if x.ndim != 2 or x.shape[1] == 0 or not 1 <= bits <= 16:
        return quantize_symmetric(x, bits, axis=1)
    codes, scale, ok = _quantize_rows_kernel(x, float(max(1, 2 ** (bits - 1) - 1)))
    if not ok:
        return quantize_symmetric(x, bits, axis=1)
    return codes, scale


def quantize_rows_reference(x: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    return quantize_symmetric(x, bits, axis=1)
