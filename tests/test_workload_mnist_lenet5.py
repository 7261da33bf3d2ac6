"""mnist_lenet5: smoke build, cache reuse, determinism, and (slow) the 95% acceptance."""

import time

import numpy as np
import pytest

from harness.api import RunContext
from harness.host import get_host
from harness.nn import ModelSubject
from harness.numerics.backend import EXACT
from harness_plugins.mnist_lenet5 import MnistLenet5, MnistLenet5Config

SMOKE = dict(get_host().spec("workload", "mnist_lenet5").smoke)


def test_smoke_build_evaluate_trace(tmp_path):
    w = MnistLenet5(MnistLenet5Config(**SMOKE))
    ctx = RunContext(seed=0, cache_dir=tmp_path)
    s = w.build(ctx)
    assert isinstance(s, ModelSubject)
    assert ctx.record.tags["workload.cache"] == "miss"
    acc = w.evaluate(s, EXACT, ctx)["accuracy"]
    assert 0.5 < acc <= 1.0  # two epochs on 1,000 images is well above chance (0.1)
    assert [p[0] for p in ctx.record.series["train/loss"]] == list(range(SMOKE["epochs"]))
    assert w.op_trace(s).macs == 416_520


def test_second_build_reuses_the_cached_model_with_identical_metrics(tmp_path):
    w = MnistLenet5(MnistLenet5Config(**SMOKE))
    first, second = RunContext(seed=0, cache_dir=tmp_path), RunContext(seed=0, cache_dir=tmp_path)
    a = w.build(first)
    b = w.build(second)
    assert (first.record.tags["workload.cache"], second.record.tags["workload.cache"]) == ("miss", "hit")
    assert first.record.series == second.record.series
    assert w.evaluate(a, EXACT, first) == w.evaluate(b, EXACT, second)
    # quant_bits is evaluation-only: it shares the cached model
    q = MnistLenet5(MnistLenet5Config(**SMOKE, quant_bits=8))
    third = RunContext(seed=0, cache_dir=tmp_path)
    c = q.build(third)
    assert third.record.tags["workload.cache"] == "hit" and c.quant_bits == 8
    assert abs(q.evaluate(c, EXACT, third)["accuracy"] - w.evaluate(a, EXACT, first)["accuracy"]) < 0.05
    # another seed is another model
    other = RunContext(seed=1, cache_dir=tmp_path)
    w.build(other)
    assert other.record.tags["workload.cache"] == "miss"


def test_same_seed_same_metrics_without_cache(tmp_path):
    w = MnistLenet5(MnistLenet5Config(**SMOKE))
    results = []
    for sub in ("a", "b"):
        ctx = RunContext(seed=3, cache_dir=tmp_path / sub)
        s = w.build(ctx)
        results.append((w.evaluate(s, EXACT, ctx), ctx.record.series))
    assert results[0] == results[1]


def test_bad_config_names_the_value():
    with pytest.raises(ValueError, match="quant_bits=1"):
        MnistLenet5(MnistLenet5Config(quant_bits=1))
    with pytest.raises(ValueError, match="optimizer='rmsprop'"):
        MnistLenet5(MnistLenet5Config(optimizer="rmsprop"))


def test_subject_protocol_for_techniques(tmp_path):
    w = MnistLenet5(MnistLenet5Config(**SMOKE, batchnorm=True))
    ctx = RunContext(seed=0, cache_dir=tmp_path)
    s = w.build(ctx)
    assert sorted(s.weights()) == ["conv1.W", "conv2.W", "fc1.W", "fc2.W", "fc3.W"]
    assert s.channel_groups() == {"conv1": 6, "conv2": 16, "fc1": 120, "fc2": 84}
    t = s.copy()
    t.set_mask("fc1.W", (np.abs(t.weights()["fc1.W"]) > 0.05).astype(np.float32))
    t.set_channel_mask("conv2", (np.arange(16) < 12).astype(np.float32))
    assert t.recalibrate_batchnorm(500) == 4
    rows = t.train(1, ctx, grad_hook=lambda n, W: 1e-4 * W, prefix="technique/", lr=0.01)
    assert rows[0]["epoch"] == SMOKE["epochs"] and ctx.record.series["technique/loss"][0][0] == SMOKE["epochs"]
    assert t.density()["fc1.W"] < 1.0 and s.density()["fc1.W"] == 1.0
    small = t.compact()
    assert small.evaluate(split="val") == pytest.approx(t.evaluate(split="val"), abs=0.005)
    assert {op.name: op.n for op in small.op_trace()}["conv2"] == 12


@pytest.mark.slow
def test_default_config_reaches_95_percent_within_two_minutes(tmp_path):
    w = MnistLenet5(MnistLenet5Config())
    ctx = RunContext(seed=0, cache_dir=tmp_path)
    start = time.perf_counter()
    s = w.build(ctx)
    seconds = time.perf_counter() - start
    acc = w.evaluate(s, EXACT, ctx)["accuracy"]
    print(f"mnist_lenet5: test accuracy {acc:.4f}, build {seconds:.1f} s")
    assert acc >= 0.95  # the 2-minute budget is measured and reported, not asserted (shared, noisy machines)
    again = RunContext(seed=0, cache_dir=tmp_path)
    start = time.perf_counter()
    s2 = w.build(again)
    assert again.record.tags["workload.cache"] == "hit"
    print(f"mnist_lenet5: cached build {time.perf_counter() - start:.2f} s")
    assert w.evaluate(s2, EXACT, again)["accuracy"] == acc
