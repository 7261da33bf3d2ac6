"""The numba kernels agree with their numpy references (and im2col with a naive loop)."""

import numpy as np
import pytest

from harness.nn import kernels


def naive_im2col(x, k, s):
    b, h, w, c = x.shape
    ho, wo = (h - k) // s + 1, (w - k) // s + 1
    rows = []
    for n in range(b):
        for i in range(ho):
            for j in range(wo):
                rows.append(x[n, i * s : i * s + k, j * s : j * s + k, :].reshape(-1))
    return np.array(rows)


@pytest.mark.parametrize("k, s", [(3, 1), (2, 2), (5, 1), (3, 2)])
def test_im2col_matches_naive_loop(k, s):
    x = np.random.default_rng(0).normal(size=(2, 9, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(kernels.im2col(x, k, k, s), naive_im2col(x, k, s))


@pytest.mark.parametrize("k, s", [(3, 1), (2, 2), (5, 1), (3, 2)])
def test_col2im_kernel_matches_reference(k, s):
    rng = np.random.default_rng(1)
    shape = (3, 9, 8, 4)
    ho, wo = (9 - k) // s + 1, (8 - k) // s + 1
    cols = rng.normal(size=(3 * ho * wo, k * k * 4)).astype(np.float32)
    fast = kernels.col2im(cols, shape, k, k, s)
    ref = kernels.col2im_reference(cols, shape, k, k, s)
    np.testing.assert_allclose(fast, ref, rtol=1e-6, atol=1e-6)


def test_col2im_is_the_adjoint_of_im2col():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 7, 7, 2)).astype(np.float64)
    cols = kernels.im2col(x, 3, 3, 2)
    r = rng.normal(size=cols.shape)
    # <im2col(x), r> == <x, col2im(r)>
    assert np.isclose(np.sum(cols * r), np.sum(x * kernels.col2im(r, x.shape, 3, 3, 2)))


@pytest.mark.parametrize("k, s", [(2, 2), (3, 1), (3, 2)])
def test_maxpool_kernels_match_reference(k, s):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 8, 9, 3)).astype(np.float32)
    y, arg = kernels.maxpool_forward(x, k, s)
    y_ref, arg_ref = kernels.maxpool_forward_reference(x, k, s)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(arg, arg_ref)
    dy = rng.normal(size=y.shape).astype(np.float32)
    np.testing.assert_allclose(kernels.maxpool_backward(dy, arg, x.shape, k, s),
                               kernels.maxpool_backward_reference(dy, arg_ref, x.shape, k, s), rtol=1e-6, atol=1e-6)


# (b, h, w, c, k, stride, padding): the one-channel stride-1 kernel (conv1's shape,
# padded and not, windows wider than the padding) and the rows kernel (several
# channels, stride 2, padding that cuts windows on both sides)
IM2COL_CASES = [
    (2, 28, 28, 1, 5, 1, 2),
    (3, 7, 7, 1, 5, 1, 2),
    (2, 6, 6, 1, 3, 1, 0),
    (1, 4, 4, 1, 5, 1, 2),
    (2, 14, 14, 6, 5, 1, 0),
    (2, 9, 8, 3, 3, 1, 1),
    (2, 9, 8, 3, 2, 2, 1),
    (2, 7, 9, 1, 3, 2, 1),
]


def ref_out(h, w, k, s, p):
    return kernels.out_size(h + 2 * p, k, s), kernels.out_size(w + 2 * p, k, s)


@pytest.mark.parametrize("b, h, w, c, k, s, p", IM2COL_CASES)
def test_im2col_kernels_match_reference(b, h, w, c, k, s, p):
    x = np.random.default_rng(4).normal(size=(b, h, w, c)).astype(np.float32)
    ref = kernels.im2col_reference(x, k, k, s, p)
    rows = kernels.im2col(x, k, k, s, p)
    assert rows.flags.c_contiguous
    np.testing.assert_array_equal(rows, ref)
    np.testing.assert_array_equal(kernels.im2col(x, k, k, s, p, any_order=True), ref)
    np.testing.assert_array_equal(kernels._im2col_rows_kernel(x, k, k, s, p, *ref_out(h, w, k, s, p)), ref)
    if not p:
        np.testing.assert_array_equal(kernels.im2col(x, k, k, s), naive_im2col(x, k, s))


@pytest.mark.parametrize("b, h, w, c, k, s, p", IM2COL_CASES)
def test_col2im_with_padding_matches_reference_and_is_the_adjoint(b, h, w, c, k, s, p):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(b, h, w, c))
    cols = kernels.im2col(x, k, k, s, p)
    r = rng.normal(size=cols.shape)
    back = kernels.col2im(r, x.shape, k, k, s, p)
    np.testing.assert_allclose(back, kernels.col2im_reference(r, x.shape, k, k, s, p), rtol=1e-12, atol=1e-12)
    assert np.isclose(np.sum(cols * r), np.sum(x * back))


@pytest.mark.parametrize("shape", [(2, 8, 8, 6), (2, 9, 7, 1), (1, 10, 10, 16)])
def test_maxpool_2x2_kernels_match_reference(shape):
    """The 2x2 stride-2 kernels, on even sizes (no zero fill) and odd ones, with ties."""
    rng = np.random.default_rng(6)
    x = rng.integers(-3, 4, size=shape).astype(np.float32)  # many ties: the first maximum wins
    y, arg = kernels.maxpool_forward(x, 2, 2)
    y_ref, arg_ref = kernels.maxpool_forward_reference(x, 2, 2)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(arg, arg_ref)
    dy = rng.normal(size=y.shape).astype(np.float32)
    np.testing.assert_array_equal(kernels.maxpool_backward(dy, arg, x.shape, 2, 2),
                                  kernels.maxpool_backward_reference(dy, arg_ref, x.shape, 2, 2))


def test_relu_kernels_match_reference():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 5, 7, 2)).astype(np.float32)
    x[0, 0, 0, 0], x[0, 0, 0, 1], x[1, 1, 1, 1] = np.nan, 0.0, -0.0
    y, mask = kernels.relu_forward(x)
    y_ref, mask_ref = kernels.relu_forward_reference(x)
    np.testing.assert_array_equal(y, y_ref)  # NaN passes through, as in np.maximum
    np.testing.assert_array_equal(mask, mask_ref)
    assert y.dtype == x.dtype
    dy = rng.normal(size=x.shape).astype(np.float32)
    np.testing.assert_array_equal(kernels.relu_backward(dy, mask), kernels.relu_backward_reference(dy, mask))


@pytest.mark.parametrize("m, n", [(25088, 6), (3200, 16), (7, 3), (32, 120), (100, 9), (50, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bias_add_and_column_sums_are_bit_identical_to_numpy(m, n, dtype):
    rng = np.random.default_rng(8)
    d = rng.normal(size=(m, n)).astype(dtype)
    b = rng.normal(size=n).astype(dtype)
    np.testing.assert_array_equal(kernels.add_bias(d, b), d + b)
    sums = kernels.column_sums(d)
    assert sums.dtype == dtype
    np.testing.assert_array_equal(sums, kernels.column_sums_reference(d))


def test_training_with_the_kernels_equals_training_with_their_references(monkeypatch):
    """LeNet-5 (with BatchNorm and random shifts) trained through the numba kernels
    and through their numpy twins ends at the same weights, to float32 rounding:
    col2im's twin adds the same terms in another order, and BLAS may round a
    Fortran-ordered operand (conv1's im2col in training) differently."""
    from harness.nn import TrainConfig, fit, lenet5

    rng = np.random.default_rng(9)
    x = rng.normal(size=(48, 28, 28, 1)).astype(np.float32)
    y = rng.integers(0, 10, 48)
    cfg = TrainConfig(epochs=2, batch_size=16, shift=1)

    def trained(bn):
        model = lenet5(np.random.default_rng(0), batchnorm=bn)
        fit(model, (x, y), None, cfg, seed=1)
        return model.state_dict()

    fast = [trained(False), trained(True)]
    for name, ref in [
        ("im2col", lambda x, kh, kw, s, p=0, any_order=False: kernels.im2col_reference(x, kh, kw, s, p)),
        ("col2im", kernels.col2im_reference),
        ("maxpool_forward", kernels.maxpool_forward_reference),
        ("maxpool_backward", kernels.maxpool_backward_reference),
        ("relu_forward", kernels.relu_forward_reference),
        ("relu_backward", kernels.relu_backward_reference),
        ("column_sums", kernels.column_sums_reference),
        ("add_bias", lambda y, b: y + b),
    ]:
        monkeypatch.setattr(kernels, name, ref)
    slow = [trained(False), trained(True)]
    for a, b in zip(fast, slow):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("weight_decay", [0.0, 5e-4])
def test_sgd_momentum_kernel_is_bit_identical_to_numpy(weight_decay):
    rng = np.random.default_rng(10)
    p, g, v = (rng.normal(size=(5, 5, 1, 6)).astype(np.float32) for _ in range(3))
    p2, v2 = p.copy(), v.copy()
    kernels.sgd_momentum_step(p, g, v, 0.03, 0.9, weight_decay)
    kernels.sgd_momentum_step_reference(p2, g, v2, 0.03, 0.9, weight_decay)
    np.testing.assert_array_equal(p, p2)
    np.testing.assert_array_equal(v, v2)


@pytest.mark.parametrize("bits", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_quantize_rows_matches_quantize_symmetric_bit_for_bit(bits, dtype):
    rng = np.random.default_rng(bits)
    x = (rng.normal(size=(37, 150)) * rng.uniform(0.01, 100, size=(37, 1))).astype(dtype)
    x[3] = 0.0  # an all-zero row: scale 1
    x[4, :] = np.maximum(x[4, :], 0)  # ReLU'd
    x[5, :7] = [0.5, 1.5, 2.5, -0.5, -2.5, 3.0, -3.0]  # ties: round half to even
    x[5, 7:] = 0.0
    x[6] = -x[6]
    codes, scale = kernels.quantize_rows(x, bits)
    ref_codes, ref_scale = kernels.quantize_rows_reference(x, bits)
    assert codes.dtype == ref_codes.dtype == np.int32 and scale.dtype == ref_scale.dtype
    np.testing.assert_array_equal(codes, ref_codes)
    np.testing.assert_array_equal(scale, ref_scale)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy's own, on NaN
def test_quantize_rows_leaves_non_finite_rows_to_numpy():
    x = np.ones((3, 4), dtype=np.float32)
    x[1, 2] = np.nan
    x[2, 0] = np.inf
    codes, scale = kernels.quantize_rows(x, 8)
    ref_codes, ref_scale = kernels.quantize_rows_reference(x, 8)
    np.testing.assert_array_equal(codes, ref_codes)
    np.testing.assert_array_equal(scale, ref_scale)
