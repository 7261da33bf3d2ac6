"""dsbp_fp8: kernel vs numpy reference bit for bit, the predictor, the cost model's
calibration, self-measurement through the runner, and (slow) the paper's experiments."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from harness.numerics import GemmCall, bind
from harness.numerics.fp8 import FORMATS, E5M7
from harness.optrace import Op, OpTrace
from harness.runner import run_experiment
from harness_plugins.dsbp_fp8 import (BASELINE_BITS, CLAIMS, DsbpFp8Accelerator, DsbpFp8Backend, DsbpFp8Config,
                                      cost)
from harness_plugins.dsbp_fp8.kernels import D_CAP, POW2, predict_bits
from harness_plugins.dsbp_fp8.reference import predict_bits_reference

REPO = Path(__file__).resolve().parent.parent


def transformer_like(m, k, seed=0, outliers=4):
    """Heavy-tailed activations with a few outlier channels, some exact zeros (GELU-like)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_t(4, (m, k)) * np.exp(0.5 * rng.standard_normal((1, k)))
    a[:, rng.choice(k, outliers, replace=False)] *= 30
    a[rng.random((m, k)) < 0.1] = 0.0
    return a.astype(np.float32)


def weights(k, n, seed=1):
    return (np.random.default_rng(seed).standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)


CASES = [
    {},
    {"mode": "fixed"},
    {"mode": "fixed", "input_bits": 3, "weight_bits": 2},
    {"predictor": "percentile", "threshold": 0.75},
    {"predictor": "fullscale", "threshold": 1e-4},
    {"predictor": "budget", "threshold": 1e-2},
    {"rounding": "nearest", "weight_bits": 0, "weight_threshold": 1e-3},
    {"input_format": "e2m5", "weight_format": "e5m2", "group": 16},
    {"input_format": "e5m2", "weight_format": "e3m4", "group": 7, "threshold": 3e-2, "input_scaling": "none"},
    {"input_format": "e3m4", "min_input_bits": 4, "max_input_bits": 9, "weight_scaling": "column"},
]


@pytest.mark.parametrize("overrides", CASES, ids=[",".join(f"{k}={v}" for k, v in c.items()) or "default" for c in CASES])
def test_kernel_matches_reference_bit_for_bit(overrides):
    backend = DsbpFp8Backend(DsbpFp8Config(compare_rows=0, **overrides))
    a = transformer_like(24, 150, seed=len(overrides))
    a[0] = 0.0  # an all-zero row: every group empty
    a[1, :64] = 1e-6  # tiny values: subnormals, or flushed without scaling
    a[2, 5] = 1e9  # saturation (with input_scaling=none)
    b = weights(150, 13)
    got = backend.matmul(a, b)
    ref = backend.matmul(a, b, reference=True)
    assert got.dtype == ref.dtype == np.float32
    assert np.array_equal(got.view(np.uint32), ref.view(np.uint32))
    fields, _, _ = backend.inputs(a)
    prepared = backend.prepare_weight(b)
    row_bits = np.zeros(24, np.int64) if backend.config.mode == "dsbp" else np.full(24, backend.config.input_bits)
    row_bits[3:6] = (3, 7, 12)  # the fixed-bitwidth baseline rows of a DSBP call
    (k_out, k_bits), (r_out, r_bits) = (backend._run(fields, row_bits, prepared, reference=ref)
                                        for ref in (False, True))
    assert np.array_equal(k_out.view(np.uint32), r_out.view(np.uint32))
    assert np.array_equal(k_bits, r_bits)


def test_predictor_histogram_equals_per_element_estimate():
    rng = np.random.default_rng(3)
    for predictor, threshold in ((0, 1e-1), (0, 1e-3), (0, 1e-6), (1, 0.5), (1, 0.95), (2, 1e-2), (2, 1e-5)):
        d = rng.integers(0, 22, (200, 64))
        nonzero = rng.random((200, 64)) < 0.8
        top = rng.integers(0, 12, 200)
        ref = predict_bits_reference(d, nonzero, 3, predictor, threshold, 2, 12, top)
        for r in range(200):
            hist = np.bincount(np.minimum(d[r][nonzero[r]], D_CAP), minlength=D_CAP + 1).astype(np.int64)
            assert predict_bits(hist, int(nonzero[r].sum()), 3, predictor, threshold, 2, 12, top[r], POW2) == ref[r]


def test_predictor_reads_the_shift_distribution():
    m = 3  # E4M3
    same = np.zeros((1, 64), np.int64)
    spread = np.arange(64)[None, :] % 12
    nz = np.ones((1, 64), bool)
    # equal exponents: M + 2 bits keep every element, fewer lose the LSBs
    assert predict_bits_reference(same, nz, m, 0, 1e-9, 2, 12)[0] == m + 2
    assert predict_bits_reference(np.zeros((1, 64), np.int64), ~nz, m, 0, 1e-9, 2, 12)[0] == 2  # all zeros
    # a wider shift distribution needs more bits at the same budget; a looser budget fewer
    assert predict_bits_reference(spread, nz, m, 0, 1e-4, 2, 12)[0] > predict_bits_reference(same, nz, m, 0, 1e-4, 2, 12)[0]
    bits = [predict_bits_reference(spread, nz, m, 0, t, 2, 12)[0] for t in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)]
    assert bits == sorted(bits) and bits[0] < bits[-1]


def test_fixed_12_bits_on_narrow_groups_is_the_exact_fp8_product():
    """Lossless case: every input shift <= 7 (fits 11 magnitude bits), weights exact in 8 bits."""
    rng = np.random.default_rng(0)
    a = (rng.choice([-1, 1], (8, 128)) * np.exp2(rng.integers(-3, 4, (8, 128))) * 1.5).astype(np.float32)
    b = (rng.choice([-1, 1], (128, 5)) * np.exp2(rng.integers(-1, 2, (128, 5)))).astype(np.float32)
    backend = DsbpFp8Backend(DsbpFp8Config(mode="fixed", input_bits=12, weight_bits=8))
    got = backend.matmul(a, b).astype(np.float64)
    assert np.allclose(got, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-6, atol=0)
    assert backend.observe()["numerics/gemm_nmse_fp8"] < 1e-12


def test_dsbp_needs_fewer_bits_than_fixed_for_the_same_error():
    """The qualitative result on transformer-like operands, from the in-run fixed baseline."""
    backend = DsbpFp8Backend(DsbpFp8Config(threshold=1e-3, compare_rows=64))
    a, b = transformer_like(64, 512), weights(512, 32)
    backend.matmul(a, b, GemmCall(op="fc", weight_stationary=True))
    seen = backend.observe()
    fixed = [seen[f"numerics/fixed_nmse_input_b{b}"] for b in BASELINE_BITS]
    assert all(x >= y for x, y in zip(fixed, fixed[1:]))  # more bits, less error
    assert seen["numerics/fixed_equivalent_input_bits"] > seen["numerics/baseline_dsbp_input_bits"]
    assert seen["numerics/dsbp_efficiency_gain"] > 1.0
    assert backend.observe() == {}  # forgotten


def test_cost_is_calibrated_to_fixed_e5m7():
    macro = cost.Macro(group=64, columns=96, predictor=False)
    assert cost.peak_tflops_per_w(E5M7.aligned_bits, E5M7.aligned_bits, macro) == pytest.approx(20.4, rel=1e-12)
    assert cost.peak_tflops_per_w(4, 8, macro) > 1.9 * cost.peak_tflops_per_w(8, 8, macro) / 2 * 2 * 0.95
    claim = next(c for c in CLAIMS if c.metric == "accelerator/peak_tflops_per_w")
    acc = DsbpFp8Accelerator(DsbpFp8Config(mode="fixed", **{k: v for k, v in claim.when.items() if k != "mode"}))
    trace = OpTrace((Op("fc", m=1, k=64, n=96, weight_bits=8, input_bits=8),))
    with tempfile.TemporaryDirectory() as tmp:
        from harness.api import RunContext

        out = acc.cost(trace, RunContext(0, tmp))
    assert out["peak_tflops_per_w"] == pytest.approx(claim.value)
    assert out["tflops_per_w"] == pytest.approx(claim.value)  # one full tile: the calibration point
    assert out["observed_mac_fraction"] == 0.0


def test_cost_prices_the_trace_with_observed_bitwidths():
    acc = DsbpFp8Accelerator(DsbpFp8Config(compare_rows=0))
    bound = bind(acc.numerics, seed=0)
    a, b = transformer_like(32, 256), weights(256, 96)
    bound.matmul(a, b, GemmCall(op="fc", weight_stationary=True))
    seen = acc.numerics.observe()
    trace = OpTrace((Op("fc", m=4, k=256, n=96), Op("other", m=4, k=256, n=96)))
    with tempfile.TemporaryDirectory() as tmp:
        from harness.api import RunContext

        out = acc.cost(trace, RunContext(0, tmp))
    assert out["observed_mac_fraction"] == pytest.approx(0.5)
    assert out["avg_input_bits"] == pytest.approx(seen["numerics/avg_input_bits"])
    assert 2 <= out["avg_input_bits"] < 12
    fixed = DsbpFp8Accelerator(DsbpFp8Config(mode="fixed", input_bits=8))
    with tempfile.TemporaryDirectory() as tmp:
        from harness.api import RunContext

        base = fixed.cost(trace, RunContext(0, tmp))
    assert base["avg_input_bits"] == 8.0
    assert out["energy_predict_pj"] > 0 and base["energy_predict_pj"] == 0
    if out["avg_input_bits"] < 7.9:  # the predictor costs far less than a bit-cycle saves
        assert out["tflops_per_w"] > base["tflops_per_w"]


def test_runner_logs_what_the_numerics_observed():
    with tempfile.TemporaryDirectory() as tmp:
        record = run_experiment({"workload": "dot_products", "technique": "none", "accelerator": "dsbp_fp8"},
                                {"workload": {"count": 256, "length": 128}, "accelerator": {"compare_rows": 4}},
                                seed=0, cache_dir=tmp)
    assert record.status == "FINISHED", record.error
    m = record.metrics
    for key in ("numerics/gemm_nmse", "numerics/gemm_nmse_fp8", "numerics/avg_input_bits",
                "numerics/dsbp_efficiency_gain", "accelerator/tflops_per_w", "accelerator/peak_tflops_per_w"):
        assert key in m, key
    assert m["accelerator/observed_mac_fraction"] == 1.0
    assert m["accelerator/avg_input_bits"] == pytest.approx(m["numerics/avg_input_bits"])


def test_config_is_checked():
    from harness.validation import ConfigError, validate_config

    with pytest.raises(ConfigError, match="weight_bits=3"):
        validate_config(DsbpFp8Config(weight_bits=3), "accelerator", "dsbp_fp8")
    with pytest.raises(ConfigError, match="min_input_bits"):
        validate_config(DsbpFp8Config(min_input_bits=9, max_input_bits=4), "accelerator", "dsbp_fp8")
    assert set(FORMATS) == {"e2m5", "e3m4", "e4m3", "e5m2"}
    assert dataclasses.asdict(DsbpFp8Config())["mode"] == "dsbp"


# ------------------------------------------------------------------- slow: the experiments

def _sweep(preset: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    # The store is named explicitly: mlflow.set_tracking_uri (in _runs) also sets
    # MLFLOW_TRACKING_URI in this process, which a later test's sweep would inherit.
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", RAY_USAGE_STATS_ENABLED="0",
               MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}")
    return subprocess.run([sys.executable, "-m", "harness", "run", "-m", f"+experiment={preset}",
                           f"cache_dir={tmp / 'cache'}", *extra], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=7200)


def _runs(tmp: Path, experiment: str):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string="attributes.status = 'FINISHED'")
    return runs[runs["tags.mlflow.parentRunId"].notna()]  # the jobs, not the sweep's parent run


@pytest.mark.slow
def test_experiment_a_dsbp_pareto_dominates_fixed(tmp_path):
    """``harness run -m +experiment=dsbp_fp8_nmse`` (about 10 minutes on 2 cores)."""
    done = _sweep("dsbp_fp8_nmse", tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = _runs(tmp_path, "dsbp_fp8_nmse")
    fixed = runs[runs["params.accelerator.mode"] == "fixed"]
    dsbp = runs[runs["params.accelerator.mode"] == "dsbp"]
    fb = fixed["metrics.numerics/avg_input_bits"].to_numpy()
    fe = fixed["metrics.numerics/gemm_nmse_input"].to_numpy()
    order = np.argsort(fb)
    dominated = 0
    for bits, err in zip(dsbp["metrics.numerics/avg_input_bits"], dsbp["metrics.numerics/gemm_nmse_input"]):
        needed = np.interp(np.log10(err), np.log10(fe[order][::-1]), fb[order][::-1])  # fixed bits at this NMSE
        dominated += bits < needed
    assert dominated >= 3


@pytest.mark.slow
def test_experiment_b_dsbp_keeps_vit_accuracy(tmp_path):
    """``harness run -m +experiment=dsbp_fp8_accuracy`` (about 20 minutes on 2 cores)."""
    done = _sweep("dsbp_fp8_accuracy", tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = _runs(tmp_path, "dsbp_fp8_accuracy")
    vit = runs[runs["params.workload"] == "mnist_vit"]
    default = vit[(vit["params.accelerator.mode"] == "dsbp")
                  & (vit["params.accelerator.threshold"].astype(float) == DsbpFp8Config().threshold)]
    assert len(default) == 1
    row = default.iloc[0]
    assert row["metrics.eval/accuracy"] >= row["metrics.eval/accuracy_exact"] - 0.005
    fixed = vit[vit["params.accelerator.mode"] == "fixed"]
    reaching = fixed[fixed["metrics.eval/accuracy"] >= row["metrics.eval/accuracy"]]
    assert len(reaching) and row["metrics.numerics/avg_input_bits"] < reaching["metrics.numerics/avg_input_bits"].min()


@pytest.mark.slow
def test_experiment_c_formats(tmp_path):
    """``harness run -m +experiment=dsbp_fp8_formats`` (about 10 minutes on 2 cores)."""
    done = _sweep("dsbp_fp8_formats", tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = _runs(tmp_path, "dsbp_fp8_formats")
    assert set(runs["params.accelerator.input_format"]) == set(FORMATS)


@pytest.mark.parametrize("rounding", ["truncate", "nearest"])
def test_weight_alignment_equals_floor_of_value_over_lsb(rounding):
    """The offline weight side (kernels.align_weights) against the plain formula: each
    weight group aligned to its largest exponent, kept to B_w - 1 = 5 magnitude bits."""
    backend = DsbpFp8Backend(DsbpFp8Config(weight_bits=6, rounding=rounding, group=16))
    b = weights(40, 7) * np.exp2(np.random.default_rng(2).integers(-6, 3, (40, 7)))
    prepared = backend.prepare_weight(b)
    lsb = np.repeat(np.exp2(prepared.lw.astype(np.float64)), 16, axis=0)[:40]
    ratio = np.abs(prepared.fp8 / prepared.scale) / lsb
    want = np.minimum(np.floor(ratio + 0.5), 31) if rounding == "nearest" else np.floor(ratio)
    assert np.array_equal(np.abs(prepared.qw), want.astype(np.int32))
    assert np.array_equal(np.sign(prepared.qw), np.where(want > 0, np.sign(b), 0))
    top = np.abs(np.pad(prepared.qw, ((0, 8), (0, 0)))).reshape(3, 16, 7).max(axis=1)
    assert np.all((top >= 16) & (top <= 31))  # the group maximum's leading bit is the MSB


def test_threshold_selection_picks_the_cheapest_budget_within_the_drop():
    """select_threshold's rule, on the rows it measured (README): fixed widths are never chosen."""
    from harness_plugins.dsbp_fp8.select_threshold import choose

    rows = [{"threshold": 0.0, "drop_points": 0.0}, {"threshold": 1e-3, "drop_points": 2.70},
            {"threshold": 3e-4, "drop_points": 0.42}, {"threshold": 3e-5, "drop_points": 0.15},
            {"threshold": 1e-6, "drop_points": 0.30}, {"threshold": None, "drop_points": -0.1}]
    assert choose(rows, 0.25) == 3e-5
    assert choose(rows, 0.5) == 3e-4
    assert choose(rows, 0.1) is None


def test_threshold_selection_folds_are_stratified_and_cover_train_and_val_once():
    from harness.data import load_mnist5k
    from harness_plugins.dsbp_fp8.select_threshold import fold_indices

    data = load_mnist5k(11)
    y = np.concatenate([data.y_train, data.y_val])
    fold_of = fold_indices(y, 5, seed=0)
    assert fold_of.shape == y.shape and set(np.unique(fold_of)) == set(range(5))
    counts = np.array([np.bincount(y[fold_of == f], minlength=10) for f in range(5)])
    assert (counts.max(axis=0) - counts.min(axis=0) <= 1).all()  # each class split evenly over the folds
    assert np.array_equal(fold_of, fold_indices(y, 5, seed=0))  # seeded
    assert not np.array_equal(fold_of, fold_indices(y, 5, seed=1))
