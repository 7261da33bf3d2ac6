"""digits_mlp: builds, learns, caches, and rejects bad configs by name."""

import pytest

from harness.api import RunContext
from harness.host import get_host
from harness.numerics.backend import EXACT
from harness_plugins.digits_mlp import DigitsMlp, DigitsMlpConfig


def test_default_config_trains_to_high_accuracy(tmp_path):
    w = DigitsMlp(DigitsMlpConfig())
    ctx = RunContext(seed=0, cache_dir=tmp_path)
    s = w.build(ctx)
    acc = w.evaluate(s, EXACT, ctx)["accuracy"]
    assert acc >= 0.95, acc  # the quick checks in compression.md report ~98%
    assert len(ctx.record.series["train/val_accuracy"]) == 30
    int8 = s.evaluate(EXACT, quant_bits=8)
    assert abs(int8 - acc) < 0.02
    trace = w.op_trace(s)
    assert [(op.m, op.k, op.n) for op in trace] == [(1, 64, 300), (1, 300, 100), (1, 100, 10)]


def test_smoke_config_and_cache(tmp_path):
    w = DigitsMlp(DigitsMlpConfig(**get_host().spec("workload", "digits_mlp").smoke))
    a, b = RunContext(seed=0, cache_dir=tmp_path), RunContext(seed=0, cache_dir=tmp_path)
    sa, sb = w.build(a), w.build(b)
    assert b.record.tags["workload.cache"] == "hit"
    assert w.evaluate(sa, EXACT, a) == w.evaluate(sb, EXACT, b)


def test_bad_hidden_names_the_value():
    with pytest.raises(ValueError, match="hidden='3x'"):
        DigitsMlp(DigitsMlpConfig(hidden="3x"))
