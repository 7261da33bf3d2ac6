"""Every layer's backward pass agrees with central finite differences.

Each check takes a random direction ``V`` for the input and for each parameter and
compares ``<grad, V>`` with ``(L(p + eV) - L(p - eV)) / 2e`` for the scalar loss
``L = sum(forward(x) * R)``. Inputs are kept away from ReLU/max ties so the
finite difference does not straddle a kink.
"""

import numpy as np
import pytest

from harness.nn import (
    AvgPool2d,
    BatchNorm,
    Conv2d,
    Dense,
    GELU,
    LayerNorm,
    MaxPool2d,
    MultiHeadSelfAttention,
    ReLU,
    Runtime,
    mse,
    softmax_cross_entropy,
)
from harness.nn.models import TransformerBlock

EPS = 1e-2
RTOL = 2e-2


def directional_check(layer, x, rt_kwargs=None, eps=EPS):
    rng = np.random.default_rng(42)
    rt_kwargs = rt_kwargs or {}

    def loss(inp):
        y = layer.forward(inp, Runtime(training=True, **rt_kwargs))
        return float(np.sum(y.astype(np.float64) * r))

    y = layer.forward(x, Runtime(training=True, **rt_kwargs))
    r = rng.normal(size=y.shape)
    layer.forward(x, Runtime(training=True, **rt_kwargs))
    dx = layer.backward(r.astype(np.float32))
    grads = {}
    for sub in [layer, *_all_sub(layer)]:
        grads.update({(sub, k): g.copy() for k, g in sub.grads.items()})
    checked = 0
    v = rng.normal(size=x.shape).astype(np.float32)
    num = (loss(x + eps * v) - loss(x - eps * v)) / (2 * eps)
    assert np.isclose(np.sum(dx * v), num, rtol=RTOL, atol=1e-3), ("input", np.sum(dx * v), num)
    for (sub, key), g in grads.items():
        p = sub.params[key]
        v = rng.normal(size=p.shape).astype(np.float32)
        orig = p.copy()
        sub.params[key] = orig + eps * v
        up = loss(x)
        sub.params[key] = orig - eps * v
        down = loss(x)
        sub.params[key] = orig
        num = (up - down) / (2 * eps)
        assert np.isclose(np.sum(g * v), num, rtol=RTOL, atol=1e-3), (sub.name, key, np.sum(g * v), num)
        checked += 1
    return checked


def _all_sub(layer):
    out = []
    for s in layer.sublayers():
        out.append(s)
        out.extend(_all_sub(s))
    return out


def rng():
    return np.random.default_rng(0)


def test_dense_backward():
    x = rng().normal(size=(4, 5)).astype(np.float32)
    assert directional_check(Dense("d", 5, 3, rng()), x) == 2


def test_dense_on_tokens_backward():
    x = rng().normal(size=(2, 3, 5)).astype(np.float32)
    assert directional_check(Dense("d", 5, 4, rng(), init="xavier"), x) == 2


@pytest.mark.parametrize("stride, padding", [(1, 0), (1, 2), (2, 1)])
def test_conv2d_backward(stride, padding):
    x = rng().normal(size=(2, 7, 7, 3)).astype(np.float32)
    assert directional_check(Conv2d("c", 3, 4, 3, rng(), stride=stride, padding=padding), x) == 2


def test_relu_backward():
    x = rng().normal(size=(3, 10)).astype(np.float32)
    x[np.abs(x) < 0.1] = 0.5  # away from the kink
    directional_check(ReLU("r"), x, eps=1e-3)


def test_gelu_backward():
    directional_check(GELU("g"), rng().normal(size=(3, 10)).astype(np.float32))


def test_maxpool_backward():
    # distinct values spaced apart, so a small step never changes the argmax
    x = rng().permutation(2 * 6 * 6 * 2).reshape(2, 6, 6, 2).astype(np.float32) * 0.1
    directional_check(MaxPool2d("p", 2), x, eps=1e-3)


def test_avgpool_backward():
    directional_check(AvgPool2d("p", 3, 2), rng().normal(size=(2, 7, 7, 2)).astype(np.float32))


def test_layernorm_backward():
    x = rng().normal(size=(2, 3, 8)).astype(np.float32)
    ln = LayerNorm("ln", 8)
    ln.params["gamma"] = rng().normal(size=8).astype(np.float32)
    assert directional_check(ln, x) == 2


@pytest.mark.parametrize("shape", [(16, 5), (4, 3, 3, 5)])
def test_batchnorm_backward(shape):
    x = rng().normal(size=shape).astype(np.float32) * 2 + 1
    bn = BatchNorm("bn", 5)
    bn.params["gamma"] = rng().normal(size=5).astype(np.float32)
    assert directional_check(bn, x) == 2


def test_batchnorm_with_channel_mask_backward():
    bn = BatchNorm("bn", 5)
    bn.channel_mask = np.array([1, 0, 1, 1, 0], np.float32)
    directional_check(bn, rng().normal(size=(16, 5)).astype(np.float32))


def test_attention_backward():
    x = rng().normal(size=(2, 5, 8)).astype(np.float32)
    assert directional_check(MultiHeadSelfAttention("a", 8, 2, rng()), x) == 4


def test_attention_with_token_and_head_masks_backward():
    x = rng().normal(size=(2, 5, 8)).astype(np.float32)
    attn = MultiHeadSelfAttention("a", 8, 2, rng())
    attn.set_head_mask(np.array([1.0, 0.0]))
    keep = np.array([[1, 1, 0, 1, 0], [1, 0, 1, 1, 1]], np.float32)
    directional_check(attn, x, {"token_keep": keep})


def test_transformer_block_backward():
    x = rng().normal(size=(2, 4, 8)).astype(np.float32)
    keep = np.array([[1, 1, 0, 1], [1, 1, 1, 1]], np.float32)
    assert directional_check(TransformerBlock("b", 8, 2, 16, rng()), x, {"token_keep": keep}) == 12


def test_softmax_cross_entropy_gradient():
    r = rng()
    logits = r.normal(size=(4, 6))
    labels = np.array([0, 5, 2, 2])
    loss, grad = softmax_cross_entropy(logits, labels)
    v = r.normal(size=logits.shape)
    num = (softmax_cross_entropy(logits + 1e-5 * v, labels)[0] - softmax_cross_entropy(logits - 1e-5 * v, labels)[0]) / 2e-5
    assert np.isclose(np.sum(grad * v), num, rtol=1e-4)
    assert np.isclose(loss, -np.mean(np.log(np.exp(logits) / np.exp(logits).sum(1, keepdims=True))[range(4), labels]))


def test_mse_gradient():
    r = rng()
    p, t = r.normal(size=(3, 4)), r.normal(size=(3, 4))
    loss, grad = mse(p, t)
    v = r.normal(size=p.shape)
    num = (mse(p + 1e-5 * v, t)[0] - mse(p - 1e-5 * v, t)[0]) / 2e-5
    assert np.isclose(loss, np.mean((p - t) ** 2))
    assert np.isclose(np.sum(grad * v), num, rtol=1e-4)


@pytest.mark.parametrize("layer", [
    lambda: Conv2d("c", 1, 4, 5, rng(), padding=2),
    lambda: Dense("d", 5, 3, rng()),
])
def test_backward_without_input_gradient_keeps_the_weight_gradients(layer):
    """A model's first layer skips dX (``input_grad=False``); its gradients do not change."""
    a, b = layer(), layer()
    x = rng().normal(size=(2, 8, 8, 1) if isinstance(a, Conv2d) else (4, 5)).astype(np.float32)
    dy = rng().normal(size=a.forward(x, Runtime(training=True)).shape).astype(np.float32)
    assert a.backward(dy) is not None
    b.forward(x, Runtime(training=True))
    assert b.backward(dy, input_grad=False) is None
    assert all(np.array_equal(a.grads[k], b.grads[k]) for k in a.grads)
