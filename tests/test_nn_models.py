"""Models: backends see every GEMM, quantized evaluation, op traces, masks, training."""

import numpy as np
import pytest

from harness.nn import (
    BatchNorm,
    Runtime,
    TrainConfig,
    compact_channels,
    fit,
    lenet5,
    mlp,
    predict,
    recalibrate_batchnorm,
    tiny_vit,
)
from harness.numerics.backend import EXACT


class Forwarding:
    """A backend that forwards to the exact one and records what it was given."""

    name = "forwarding"

    def __init__(self):
        self.calls = []

    def matmul(self, a, b, call=None):
        self.calls.append((a.dtype, a.shape, b.shape, int(np.abs(a).max()) if a.dtype.kind == "i" else None))
        return EXACT.matmul(a, b)


class Zero:
    name = "zero"

    def matmul(self, a, b, call=None):
        return np.zeros((a.shape[0], b.shape[1]), np.float64 if a.dtype.kind == "i" else np.float32)


def images(n=6, seed=0):
    return np.random.default_rng(seed).random((n, 28, 28, 1)).astype(np.float32)


MODELS = {
    "mlp": (lambda: mlp([784, 32, 10], np.random.default_rng(0)), lambda: images().reshape(6, -1)),
    "lenet5": (lambda: lenet5(np.random.default_rng(0), batchnorm=True), images),
    "vit": (lambda: tiny_vit(np.random.default_rng(0), depth=2), images),
}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("bits", [0, 8])
def test_forwarding_backend_gives_identical_outputs(name, bits):
    make, data = MODELS[name]
    model, x = make(), data()
    wrapped = Forwarding()
    np.testing.assert_array_equal(predict(model, x, EXACT, bits), predict(model, x, wrapped, bits))
    assert wrapped.calls
    if bits:
        # an integer accelerator sees int32 arrays holding INT8 codes
        assert all(dtype == np.int32 and amax <= 127 for dtype, _, _, amax in wrapped.calls)
    # every GEMM goes through the backend: a backend that returns zeros changes the output
    assert not np.allclose(predict(model, x, Zero(), bits), predict(model, x, EXACT, bits))


def test_vit_sends_attention_products_through_the_backend():
    model = tiny_vit(np.random.default_rng(0), depth=2, heads=4)
    wrapped = Forwarding()
    predict(model, images(3), wrapped)
    qk = [c for c in wrapped.calls if c[1] == (17, 16) and c[2] == (16, 17)]
    av = [c for c in wrapped.calls if c[1] == (17, 17) and c[2] == (17, 16)]
    assert len(qk) == len(av) == 3 * 4 * 2  # samples x heads x blocks


def test_int8_evaluation_is_close_to_float():
    model = lenet5(np.random.default_rng(0))
    x = images(8)
    f = predict(model, x)
    q = predict(model, x, EXACT, 8)
    assert not np.array_equal(f, q)
    assert np.max(np.abs(f - q)) < 0.05 * np.max(np.abs(f))


def test_int8_results_do_not_depend_on_eval_batch_size():
    model = lenet5(np.random.default_rng(0))
    x = images(8)
    np.testing.assert_allclose(predict(model, x, EXACT, 8, batch_size=8), predict(model, x, EXACT, 8, batch_size=3),
                               rtol=1e-5, atol=1e-6)


def test_lenet5_op_trace_matches_hand_count():
    trace = lenet5(np.random.default_rng(0)).op_trace(images(4))
    # conv1: 28x28 outputs (pad 2), k = 5*5*1, 6 filters; conv2: 10x10 outputs, k = 5*5*6, 16 filters
    hand = {
        "conv1": (784, 25, 6),
        "conv2": (100, 150, 16),
        "fc1": (1, 400, 120),
        "fc2": (1, 120, 84),
        "fc3": (1, 84, 10),
    }
    assert {op.name: (op.m, op.k, op.n) for op in trace} == hand
    macs = 784 * 25 * 6 + 100 * 150 * 16 + 400 * 120 + 120 * 84 + 84 * 10
    assert macs == 416_520
    assert trace.macs == macs and trace.flops == 2 * macs
    assert trace.weights == 25 * 6 + 150 * 16 + 400 * 120 + 120 * 84 + 84 * 10
    # ReLU zeros show up as input density of the next layer
    assert trace.ops[1].input_density < 1.0


def test_vit_op_trace_matches_hand_count():
    trace = tiny_vit(np.random.default_rng(0), patch=7, dim=64, depth=4, heads=4, mlp_dim=128).op_trace(images(2))
    t, d, dh, h, f = 17, 64, 16, 4, 128  # 16 patches + CLS
    per_block = t * d * 3 * d + h * t * dh * t + h * t * t * dh + t * d * d + t * d * f + t * f * d
    hand = 16 * 49 * 64 + 4 * per_block + 64 * 10
    assert hand == 2_427_008
    assert trace.macs == hand and trace.flops == 2 * hand
    qk = [op for op in trace if op.name.endswith(".qk")]
    assert len(qk) == 4 and all(not op.has_weights and op.count == 4 and op.weights == 0 for op in qk)


def test_weight_mask_is_non_destructive_and_counted():
    model = lenet5(np.random.default_rng(0))
    layer = model.weight_layer("fc1.W")
    before = layer.params["W"].copy()
    mask = (np.random.default_rng(1).random(before.shape) < 0.1).astype(np.float32)
    layer.weight_mask = mask
    trace = model.op_trace(images(2))
    assert np.isclose(next(op for op in trace if op.name == "fc1").weight_density, mask.mean())
    np.testing.assert_array_equal(layer.params["W"], before)
    x = images(3)
    masked = predict(model, x)
    layer.params["W"] = before * mask
    layer.weight_mask = None
    np.testing.assert_allclose(predict(model, x), masked, rtol=1e-5, atol=1e-6)


def test_compact_channels_computes_the_same_function():
    model = lenet5(np.random.default_rng(0), batchnorm=True)
    x = images(5)
    fit(model, (x, np.arange(5) % 10), None, TrainConfig(epochs=1, batch_size=5), seed=0)  # non-trivial BN stats
    model.set_channel_mask("conv1", np.array([1, 0, 1, 1, 0, 1], np.float32))
    model.set_channel_mask("conv2", (np.arange(16) % 3 != 0).astype(np.float32))
    model.set_channel_mask("fc1", (np.arange(120) < 60).astype(np.float32))
    small = compact_channels(model)
    np.testing.assert_allclose(predict(small, x), predict(model, x), rtol=1e-4, atol=1e-5)
    widths = {op.name: (op.k, op.n) for op in small.op_trace(x)}
    assert widths["conv1"] == (25, 4) and widths["conv2"] == (100, 10) and widths["fc1"] == (250, 60)


def test_recalibrate_batchnorm_gives_population_statistics():
    model = mlp([784, 16, 10], np.random.default_rng(0), batchnorm=True)
    x = images(40).reshape(40, -1)
    assert recalibrate_batchnorm(model, x, batch_size=7) == 1
    bn = next(l for l in model.layers() if isinstance(l, BatchNorm))
    pre = x @ model.layer("fc1").params["W"] + model.layer("fc1").params["b"]
    np.testing.assert_allclose(bn.running_mean, pre.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.running_var, pre.var(0), rtol=1e-3, atol=1e-5)


def test_token_policy_equals_dropping_tokens():
    model = tiny_vit(np.random.default_rng(0), depth=3)
    x = images(1)
    drop = [3, 5, 6, 10, 11]

    def policy(block, attn, keep):
        assert attn.shape == (1, 4, 17, 17)
        new = keep.copy()
        if block == 0:
            new[:, drop] = 0
        return new

    model.token_policy = policy
    masked = predict(model, x)
    assert np.allclose(model.last_token_keep, [1.0, 12 / 17, 12 / 17])
    # the same computation with the tokens physically removed after block 0
    model.token_policy = None
    rt = Runtime()
    tok = model.patch_embed.forward(model.patches(x), rt)
    h = np.concatenate([model.embed.params["cls"], tok], axis=1) + model.embed.params["pos"]
    h = model.blocks[0].forward(h, rt)
    h = h[:, [i for i in range(17) if i not in drop]]
    for block in model.blocks[1:]:
        h = block.forward(h, rt)
    logits = model.head.forward(model.ln_f.forward(h[:, :1], rt), rt)[:, 0]
    np.testing.assert_allclose(masked, logits, rtol=1e-4, atol=1e-5)


def test_head_mask_removes_the_heads_work():
    model = tiny_vit(np.random.default_rng(0), depth=2, heads=4)
    x = images(2)
    base = predict(model, x)
    model.set_head_mask(0, np.array([1, 0, 1, 0]))
    trace = model.op_trace(x)
    assert next(op for op in trace if op.name == "blocks.0.attn.qk").count == 2
    assert next(op for op in trace if op.name == "blocks.1.attn.qk").count == 4
    assert np.isclose(next(op for op in trace if op.name == "blocks.0.attn.qkv").weight_density, 0.5)
    assert not np.allclose(predict(model, x), base)


def test_training_is_deterministic_and_learns():
    x = images(64, seed=3).reshape(64, -1)
    y = (x[:, :392].sum(1) > x[:, 392:].sum(1)).astype(np.int64)
    runs = []
    for _ in range(2):
        model = mlp([784, 16, 2], np.random.default_rng(0))
        hist = fit(model, (x, y), (x, y), TrainConfig(epochs=8, batch_size=16, lr=0.05), seed=5)
        runs.append((model.state_dict(), hist))
    for k in runs[0][0]:
        np.testing.assert_array_equal(runs[0][0][k], runs[1][0][k])
    assert runs[0][1][-1]["loss"] < runs[0][1][0]["loss"]


def test_grad_hook_and_masks_during_training():
    x = images(32, seed=4)
    y = np.arange(32) % 10
    model = lenet5(np.random.default_rng(0))
    mask = (np.random.default_rng(2).random((400, 120)) < 0.2).astype(np.float32)
    model.weight_layer("fc1.W").weight_mask = mask
    seen = set()

    def hook(name, w):
        seen.add(name)
        return 1e-3 * w

    before = model.weights()["fc1.W"].copy()
    fit(model, (x, y), None, TrainConfig(epochs=1, batch_size=16), seed=0, grad_hook=hook)
    assert seen == {"conv1.W", "conv2.W", "fc1.W", "fc2.W", "fc3.W"}
    after = model.weights()["fc1.W"]
    # masked-out weights were not touched, live ones were trained
    np.testing.assert_array_equal(after[mask == 0], before[mask == 0])
    assert not np.array_equal(after[mask == 1], before[mask == 1])
