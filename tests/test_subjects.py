"""Subject families (harness.subjects): the kit over each toy workload, and what each promises."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from harness.api import IncompatibleError, RunContext
from harness.numerics import EXACT, GemmCall
from harness.specs import CAPABILITIES
from harness.subjects import (
    FAMILIES,
    SUBJECT_CAPABILITIES,
    DecoderDims,
    capability,
    families_of,
    missing_members,
    protocol_for,
    psnr,
)
from harness.testing import check_subject, check_workload_object
from harness.testing.toy_workloads import TOY_WORKLOADS, forward_kinematics, upsample2


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``built(family, seed=0) -> (workload, subject, ctx)``, each toy built once per
    module; tests change only copies of a subject."""
    cache: dict = {}

    def get(family: str, seed: int = 0):
        if (family, seed) not in cache:
            workload = TOY_WORKLOADS[family]()
            ctx = RunContext(seed, tmp_path_factory.mktemp("cache"))
            cache[family, seed] = (workload, workload.build(ctx), ctx)
        return cache[family, seed]

    return get


class Recording:
    """A backend that computes exactly and records each call's context."""

    name = "recording"

    def __init__(self):
        self.calls: list[GemmCall] = []

    def matmul(self, a, b, call):
        self.calls.append(call)
        return EXACT.matmul(a, b, call)


# -- the registry -----------------------------------------------------------------------------

def test_every_family_has_the_capability_name_specs_declare():
    declared = {name for name in CAPABILITIES if name.startswith("subject:")}
    assert set(SUBJECT_CAPABILITIES) == declared
    assert {capability(f) for f in FAMILIES} == declared
    assert protocol_for("subject:pixel") is protocol_for("pixel") is FAMILIES["pixel"]


def test_an_unknown_family_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid: model, gemms, pixel, kernel, serving, points"):
        protocol_for("voxels")


def test_the_kit_names_what_a_subject_lacks():
    class HalfPixel:
        scale = 2

        def data(self, split):
            return None

    assert "feature_maps" in missing_members(HalfPixel(), "pixel")
    with pytest.raises(AssertionError, match="lacks.*feature_maps.*PixelSubject"):
        check_subject("pixel", HalfPixel())


# -- the kit over each toy ----------------------------------------------------------------------

@pytest.mark.parametrize("family", sorted(TOY_WORKLOADS))
def test_toy_workload_passes_the_kit(family):
    subject = check_workload_object(TOY_WORKLOADS[family]())
    assert families_of(subject) == (family,)


@pytest.mark.parametrize("family", sorted(TOY_WORKLOADS))
def test_every_gemm_reaches_the_backend_with_its_context(family, built):
    workload, subject, ctx = built(family)
    backend = Recording()
    assert workload.evaluate(subject, backend, ctx) == workload.evaluate(subject, EXACT, ctx)
    called = {c.op for c in backend.calls}
    traced = {op.name for op in workload.op_trace(subject) if op.kind == "gemm"}
    assert traced <= called, f"GEMMs in the trace that never reached the backend: {traced - called}"
    assert all(c.seed is not None for c in backend.calls), "the workload must bind the backend to the run seed"
    assert all(c.weight_stationary for c in backend.calls if c.op in traced)


@pytest.mark.parametrize("family", sorted(TOY_WORKLOADS))
def test_a_backend_the_runner_bound_keeps_its_seed(family, built):
    from harness.numerics import bind, derive_seed

    workload, subject, ctx = built(family)
    backend = Recording()
    workload.evaluate(subject, bind(backend, seed=123), ctx)
    assert backend.calls and all(c.seed == derive_seed(123, c.op, c.role) for c in backend.calls)


@pytest.mark.parametrize("family", sorted(TOY_WORKLOADS))
def test_the_seed_decides_the_subject(family, built):
    workload, subject, ctx = built(family)
    _, other, other_ctx = built(family, seed=1)
    if family == "serving":
        assert not np.array_equal(subject.context_lengths, other.context_lengths)
    else:
        assert workload.evaluate(subject, EXACT, ctx) != workload.evaluate(other, EXACT, other_ctx)


@pytest.mark.parametrize("family", sorted(TOY_WORKLOADS))
def test_a_toy_refuses_a_subject_of_another_family(family, built):
    workload, _, ctx = built(family)
    other = next(f for f in sorted(TOY_WORKLOADS) if f != family)
    with pytest.raises(IncompatibleError, match=f"subject:{family}"):
        workload.evaluate(built(other)[1], EXACT, ctx)


def _declared_subjects():
    from harness.host import get_host

    return [(spec.name, cap) for spec in (i.spec for i in get_host().infos() if i.kind == "workload")
            for cap in sorted(spec.provides) if cap in SUBJECT_CAPABILITIES]


@pytest.mark.parametrize("workload, cap", _declared_subjects())
def test_installed_workloads_build_the_subject_they_declare(workload, cap, tmp_path):
    from harness.data import MissingDataError
    from harness.host import get_host
    from harness.testing import smoke_config

    spec = get_host().spec("workload", workload)
    try:
        subject = spec.factory(smoke_config(spec)).build(RunContext(0, tmp_path))
    except MissingDataError as exc:
        pytest.skip(f"{workload} needs optional data: {exc}")
    check_subject(cap, subject)


def test_builtins_declare_their_subjects():
    declared = dict(_declared_subjects())
    assert declared["dot_products"] == "subject:gemms" and declared["digits_mlp"] == "subject:model"


# -- pixel ----------------------------------------------------------------------------------------

def test_psnr_is_the_textbook_formula():
    ref = np.zeros((4, 4, 3))
    assert psnr(ref + 0.1, ref) == pytest.approx(20.0)
    assert psnr(ref, ref) == math.inf


def test_bilinear_upsampling_by_hand():
    x = np.array([1.0, 3.0]).reshape(1, 1, 2, 1)
    row = upsample2(x)[0, 0, :, 0]
    assert np.allclose(row, [1.0, 1.5, 2.5, 3.0])
    assert upsample2(x).shape == (1, 2, 4, 1)


def test_pixel_psnr_equals_a_hand_computed_psnr(built):
    _, subject, _ = built("pixel")
    lr, hr = subject.data("test")
    out = np.clip(subject.forward(lr, EXACT), 0, 1).astype(np.float64)
    by_hand = np.mean([10 * np.log10(1.0 / np.mean((o - t) ** 2)) for o, t in zip(out, hr.astype(np.float64))])
    assert subject.evaluate(EXACT)["psnr"] == pytest.approx(by_hand, rel=1e-12)


def test_pixel_masks_act_in_the_forward_pass(built):
    _, subject, _ = built("pixel")
    pruned = subject.copy()
    pruned.set_mask("conv3.W", np.zeros_like(pruned.weights()["conv3.W"]))
    metrics = pruned.evaluate(EXACT)
    # With the last layer masked away the net is exactly its bilinear skip path.
    assert metrics["psnr"] == pytest.approx(metrics["psnr_bilinear"], abs=1e-9)
    assert subject.evaluate(EXACT)["psnr"] != metrics["psnr"]


def test_pixel_feature_policy_reaches_feature_maps_and_the_trace(built):
    _, subject, _ = built("pixel")
    sparse = subject.copy()
    sparse.feature_policy = lambda layer, f: np.where(np.arange(f.shape[-1]) < f.shape[-1] // 2, f, 0) if layer == "conv1" else f
    x = sparse.data("test")[0][:1]
    assert not np.any(sparse.feature_maps(x)["conv1"][..., 8:])
    dense_in = subject.op_trace().op("conv2").input_density
    sparse_in = sparse.op_trace().op("conv2").input_density
    assert sparse_in < dense_in and sparse_in <= 0.5


def test_pixel_feature_hook_trains_sparser_features(built):
    _, subject, _ = built("pixel")
    plain, regularized = subject.copy(), subject.copy()
    plain.train(4)
    seen = []

    def l1(layer, f):
        seen.append((layer, f.ndim))
        return 1e-3 * np.sign(f)

    regularized.train(4, feature_hook=l1)
    assert {("conv1", 4), ("conv2", 4)} <= set(seen)
    assert regularized.evaluate(EXACT)["feature_density"] < plain.evaluate(EXACT)["feature_density"]


# -- kernel --------------------------------------------------------------------------------------

def test_inversek2j_inverts_the_arm(built):
    _, subject, _ = built("kernel")
    theta = np.random.default_rng(3).uniform(0, math.pi / 2, (200, 2))
    assert np.allclose(subject.exact(forward_kinematics(theta)), theta, atol=1e-9)


def test_kernel_error_is_zero_for_the_exact_function_and_over_the_bound_when_perturbed(built):
    _, subject, _ = built("kernel")
    assert subject.evaluate(approx=subject.exact) == {"error": 0.0, "within_bound": 1.0, "invocation": 1.0, "out_of_bound": 0.0}
    off = 2 * subject.bound * (math.pi / 2)  # twice the bound, in radians
    perturbed = subject.evaluate(approx=lambda x: subject.exact(x) + off)
    assert perturbed["error"] == pytest.approx(2 * subject.bound)
    assert perturbed["within_bound"] == 0.0 and perturbed["out_of_bound"] == 1.0


def test_kernel_samples_not_invoked_run_exactly(built):
    _, subject, _ = built("kernel")
    x, _ = subject.data("test")
    half = np.arange(len(x)) % 2 == 0
    result = subject.evaluate(approx=lambda x: (subject.exact(x) + 1.0, half))
    assert result["invocation"] == pytest.approx(half.mean())
    assert result["out_of_bound"] == pytest.approx(half.mean()) and result["within_bound"] == pytest.approx(1 - half.mean())


def test_kernel_baseline_approximator_is_a_real_approximation(built):
    workload, subject, ctx = built("kernel")
    metrics = workload.evaluate(subject, EXACT, ctx)
    assert 0 < metrics["error"] < 2 * subject.bound and metrics["within_bound"] > 0.5
    assert [op.name for op in subject.op_trace() if op.kind == "gemm"] == ["fc1", "fc2"]


# -- serving ---------------------------------------------------------------------------------------

def test_serving_kv_bytes_follow_the_hand_formula(built):
    _, subject, _ = built("serving")
    d = subject.model
    trace = subject.op_trace()
    context = int(subject.context_lengths.sum())
    by_hand = 2 * d.layers * d.kv_heads * d.head_dim * context * 2  # K and V, fp16
    assert sum(op.kv_cache_bytes for op in trace if op.kind == "decode_attention") == by_hand
    assert subject.kv_cache_bytes() == by_hand
    for r, length in enumerate(subject.context_lengths):
        op = trace.op(f"layer1.attn.r{r}")
        assert op.kv_cache_bytes == 2 * d.kv_heads * d.head_dim * int(length) * 2
        assert op.macs == 2 * d.heads * d.head_dim * int(length)


def test_serving_gemms_and_weight_bytes_by_hand(built):
    _, subject, _ = built("serving")
    d, batch = subject.model, len(subject.context_lengths)
    trace = subject.op_trace()
    qkv = trace.op("layer0.qkv")
    assert (qkv.m, qkv.k, qkv.n) == (batch, d.d_model, (d.heads + 2 * d.kv_heads) * d.head_dim)
    per_layer = d.d_model * (d.heads + 2 * d.kv_heads) * d.head_dim + d.heads * d.head_dim * d.d_model + 2 * d.d_model * d.ffn
    assert subject.weight_bytes() == (d.layers * per_layer + d.vocab * d.d_model) * 2
    assert sum(op.weight_bytes for op in trace) == subject.weight_bytes()


def test_serving_kv_precision_changes_the_trace(built):
    _, subject, _ = built("serving")
    low = dataclasses.replace(subject, model=dataclasses.replace(subject.model, kv_bits=4))
    assert low.kv_cache_bytes() == subject.kv_cache_bytes() / 4
    assert sum(op.kv_cache_bytes for op in low.op_trace()) == low.kv_cache_bytes()


def test_serving_numerics_see_a_noisy_backend(built):
    workload, subject, ctx = built("serving")

    class Noisy:
        name = "noisy"

        def matmul(self, a, b, call):
            out = EXACT.matmul(a, b, call)
            return out + np.float32(1e-2) * np.abs(out).mean() * call.rng().standard_normal(out.shape).astype(np.float32)

    exact = workload.evaluate(subject, EXACT, ctx)["numerics/nmse"]
    noisy = workload.evaluate(subject, Noisy(), ctx)["numerics/nmse"]
    assert exact < 1e-10 < noisy


def test_decoder_dims_reproduce_the_l3_dimm_pim_capacity_figure():
    # "a 7B model on an 80 GB A100 fits ~62 requests at 2K tokens" (l3_dimm_pim's motivation)
    llama7b = DecoderDims(layers=32, d_model=4096, heads=32, kv_heads=32, ffn=11008, vocab=32000, gated_ffn=True)
    assert llama7b.kv_bytes_per_token == 512 * 1024
    assert int((80e9 - llama7b.weight_bytes) // (2048 * llama7b.kv_bytes_per_token)) == 62


def test_decoder_dims_default_head_dim_and_reject_bad_gqa():
    assert DecoderDims(layers=1, d_model=64, heads=8, kv_heads=2, ffn=128).head_dim == 8
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        DecoderDims(layers=1, d_model=64, heads=6, kv_heads=4, ffn=128)


# -- points ------------------------------------------------------------------------------------------

def test_point_neighbours_agree_with_brute_force(built):
    _, subject, _ = built("points")
    points = subject.data("test")[0][:3]
    k = 8
    idx = subject.neighbors(points, k)
    for cloud, got in zip(points.astype(np.float64), idx):
        dist = np.linalg.norm(cloud[:, None, :] - cloud[None, :, :], axis=-1)
        expected = np.sort(dist, axis=1)[:, :k]
        assert np.allclose(np.take_along_axis(dist, got, axis=1), expected, atol=1e-6)
        assert np.array_equal(got[:, 0], np.arange(len(cloud)))


def test_point_model_ignores_point_order_and_beats_chance(built):
    workload, subject, ctx = built("points")
    points, features, _ = subject.data("test")
    perm = np.random.default_rng(0).permutation(points.shape[1])
    assert np.allclose(subject.logits(points, features), subject.logits(points[:, perm], features[:, perm]), atol=1e-5)
    assert workload.evaluate(subject, EXACT, ctx)["accuracy"] > 0.65


def test_point_trace_counts_every_edge(built):
    _, subject, _ = built("points")
    cfg = subject.config
    edge = subject.op_trace().op("edge")
    assert (edge.m, edge.k, edge.n) == (cfg.points * cfg.k, 6, cfg.edge_features)
    assert subject.op_trace().has_weight_values()


# -- integer codes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("family, config", [
    ("pixel", "ToyPixelConfig"), ("kernel", "ToyKernelConfig"), ("points", "ToyPointConfig"),
])
def test_quant_bits_send_integer_codes_and_reach_the_trace(family, config, tmp_path):
    from harness.testing import toy_workloads

    workload = TOY_WORKLOADS[family](getattr(toy_workloads, config)(quant_bits=8))
    ctx = RunContext(0, tmp_path)
    subject = workload.build(ctx)
    seen = []

    class Integer:
        name = "integer"

        def matmul(self, a, b, call):
            seen.append((a.dtype.kind, b.dtype.kind, call.a_bits, call.b_bits))
            return EXACT.matmul(a, b, call)

    metrics = workload.evaluate(subject, Integer(), ctx)
    assert metrics == workload.evaluate(subject, EXACT, ctx)
    assert seen and set(seen) == {("i", "i", 8, 8)}
    assert {op.weight_bits for op in workload.op_trace(subject) if op.kind == "gemm"} == {8}
