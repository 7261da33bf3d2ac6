"""Training-time GEMMs (issue 9, item 3): a technique trains through its own GEMMs.

* a pass-through training GEMM gives bit-identical weights to the default path;
* every op arrives in every role with the documented operand shapes and seeds;
* routed gradients equal the default ones, and a stochastic GEMM (half the rows
  of every product skipped) gets gradients that match finite differences of the
  function it computes;
* a technique that trains through such a GEMM passes the conformance kit, and
  :func:`harness.testing.check_training_gemm` catches broken GEMMs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from harness import hookimpl
from harness.host import Host
from harness.nn import (
    Conv2d,
    Dense,
    ModelSubject,
    MultiHeadSelfAttention,
    Runtime,
    TrainConfig,
    fit,
    lenet5,
    mlp,
    recalibrate_batchnorm,
    tiny_vit,
)
from harness.nn.train_gemm import BoundTrainGemm, ExactTrainGemm
from harness.specs import TechniqueSpec
from harness.testing import check_plugin, check_training_gemm
from test_nn_layers import directional_check

ROLES = ("forward", "grad_input", "grad_weight")


class PassThrough:
    """The plainest training GEMM: ``a @ b``."""

    name = "pass_through"

    def matmul(self, a, b, call):
        return a @ b


class Recording:
    """Pass-through that records every call's context and operand shapes."""

    name = "recording"

    def __init__(self):
        self.calls = []

    def matmul(self, a, b, call):
        self.calls.append((call, a.shape, b.shape))
        return a @ b


class HalfRows:
    """Skips a random half of the rows of every product, with consistent gradients.

    ``Y = D X W`` with ``D`` a 0/1 row mask drawn from ``call.seed`` (the same seed
    in all three roles of one op and step): forward computes ``X[kept] @ W``,
    grad_input ``dY[kept] @ W.T``, grad_weight ``X.T[:, kept] @ dY[kept]``.
    """

    name = "half_rows"
    calls = 0

    def matmul(self, a, b, call):
        type(self).calls += 1
        rows = a.shape[1] if call.role == "grad_weight" else a.shape[0]
        kept = np.sort(call.rng().permutation(rows)[: (rows + 1) // 2])
        if call.role == "grad_weight":
            return a[:, kept] @ b[kept]
        out = np.zeros((a.shape[0], b.shape[1]), np.float32)
        out[kept] = a[kept] @ b
        return out


def data(n=48, shape=(28, 28, 1), classes=10, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype(np.float32), rng.integers(0, classes, n)


MODELS = {
    "lenet5_bn": (lambda: lenet5(np.random.default_rng(0), batchnorm=True, widths=(4, 8, 16, 12)), (28, 28, 1)),
    "mlp": (lambda: mlp([12, 16, 10], np.random.default_rng(0)), (12,)),
    "tiny_vit": (lambda: tiny_vit(np.random.default_rng(0), dim=16, depth=1, heads=2, mlp_dim=16), (28, 28, 1)),
}


@pytest.mark.parametrize("model", list(MODELS))
def test_pass_through_gemm_trains_bit_identical_weights(model):
    make, shape = MODELS[model]
    x, y = data(shape=shape)
    cfg = TrainConfig(epochs=2, batch_size=16)
    default, routed = make(), make()
    fit(default, (x, y), None, cfg, seed=3)
    fit(routed, (x, y), None, cfg, seed=3, gemm=PassThrough())
    a, b = default.state_dict(), routed.state_dict()
    assert a.keys() == b.keys()
    assert [k for k in a if not np.array_equal(a[k], b[k])] == []
    assert not np.array_equal(a["fc1.W" if model != "tiny_vit" else "head.W"], make().state_dict()[
        "fc1.W" if model != "tiny_vit" else "head.W"]), "training did not move the weights"


def test_every_op_and_role_arrives_with_its_shapes():
    model = lenet5(np.random.default_rng(0), widths=(4, 8, 16, 12))
    x, y = data(n=32)
    gemm = Recording()
    fit(model, (x, y), None, TrainConfig(epochs=1, batch_size=16), seed=0, gemm=gemm)
    # (M, K, N) of each layer's GEMM for a batch of 16: conv as im2col, rows = output pixels
    mkn = {"conv1": (16 * 28 * 28, 25, 4), "conv2": (16 * 10 * 10, 100, 8), "fc1": (16, 200, 16),
           "fc2": (16, 16, 12), "fc3": (16, 12, 10)}
    expected = {
        "forward": lambda m, k, n: ((m, k), (k, n), True),
        "grad_input": lambda m, k, n: ((m, n), (n, k), True),
        "grad_weight": lambda m, k, n: ((k, m), (m, n), False),
    }
    seen = {}
    for call, ashape, bshape in gemm.calls:
        assert call.op in mkn and call.role in ROLES and call.a_bits == call.b_bits == 0
        assert (ashape, bshape, call.weight_stationary) == expected[call.role](*mkn[call.op]), call
        seen.setdefault((call.op, call.role), []).append(call.seed)
    assert set(seen) == {(op, role) for op in mkn for role in ROLES}
    assert len(gemm.calls) == 2 * 15  # two steps, five layers, three roles
    for op in mkn:
        forward = seen[(op, "forward")]
        assert len(set(forward)) == 2, "each step draws a new seed"
        assert seen[(op, "grad_input")] == seen[(op, "grad_weight")] == forward, "roles of one step share it"
    assert len({seen[(op, "forward")][0] for op in mkn}) == len(mkn), "each op has its own seed"


def test_attention_products_arrive_per_sample_and_head():
    model = tiny_vit(np.random.default_rng(0), dim=16, depth=1, heads=2, mlp_dim=16)
    x, y = data(n=4)
    gemm = Recording()
    fit(model, (x, y), None, TrainConfig(epochs=1, batch_size=4), seed=0, gemm=gemm)
    t, dh = model.tokens, 8
    shapes = {
        ("blocks.0.attn.qk", "forward"): ((t, dh), (dh, t)),
        ("blocks.0.attn.qk", "grad_input"): ((t, t), (t, dh)),
        ("blocks.0.attn.qk", "grad_weight"): ((dh, t), (t, t)),
        ("blocks.0.attn.av", "forward"): ((t, t), (t, dh)),
        ("blocks.0.attn.av", "grad_input"): ((t, dh), (dh, t)),
        ("blocks.0.attn.av", "grad_weight"): ((t, t), (t, dh)),
    }
    counts = {}
    for call, ashape, bshape in gemm.calls:
        if (call.op, call.role) in shapes:
            assert (ashape, bshape) == shapes[(call.op, call.role)] and not call.weight_stationary
            counts.setdefault((call.op, call.role), set()).add(call.seed)
    assert {k: len(v) for k, v in counts.items()} == {k: 4 * 2 for k in shapes}, "one seed per sample and head"
    weight_ops = {c.op for c, _, _ in gemm.calls if c.weight_stationary}
    assert weight_ops == {"patch_embed", "blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.fc1",
                          "blocks.0.fc2", "head"}


def _layer_grads(layer, x, dy, gemm):
    layer.forward(x, Runtime(training=True, train_gemm=gemm))
    dx = layer.backward(dy)
    subs = [layer, *layer.sublayers()]
    return dx, {(s.name, k): g.copy() for s in subs for k, g in s.grads.items()}


LAYERS = {
    "dense": (lambda: Dense("d", 6, 5, np.random.default_rng(0)), (4, 3, 6)),
    "conv": (lambda: Conv2d("c", 3, 4, 3, np.random.default_rng(0), stride=2, padding=1), (2, 7, 7, 3)),
    "attention": (lambda: MultiHeadSelfAttention("a", 8, 2, np.random.default_rng(0)), (2, 5, 8)),
}


@pytest.mark.parametrize("kind", list(LAYERS))
def test_routed_backward_equals_default(kind):
    make, shape = LAYERS[kind]
    rng = np.random.default_rng(5)
    x = rng.normal(size=shape).astype(np.float32)
    layer = make()
    dy = rng.normal(size=layer.forward(x, Runtime(training=True)).shape).astype(np.float32)
    dx0, g0 = _layer_grads(make(), x, dy, None)
    dx1, g1 = _layer_grads(make(), x, dy, PassThrough())
    if kind == "attention":  # d(K.T) = Q.T @ dS per slice instead of dS.T @ Q batched: same sums, any order
        np.testing.assert_allclose(dx1, dx0, rtol=1e-5, atol=1e-6)
        for k in g0:
            np.testing.assert_allclose(g1[k], g0[k], rtol=1e-5, atol=1e-6)
    else:
        assert np.array_equal(dx1, dx0)
        assert all(np.array_equal(g1[k], g0[k]) for k in g0)


@pytest.mark.parametrize("kind", list(LAYERS))
def test_stochastic_gemm_gradients_match_finite_differences(kind):
    """HalfRows computes a different function than exact GEMMs; its routed backward
    must be that function's gradient (a fresh runtime redraws the same rows)."""
    make, shape = LAYERS[kind]
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    layer = make()
    assert directional_check(layer, x, {"train_gemm": HalfRows()}) == (4 if kind == "attention" else 2)
    exact = layer.forward(x, Runtime(training=True))
    halved = layer.forward(x, Runtime(training=True, train_gemm=HalfRows()))
    assert not np.allclose(exact, halved), "the test GEMM must change the function, or this test proves nothing"


def test_check_training_gemm_accepts_good_gemms():
    check_training_gemm(PassThrough())
    check_training_gemm(ExactTrainGemm())
    check_training_gemm(HalfRows())


class WrongShape(PassThrough):
    def matmul(self, a, b, call):
        return (a @ b)[: max(1, a.shape[0] // 2)]


class InPlace(PassThrough):
    def matmul(self, a, b, call):
        out = a @ b
        np.round(a, 1, out=a) if a.flags.writeable else None
        return out


class NotFinite(PassThrough):
    def matmul(self, a, b, call):
        out = a @ b
        if call.role == "grad_weight":
            out[0, 0] = np.nan
        return out


class Unseeded(PassThrough):
    def matmul(self, a, b, call):
        return a @ b * np.float32(1 + 0.01 * np.random.default_rng().random())


@pytest.mark.parametrize("gemm, message", [
    (WrongShape(), "returned shape"),
    (InPlace(), "modified its operands"),
    (NotFinite(), "non-finite"),
    (Unseeded(), "same seed gave different"),
])
def test_check_training_gemm_catches_broken_gemms(gemm, message):
    with pytest.raises(AssertionError, match=message):
        check_training_gemm(gemm)


def test_unseeded_gemm_passes_when_not_required_deterministic():
    check_training_gemm(Unseeded(), deterministic=False)


def test_two_argument_gemm_is_refused_with_what_to_change():
    class V1:
        def matmul(self, a, b):
            return a @ b

    with pytest.raises(TypeError, match=r"matmul\(self, a, b, call\)"):
        Runtime(training=True, train_gemm=V1())
    with pytest.raises(ValueError, match="train_gemm applies to training"):
        Runtime(train_gemm=PassThrough())


def test_wrong_shape_fails_at_the_op_by_name():
    with pytest.raises(ValueError, match="op 'fc1' role 'forward'"):
        fit(mlp([12, 8, 3], np.random.default_rng(0)), data(n=8, shape=(12,), classes=3), None,
            TrainConfig(epochs=1, batch_size=8), seed=0, gemm=WrongShape())


def test_batchnorm_calibration_and_grad_semantics_with_a_gemm():
    model = mlp([12, 16, 10], np.random.default_rng(0), batchnorm=True)
    x, y = data(shape=(12,))
    rt = Runtime(training=True, bn_calibrate=True, train_gemm=PassThrough())
    assert not rt.grad and isinstance(rt.train_gemm, BoundTrainGemm)
    model.forward(x, rt)
    bn = model.layer("bn1")
    assert bn._calib is not None and bn._calib[2] == len(x)
    bn._calib = None
    assert recalibrate_batchnorm(model, x) == 1
    fit(model, (x, y), None, TrainConfig(epochs=1, batch_size=16), seed=0, gemm=HalfRows())
    assert np.all(np.isfinite(model.layer("bn1").running_var))


def test_subject_train_passes_the_gemm_and_is_reproducible():
    from harness.data import load_digits

    def subject():
        model = mlp([64, 32, 10], np.random.default_rng(0))
        return ModelSubject("digits_mlp", model, load_digits(0), TrainConfig(epochs=1, batch_size=64), seed=4)

    a, b, c = subject(), subject(), subject()
    before = HalfRows.calls
    a.train(1, gemm=HalfRows())
    assert HalfRows.calls > before
    b.train(1, gemm=HalfRows())
    c.train(1)
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(np.array_equal(sa[k], sb[k]) for k in sa)
    assert not np.array_equal(sa["fc1.W"], sc["fc1.W"]), "half the rows skipped must change training"


# -- a technique that trains through a training GEMM passes the conformance kit ------

@dataclass
class HalfRowsConfig:
    """Fine-tune epochs through the half-rows GEMM."""

    epochs: int = 1


class HalfRowsTechnique:
    def __init__(self, config: HalfRowsConfig):
        self.config = config

    def apply(self, subject, workload, ctx):
        subject.train(self.config.epochs, ctx=ctx, gemm=HalfRows(), prefix="technique/")
        return subject


class HalfRowsPlugin:
    @hookimpl
    def harness_techniques(self):
        yield TechniqueSpec(
            name="half_rows_test",
            summary="Test technique: fine-tunes with half the rows of every training GEMM skipped",
            config=HalfRowsConfig,
            factory=HalfRowsTechnique,
            smoke_workload="digits_mlp",
            needs={"subject:model", "training_gemms"},
        )


def test_technique_training_through_a_gemm_passes_the_conformance_kit():
    host = Host(extra=[("half_rows_test", HalfRowsPlugin(), "accel-harness-tests")])
    before = HalfRows.calls
    check_plugin("technique", "half_rows_test", host)
    assert HalfRows.calls > before, "the technique's fine-tuning did not reach the training GEMM"
