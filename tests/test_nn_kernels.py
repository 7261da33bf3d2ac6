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
