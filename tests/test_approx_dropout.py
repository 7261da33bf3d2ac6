"""Tests of the approx_dropout technique: patterns, pi search, compacted GEMMs, runs.

The compacted step is checked against the masked dense computation it replaces
(full GEMMs, hidden units multiplied by a 0/1-times-scale mask), its kernels
against their numpy references bit for bit, and the technique end to end on the
small digits MLP. The wide-MLP acceptance (speed-up >= 1.3x over Bernoulli at
p=0.5, and test accuracy within 0.5 points over 3 seeds, at the technique's
default 30 epochs for every method) is ``@pytest.mark.slow``::

    .venv/bin/pytest tests/test_approx_dropout.py -m slow     # ~3 min
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from harness.nn.models import lenet5, mlp
from harness.runner import run_experiment
from harness_plugins.approx_dropout import ApproxDropoutConfig, validate_config
from harness_plugins.approx_dropout.kernels import (
    gather_block,
    gather_block_reference,
    positions,
    sgd_block_step,
    sgd_block_step_reference,
)
from harness_plugins.approx_dropout.mlp import CompactMlp, PatternDraw, dense_layers, masked_dense_step
from harness_plugins.approx_dropout.patterns import (
    Pattern,
    binomial_pmf,
    count_distribution,
    keep_indices,
    search_pi,
)


def rng(seed=0):
    return np.random.default_rng(seed)


# ------------------------------------------------------------------ patterns


def test_row_pattern_keeps_every_dp_th_unit_from_the_offset():
    np.testing.assert_array_equal(keep_indices(10, 3, 1, 2), [2, 5, 8])
    np.testing.assert_array_equal(keep_indices(10, 4, 3, 1), [1, 2, 3, 5, 6, 7, 9])
    assert keep_indices(7, 1, 1, 0).size == 7


def test_tile_pattern_keeps_whole_contiguous_tiles():
    kept = keep_indices(100, 2, 1, 1, tile=32)  # tiles 1 and 3 (the last is partial)
    np.testing.assert_array_equal(kept, np.r_[32:64, 96:100])


@pytest.mark.parametrize("dp, k", [(2, 1), (3, 1), (5, 2), (7, 4)])
def test_every_unit_is_kept_with_probability_k_over_dp(dp, k):
    n = 2 * 3 * 5 * 7
    hits = np.zeros(n)
    for offset in range(dp):
        hits[keep_indices(n, dp, k, offset)] += 1
    np.testing.assert_allclose(hits / dp, k / dp)
    dist = count_distribution(Pattern(dp, k), 16)
    assert dist.sum() == pytest.approx(1.0)
    assert dist @ np.arange(17) / 16 == pytest.approx(1 - k / dp, abs=1 / 16)


@pytest.mark.parametrize("p", [0.3, 0.5, 0.7])
def test_searched_pi_has_rate_p_and_matches_the_binomial(p):
    res = search_pi(p, max_period=8, window=16, steps=3000)
    assert res["drop_rate"] == pytest.approx(p, abs=0.005)
    assert abs(res["pi"].sum() - 1) < 1e-9
    # the stated threshold (ApproxDropoutConfig.kl_threshold), and far below one fixed pattern
    assert res["kl"] < ApproxDropoutConfig().kl_threshold
    assert res["kl"] < 0.2 * res["kl_single_pattern"]
    np.testing.assert_allclose(res["target"], binomial_pmf(16, p))


def test_a_pattern_draw_never_drops_a_whole_narrow_layer():
    # 32 units in 32-unit tiles are one group: most (dp, k, offset) keep nothing and are redrawn
    draw = PatternDraw([Pattern(8, 1), Pattern(7, 3)], np.array([0.5, 1.0]), 32, rng(3))
    assert all(draw(32).size == 32 for _ in range(200))


# ------------------------------------------------------------------ kernels


@pytest.mark.parametrize("rows, cols", [(None, "c"), ("r", "c"), ("r", None), (None, None)])
def test_gather_block_is_bit_identical_to_numpy(rows, cols):
    w = rng().standard_normal((50, 70)).astype(np.float32)
    r = keep_indices(50, 3, 2, 1) if rows else None
    c = keep_indices(70, 5, 2, 4) if cols else None
    np.testing.assert_array_equal(gather_block(w, r, c), gather_block_reference(w, r, c))


@pytest.mark.parametrize("decay", [0.0, 5e-4])
def test_sgd_block_step_is_bit_identical_to_the_dense_step(decay):
    g = rng(1)
    p = g.standard_normal((40, 30)).astype(np.float32)
    v = g.standard_normal((40, 30)).astype(np.float32)
    r, c = keep_indices(40, 3, 1, 0), keep_indices(30, 2, 1, 1, tile=4)
    gc = g.standard_normal((r.size, c.size)).astype(np.float32)
    p2, v2 = p.copy(), v.copy()
    sgd_block_step(p, gc, v, positions(40, r), positions(30, c), 0.03, 0.9, decay)
    sgd_block_step_reference(p2, gc, v2, positions(40, r), positions(30, c), 0.03, 0.9, decay)
    np.testing.assert_array_equal(p, p2)
    np.testing.assert_array_equal(v, v2)


# ------------------------------------------------------------------ compacted vs masked dense


def _unit_masks(trainer, keeps):
    out = []
    for l, k in enumerate(keeps):
        n = trainer.widths[l]
        m = np.ones(n, np.float32) if k is None else np.zeros(n, np.float32)
        if k is not None:
            m[k] = n / k.size
        out.append(m)
    return out


@pytest.mark.parametrize("tile", [1, 8])
def test_compacted_gemms_equal_the_masked_dense_computation(tile):
    trainer = CompactMlp(mlp([64, 96, 80, 10], rng(2)), 0.9, 5e-4)
    x = rng(3).random((16, 64), dtype=np.float32)
    y = rng(4).integers(0, 10, 16)
    keeps = [keep_indices(96, 3, 1, 2, tile), keep_indices(80, 5, 3, 1, tile)]
    loss, logits, grads, macs = trainer.forward_backward(x, y, keeps)
    loss2, logits2, dense = masked_dense_step(trainer.layers, x, y, _unit_masks(trainer, keeps))
    assert loss == pytest.approx(loss2, rel=1e-5)
    np.testing.assert_allclose(logits, logits2, rtol=1e-5, atol=1e-5)
    kin, kout = [None, *keeps], [*keeps, None]
    for l, layer in enumerate(trainer.layers):
        k_in, n_out = layer.params["W"].shape
        r = np.arange(k_in) if kin[l] is None else kin[l]
        c = np.arange(n_out) if kout[l] is None else kout[l]
        np.testing.assert_allclose(grads[l][0], dense[l][0][np.ix_(r, c)], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(grads[l][1][0], dense[l][1][c], rtol=1e-4, atol=1e-6)
        outside = dense[l][0].copy()
        outside[np.ix_(r, c)] = 0
        assert not outside.any()  # the skipped work really contributes nothing
    dense_macs = 16 * (64 * 96 * 2 + 96 * 80 * 3 + 80 * 10 * 3)
    assert macs < 0.6 * dense_macs


def test_a_compacted_training_step_equals_the_masked_dense_step():
    model = mlp([64, 48, 32, 10], rng(5))
    ref = [(l.params["W"].copy(), l.params["b"].copy()) for l in dense_layers(model)]
    trainer = CompactMlp(model, 0.9, 5e-4)
    x, y = rng(6).random((8, 64), dtype=np.float32), rng(7).integers(0, 10, 8)
    keeps = [keep_indices(48, 2, 1, 1), keep_indices(32, 4, 3, 2)]
    masks = _unit_masks(trainer, keeps)
    _, _, dense = masked_dense_step(trainer.layers, x, y, masks)
    trainer.step(x, y, 0.05, keeps)
    for (w, b), layer, (gw, gb) in zip(ref, trainer.layers, dense):
        vw = gw + np.float32(5e-4) * w  # first step: v = g
        np.testing.assert_allclose(layer.params["W"], w - np.float32(0.05) * vw, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer.params["b"], b - np.float32(0.05) * gb, rtol=1e-5, atol=1e-6)


def test_bernoulli_masks_go_through_the_same_step_as_their_dense_reference():
    trainer = CompactMlp(mlp([20, 30, 10], rng(8)), 0.9, 0.0)
    x, y = rng(9).random((12, 20), dtype=np.float32), rng(10).integers(0, 10, 12)
    mask = (rng(11).random((12, 30)) >= 0.5).astype(np.float32) * 2
    loss, logits, grads, _ = trainer.forward_backward(x, y, masks=[mask])
    loss2, logits2, dense = masked_dense_step(trainer.layers, x, y, [mask])
    np.testing.assert_allclose(logits, logits2, rtol=1e-5, atol=1e-6)
    for (gw, gb), (dw, db) in zip(grads, dense):
        np.testing.assert_allclose(gw, dw, rtol=1e-4, atol=1e-6)


def test_relabelling_hidden_units_keeps_the_function():
    model = mlp([20, 30, 25, 10], rng(12))
    trainer = CompactMlp(model, 0.9, 0.0)
    x = rng(13).random((5, 20), dtype=np.float32)
    before = masked_dense_step(trainer.layers, x, np.zeros(5, int), [1.0, 1.0])[1]
    w0 = model.parameters()["fc1.W"]
    trainer.permute_units(rng(14))
    assert model.parameters()["fc1.W"] is w0  # in place: the model's arrays stay live
    after = masked_dense_step(trainer.layers, x, np.zeros(5, int), [1.0, 1.0])[1]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)


def test_only_dense_relu_mlps_are_accepted():
    with pytest.raises(ValueError, match="Dense/ReLU MLPs"):
        dense_layers(lenet5(rng()))


def test_config_rejects_unknown_methods():
    with pytest.raises(ValueError, match="baselines"):
        validate_config(ApproxDropoutConfig(baselines="bernoulli,gaussian"))


# ------------------------------------------------------------------ runs


def _run(workload, wl, tech, seed=0):
    with tempfile.TemporaryDirectory() as tmp:
        return run_experiment({"workload": workload, "technique": "approx_dropout", "accelerator": "exact"},
                              {"workload": wl, "technique": tech}, seed=seed, cache_dir=tmp)


def test_run_on_digits_logs_speed_accuracy_and_pi():
    rec = _run("digits_mlp", {"epochs": 1, "hidden": "128,128"},
               {"epochs": 2, "baselines": "bernoulli,none", "search_steps": 500})
    assert rec.status == "FINISHED", rec.error
    m = rec.metrics
    for key in ("technique/row/accuracy", "technique/bernoulli/accuracy", "technique/none/accuracy",
                "perf/speedup_wall", "perf/speedup_cpu", "technique/speedup_modelled", "technique/macs_saved",
                "technique/accuracy_drop_points", "technique/pi_kl", "perf/row_epoch_seconds"):
        assert key in m, key
    assert m["technique/speedup_modelled"] > 2.0  # p=0.5 on both hidden layers: a quarter of the middle GEMM
    assert 0.5 < m["technique/macs_saved"] < 0.8
    assert m["technique/row/accuracy"] > 0.3  # learning (chance is 0.1); accuracy parity is the slow test's
    assert m["eval/accuracy"] == pytest.approx(m["technique/row/accuracy"])  # the row model is what is returned


def test_a_cnn_subject_is_refused_with_a_reason():
    from harness.api import IncompatibleError
    from harness.data import load_digits
    from harness.nn import ModelSubject, TrainConfig
    from harness_plugins.approx_dropout.technique import ApproxDropoutTechnique

    subject = ModelSubject("mnist_lenet5", lenet5(rng()), load_digits(0), TrainConfig())
    with pytest.raises(IncompatibleError, match="Dense/ReLU"):
        ApproxDropoutTechnique(ApproxDropoutConfig()).apply(subject, object(), None)


def _acceptance_rows():
    """The issue's acceptance runs (p=0.5, 3 seeds, row vs Bernoulli side by side,
    30 epochs each: ``mlp_epochs``), computed once per session: ~3 minutes at load 2."""
    import sys

    global _ACCEPTANCE
    if "_ACCEPTANCE" not in globals():
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
        from bench_approx_dropout import run

        epochs = ApproxDropoutConfig().mlp_epochs
        _ACCEPTANCE = [run(0.5, seed, "2048,2048", epochs, "row,bernoulli", 0) for seed in (0, 1, 2)]
    return _ACCEPTANCE


@pytest.mark.slow
def test_wide_mlp_measured_speedup_over_bernoulli_is_at_least_1_3x():
    """``.venv/bin/pytest tests/test_approx_dropout.py -m slow`` (README: 2.44x measured)."""
    import statistics

    rows = _acceptance_rows()
    assert statistics.median(r["row_speedup_wall"] for r in rows) >= 1.3
    assert statistics.median(r["row_speedup_cpu"] for r in rows) >= 1.3


@pytest.mark.slow
def test_wide_mlp_accuracy_within_half_a_point_of_bernoulli():
    """README: +0.07 points at 30 epochs (1.07 at the earlier 10; mlp_epochs says why)."""
    import statistics

    rows = _acceptance_rows()
    assert statistics.mean(r["row_acc_drop_points"] for r in rows) <= 0.5


# ------------------------------------------------------------------ CNN: sensitivity-aware feature-map dropout


def test_sensitivity_gemm_skips_the_low_maps_exactly_like_zeroing_them():
    from harness.numerics.backend import GemmCall
    from harness_plugins.approx_dropout.cnn import SensitivityDropoutGemm, channel_columns

    hook = SensitivityDropoutGemm(lenet5(rng()), p=0.5, rescore_every=10)
    window, channels = hook.convs["conv2"]
    assert (window, channels) == (25, 6)
    g = rng(15)
    x = g.standard_normal((40, window * channels)).astype(np.float32)
    w = g.standard_normal((window * channels, 16)).astype(np.float32)
    dy = g.standard_normal((40, 16)).astype(np.float32)
    call = lambda role, seed: GemmCall(op="conv2", role=role, seed=seed)
    # step 0 is dense and scores the maps by |x * dx|
    np.testing.assert_allclose(hook.matmul(x, w, call("forward", 1)), x @ w, rtol=1e-6)
    dx = hook.matmul(dy, w.T, call("grad_input", 1))
    score = np.abs(x * dx).reshape(40, window, channels).sum(axis=(0, 1))
    kept = np.sort(np.argsort(-score)[:3])
    np.testing.assert_array_equal(hook.keep["conv2"], kept)
    # step 1 skips the three lowest maps in all three products
    cols = channel_columns(window, channels, kept)
    zeroed = np.zeros_like(x)
    zeroed[:, cols] = x[:, cols]
    wz = np.zeros_like(w)
    wz[cols] = w[cols]
    np.testing.assert_allclose(hook.matmul(x, w, call("forward", 2)), zeroed @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hook.matmul(x.T, dy, call("grad_weight", 2)), zeroed.T @ dy, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hook.matmul(dy, w.T, call("grad_input", 2)), dy @ wz.T, rtol=1e-5, atol=1e-5)
    assert hook.macs < hook.dense_macs


def test_sensitivity_training_runs_and_saves_macs():
    from harness.nn.train import TrainConfig, fit
    from harness_plugins.approx_dropout.cnn import SensitivityDropoutGemm

    model = lenet5(rng(16))
    x = rng(17).random((64, 28, 28, 1), dtype=np.float32)
    y = rng(18).integers(0, 10, 64)
    hook = SensitivityDropoutGemm(model, p=0.5, rescore_every=3)
    fit(model, (x, y), None, TrainConfig(epochs=1, batch_size=8), seed=0, gemm=hook)
    assert hook._steps["conv2"] == 7 and hook.keep["conv2"].size == 3
    assert 0.1 < 1 - hook.macs / hook.dense_macs < 0.5
