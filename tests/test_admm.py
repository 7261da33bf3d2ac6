"""Tests of the admm technique plugin: projections, ADMM arithmetic, counting, runs.

The projections are checked against their definitions (closest point of the
constraint set), the Z/U update against hand arithmetic, and the runs end to end
through :func:`harness.runner.run_experiment` on the real workloads. The LeNet-5
acceptance (the README's table) is ``@pytest.mark.slow``.
"""

from __future__ import annotations

import dataclasses
import tempfile

import numpy as np
import pytest

from harness.runner import run_experiment
from harness.specs import validate_spec
from harness_plugins.admm import AdmmConfig, harness_techniques, validate_config
from harness_plugins.admm.admm import admm_update, compression_stats, plan_stages
from harness_plugins.admm.projections import (
    allocate_keep,
    keep_count,
    project_prune,
    project_quant,
    prune_support,
    quant_levels,
)


def rng(seed=0):
    return np.random.default_rng(seed)


# ------------------------------------------------------------------ projections


def test_irregular_keeps_exactly_the_top_k_by_magnitude():
    w = rng().standard_normal((5, 5, 3, 8)).astype(np.float32)
    k = 37
    z = project_prune(w, k, "irregular")
    assert np.count_nonzero(z) == k
    kept = np.abs(w[z != 0])
    dropped = np.abs(w[z == 0])
    assert kept.min() >= dropped.max()
    np.testing.assert_array_equal(z[z != 0], w[z != 0])  # kept values unchanged


def test_irregular_projection_is_the_closest_k_sparse_point():
    w = rng(1).standard_normal(50).astype(np.float32)
    z = project_prune(w, 10, "irregular")
    best = np.sum((w - z) ** 2)
    for trial in range(200):  # any other 10-sparse support is farther away
        idx = rng(trial).choice(50, 10, replace=False)
        other = np.zeros_like(w)
        other[idx] = w[idx]
        assert np.sum((w - other) ** 2) >= best - 1e-6


def test_filter_projection_keeps_whole_filters_with_largest_norms():
    w = rng(2).standard_normal((3, 3, 4, 10)).astype(np.float32)
    w[..., 7] *= 5  # make two filters clearly the largest
    w[..., 2] *= 4
    z = project_prune(w, 2, "filter")
    alive = [c for c in range(10) if np.any(z[..., c])]
    assert alive == [2, 7]
    for c in alive:
        np.testing.assert_array_equal(z[..., c], w[..., c])


def test_column_projection_keeps_whole_input_positions():
    w = rng(3).standard_normal((20, 6)).astype(np.float32)  # Dense (in, out)
    w[4] *= 10
    w[11] *= 8
    w[15] *= 6
    z = project_prune(w, 3, "column")
    rows = [i for i in range(20) if np.any(z[i])]
    assert rows == [4, 11, 15]
    assert np.all(z[rows] == w[rows])
    conv = rng(4).standard_normal((5, 5, 2, 4)).astype(np.float32)
    support = prune_support(conv, 7, "column").reshape(-1, 4)
    assert np.all((support == 0).all(axis=1) | (support == 1).all(axis=1))  # all filters or none
    assert int(support[:, 0].sum()) == 7


def test_keep_count_units():
    assert keep_count((100, 10), 0.1, "irregular") == 100
    assert keep_count((100, 10), 0.3, "filter") == 3
    assert keep_count((100, 10), 0.05, "column") == 5
    assert keep_count((100, 10), 0.0001, "filter") == 1  # never an empty layer


def test_binarization_is_alpha_sign_with_alpha_mean_abs():
    w = rng(5).standard_normal((30, 7)).astype(np.float32)
    q, alpha = project_quant(w, 1)
    assert alpha == pytest.approx(float(np.mean(np.abs(w))), rel=1e-6)
    np.testing.assert_allclose(q, alpha * np.where(w >= 0, 1.0, -1.0), rtol=1e-6)
    err = np.sum((w - q) ** 2)
    for a in (alpha * 0.9, alpha * 1.1):  # mean|W| is the optimal scale
        assert np.sum((w - a * np.sign(w)) ** 2) > err


def test_binarization_leaves_pruned_weights_at_zero():
    w = rng(6).standard_normal(40).astype(np.float32)
    support = (np.abs(w) > 0.5).astype(np.float32)
    q, alpha = project_quant(w * support, 1, support)
    assert np.all(q[support == 0] == 0)
    assert alpha == pytest.approx(float(np.mean(np.abs(w[support == 1]))), rel=1e-6)
    assert set(np.unique(np.abs(q[support == 1]))) == {np.float32(alpha)}


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_multibit_quantization_lands_on_the_grid_and_beats_max_scaling(bits):
    w = rng(bits).standard_normal(500).astype(np.float32)
    q, alpha = project_quant(w, bits)
    m = quant_levels(bits)
    codes = q / alpha
    np.testing.assert_allclose(codes, np.rint(codes), atol=1e-4)
    assert np.abs(codes).max() <= m + 1e-4
    naive_alpha = np.abs(w).max() / m
    naive = naive_alpha * np.clip(np.rint(w / naive_alpha), -m, m)
    assert np.sum((w - q) ** 2) <= np.sum((w - naive) ** 2) + 1e-9


def test_quant_levels_rejects_bad_bits():
    with pytest.raises(ValueError, match="bits=0"):
        quant_levels(0)


# ------------------------------------------------------------------ ADMM arithmetic


def test_z_u_update_arithmetic():
    w = np.array([0.9, -0.2, 0.05, -1.5], dtype=np.float32)
    u = np.array([0.1, 0.3, -0.1, 0.0], dtype=np.float32)
    z, u_new = admm_update(w, u, lambda x: project_prune(x, 2, "irregular"))
    # W + U = [1.0, 0.1, -0.05, -1.5]; top-2 by magnitude: 1.0 and -1.5
    np.testing.assert_allclose(z, [1.0, 0.0, 0.0, -1.5], rtol=1e-6)
    np.testing.assert_allclose(u_new, u + w - z, rtol=1e-6)
    np.testing.assert_allclose(u_new, [0.0, 0.1, -0.05, 0.0], atol=1e-6)


def test_admm_penalty_gradient_is_rho_times_w_minus_z_plus_u():
    # the hook the technique hands to subject.train is the gradient of rho/2 ||W - Z + U||^2
    w = rng(7).standard_normal(10)
    z, u, rho = rng(8).standard_normal(10), rng(9).standard_normal(10), 0.3
    f = lambda x: 0.5 * rho * np.sum((x - z + u) ** 2)
    eps = 1e-6
    numeric = np.array([(f(w + eps * e) - f(w - eps * e)) / (2 * eps) for e in np.eye(10)])
    np.testing.assert_allclose(numeric, rho * (w - z + u), rtol=1e-5)


# ------------------------------------------------------------------ allocation and counting


SHAPES = {"conv1.W": (5, 5, 1, 6), "conv2.W": (5, 5, 6, 16), "fc1.W": (400, 120), "fc2.W": (120, 84), "fc3.W": (84, 10)}


@pytest.mark.parametrize("allocation", ["erk", "uniform", "global"])
@pytest.mark.parametrize("ratio", [1.0, 10.0, 30.0, 100.0])
def test_allocation_hits_the_global_ratio(allocation, ratio):
    weights = {n: rng(i).standard_normal(s) / np.sqrt(np.prod(s[:-1])) for i, (n, s) in enumerate(SHAPES.items())}
    keep = allocate_keep(SHAPES, ratio, allocation=allocation, weights=weights)
    total = sum(np.prod(s) for s in SHAPES.values())
    nonzero = sum(keep[n] * np.prod(s) for n, s in SHAPES.items())
    assert abs(nonzero - total / ratio) <= 1.0  # global keeps whole weights
    assert all(0 <= f <= 1 for f in keep.values())


def test_global_allocation_is_one_magnitude_threshold():
    weights = {"a.W": np.full((10, 10), 0.1), "b.W": np.full((10, 10), 1.0)}
    keep = allocate_keep({"a.W": (10, 10), "b.W": (10, 10)}, 4.0, allocation="global", weights=weights)
    assert keep == {"a.W": 0.0, "b.W": 0.5}


def test_erk_keeps_more_of_small_layers_and_overrides_are_pinned():
    keep = allocate_keep(SHAPES, 30.0, allocation="erk")
    assert keep["conv1.W"] > keep["conv2.W"] and keep["fc3.W"] > keep["fc1.W"]
    pinned = allocate_keep(SHAPES, 30.0, {"conv1.W": 5.0}, "uniform")
    assert pinned["conv1.W"] == pytest.approx(0.2)
    others = {pinned[n] for n in SHAPES if n != "conv1.W"}
    assert max(others) - min(others) < 1e-9


def test_allocation_errors_name_the_bad_values():
    with pytest.raises(ValueError, match="fc9"):
        allocate_keep(SHAPES, 10.0, {"fc9.W": 2.0})
    with pytest.raises(ValueError, match="ratio=100"):
        allocate_keep(SHAPES, 100.0, {"fc1.W": 2.0})
    with pytest.raises(ValueError, match="allocation='greedy'"):
        allocate_keep(SHAPES, 10.0, allocation="greedy")


def test_compression_stats_counts_non_zeros_and_bits():
    weights = {"a.W": np.array([[0.0, 1.0], [2.0, 0.0]]), "b.W": np.array([0.0, 0.0, 3.0, 0.0, 0.0, 0.0])}
    s = compression_stats(weights)
    assert s["total_weights"] == 10 and s["nonzero_weights"] == 3
    assert s["compression_ratio"] == pytest.approx(10 / 3)
    assert s["weight_bits_total"] == 3 * 32 and s["avg_weight_bits"] == 32
    q = compression_stats(weights, {"a.W": 1, "b.W": 4})
    assert q["weight_bits_total"] == 2 * 1 + 1 * 4
    assert q["avg_weight_bits"] == pytest.approx(2.0)
    assert q["storage_ratio"] == pytest.approx(320 / 6)
    scaled = compression_stats(weights, {"a.W": 1, "b.W": 4}, scales=2)
    assert scaled["weight_bits_total"] == 6 + 64


def test_per_channel_binarization_gives_each_filter_its_mean_abs():
    w = rng(10).standard_normal((3, 3, 2, 5)).astype(np.float32) * np.arange(1, 6)
    q, alphas = project_quant(w, 1, per_channel=True)
    for c in range(5):
        assert alphas[c] == pytest.approx(float(np.mean(np.abs(w[..., c]))), rel=1e-6)
        np.testing.assert_allclose(q[..., c], alphas[c] * np.where(w[..., c] >= 0, 1, -1), rtol=1e-6)


def test_stage_plans_spend_the_same_epochs():
    keep = {"a.W": 0.01, "b.W": 0.1}
    budgets = {}
    for method in ("progressive_admm", "admm", "magnitude"):
        plans = plan_stages(method, keep, stages=3, admm_updates=4, admm_epochs=2, retrain_epochs=5)
        budgets[method] = sum(p.admm_updates * 2 + p.retrain_epochs + p.magnitude_epochs for p in plans)
        assert plans[-1].keep == pytest.approx(keep)  # every method ends at the target
    assert len(set(budgets.values())) == 1
    ramp = plan_stages("progressive_admm", keep, 3, 4, 1, 5)
    assert ramp[0].keep["a.W"] > ramp[1].keep["a.W"] > ramp[2].keep["a.W"]


# ------------------------------------------------------------------ config and spec


def test_spec_validates_and_claims_name_the_papers_settings():
    (spec,) = list(harness_techniques())
    validate_spec(spec)
    assert spec.smoke_workload == "digits_mlp"
    workloads = {c.workload for c in spec.claims}
    assert "mnist_lenet5" not in workloads  # the paper used 60k MNIST, ours the 5k subset
    assert any(c.when.get("quant_bits") == 1 for c in spec.claims)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("method", "lottery", "method='lottery': valid are progressive_admm, admm, magnitude"),
        ("projection", "block", "projection='block': valid are irregular, filter, column"),
        ("ratio", 0.5, "ratio=0.5"),
        ("quant_bits", 9, "quant_bits=9"),
        ("rho_growth", 0.9, "rho_growth=0.9"),
    ],
)
def test_config_errors_name_the_value_and_the_valid_ones(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_config(dataclasses.replace(AdmmConfig(), **{field: value}))


# ------------------------------------------------------------------ runs


def run(tech: dict, workload="digits_mlp", wl: dict | None = None, accelerator="exact", seed=0, cache=None):
    with tempfile.TemporaryDirectory() as tmp:
        return run_experiment({"workload": workload, "technique": "admm", "accelerator": accelerator},
                              {"workload": {"epochs": 20} if wl is None else wl, "technique": tech}, seed=seed,
                              cache_dir=cache or tmp)


def test_smoke_run_is_deterministic_and_logs_what_the_issue_asks():
    (spec,) = list(harness_techniques())
    a = run(dict(spec.smoke), wl={"epochs": 2})
    b = run(dict(spec.smoke), wl={"epochs": 2})
    assert a.status == "FINISHED", a.error
    same = lambda r: {k: v for k, v in r.metrics.items() if not k.startswith("perf/")}
    assert same(a) == same(b)
    m = a.metrics
    for key in ("technique/compression_ratio", "technique/dense_accuracy", "technique/weight_bits_total",
                "technique/avg_weight_bits", "technique/stage0/accuracy", "technique/stage1/val_accuracy",
                "eval/accuracy"):
        assert key in m, key
    # 4-bit codes plus one 32-bit scale per layer
    assert m["technique/weight_bits_total"] == 4 * m["technique/nonzero_weights"] + 3 * 32
    assert "technique/stage0/loss" in a.series and "technique/stage0/admm_residual" in a.series
    table = a.artifacts["tables/layer_sparsity.csv"].decode().splitlines()
    assert table[0].startswith("layer,shape,weights,nonzero,density,sparsity")
    assert len(table) == 1 + 3  # fc1..fc3


@pytest.mark.parametrize("projection", ["irregular", "filter", "column"])
def test_masks_reach_the_op_trace(projection):
    r = run({"ratio": 8.0, "projection": projection, "stages": 1, "admm_updates": 1, "retrain_epochs": 1},
            wl={"epochs": 2})
    assert r.status == "FINISHED", r.error
    m = r.metrics
    assert m["technique/compression_ratio"] == pytest.approx(8.0, rel=0.15)
    # the trace's non-zero MACs fall with the mask densities
    assert m["trace/nonzero_macs"] < 0.5 * m["trace/macs"]
    table = r.artifacts["tables/layer_sparsity.csv"].decode()
    if projection == "filter":
        assert "fc3.W,100x10,1000" in table and ",column," in table  # classifier keeps its classes


def test_bad_layer_override_names_the_valid_layers():
    r = run({"ratio": 5.0, "layer_ratios": {"conv1": 2.0}, "stages": 1, "admm_updates": 0, "retrain_epochs": 0},
            wl={"epochs": 1})
    assert r.status == "FAILED"
    assert "conv1" in r.error and "valid are fc1, fc2, fc3" in r.error


@pytest.mark.slow
@pytest.mark.xfail(reason="measured: on digits_mlp at 50x iterative magnitude pruning with the same epochs "
                          "is ahead (3-seed test means, ADMM vs magnitude, erk: 92.8 vs 94.5; global: 87.1 vs 87.9); see README",
                   strict=False)
def test_admm_beats_magnitude_on_digits_at_50x():
    """Averaged over 3 seeds: progressive ADMM vs iterative magnitude pruning at 50x.

    The paper's quick check (95.0 vs 85.0) compared against a weaker magnitude
    baseline; ours retrains iteratively for as many epochs as ADMM trains.
    """
    acc = {m: np.mean([run({"method": m, "ratio": 50.0}, wl={}, seed=s).metrics["eval/accuracy"] for s in range(3)])
           for m in ("progressive_admm", "magnitude")}
    assert acc["progressive_admm"] > acc["magnitude"], acc


@pytest.fixture(scope="module")
def lenet_runs():
    """The README's acceptance runs on mnist_lenet5, seed 0 (about 10 minutes on 2 cores)."""
    jobs = {
        "admm30": {"method": "progressive_admm", "ratio": 30.0},
        "mag30": {"method": "magnitude", "ratio": 30.0},
        "admm100": {"method": "progressive_admm", "ratio": 100.0},
        "mag100": {"method": "magnitude", "ratio": 100.0},
        "binary": {"ratio": 1.0, "quant_bits": 1},
    }
    out = {}
    for key, tech in jobs.items():
        r = run(tech, workload="mnist_lenet5", wl={})
        assert r.status == "FINISHED", r.error
        out[key] = r.metrics
        print(key, {k: round(r.metrics[k], 4) for k in ("technique/dense_accuracy", "technique/compression_ratio",
                                                         "technique/final_val_accuracy", "eval/accuracy")})
    return out


@pytest.mark.slow
def test_lenet5_30x_within_1_5_points_and_binary_within_2(lenet_runs):
    admm, binary = lenet_runs["admm30"], lenet_runs["binary"]
    dense = admm["technique/dense_accuracy"]
    assert admm["technique/compression_ratio"] >= 30.0 - 1e-6
    assert admm["eval/accuracy"] >= dense - 0.015
    assert binary["technique/avg_weight_bits"] < 1.01
    assert binary["eval/accuracy"] >= dense - 0.02


@pytest.mark.slow
def test_lenet5_progressive_admm_beats_magnitude_at_100x(lenet_runs):
    assert lenet_runs["admm100"]["eval/accuracy"] > lenet_runs["mag100"]["eval/accuracy"]


@pytest.mark.slow
def test_lenet5_progressive_admm_beats_magnitude_at_30x_over_six_seeds(tmp_path):
    """At 30x, progressive ADMM is ahead of magnitude pruning + retraining in the mean over seeds 0-5.

    Measured (README): seeds 0-2 96.93 vs 96.97, seeds 3-5 97.10 vs 96.57 (test
    means): single seeds split either way, so one seed cannot decide this; the
    six-seed mean can, by about a quarter of a point. About 12 minutes on 2 cores.
    """
    acc = {
        m: np.mean([run({"method": m, "ratio": 30.0}, workload="mnist_lenet5", wl={}, seed=s, cache=str(tmp_path))
                    .metrics["eval/accuracy"] for s in range(6)])
        for m in ("progressive_admm", "magnitude")
    }
    print("mnist_lenet5 30x, mean test accuracy over seeds 0-5:", acc)
    assert acc["progressive_admm"] > acc["magnitude"], acc
