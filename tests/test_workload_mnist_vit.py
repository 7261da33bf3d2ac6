"""mnist_vit: smoke build, attention maps and masks on the subject, (slow) the 90% acceptance."""

import time

import numpy as np
import pytest

from harness.api import RunContext
from harness.host import get_host
from harness.nn import VisionTransformer
from harness.numerics.backend import EXACT
from harness_plugins.mnist_vit import MnistVit, MnistVitConfig

SMOKE = dict(get_host().spec("workload", "mnist_vit").smoke)


def test_smoke_build_evaluate_trace(tmp_path):
    w = MnistVit(MnistVitConfig(**SMOKE))
    ctx = RunContext(seed=0, cache_dir=tmp_path)
    s = w.build(ctx)
    assert isinstance(s.model, VisionTransformer)
    acc = w.evaluate(s, EXACT, ctx)["accuracy"]
    assert 0.15 < acc <= 1.0
    trace = w.op_trace(s)
    names = [op.name for op in trace]
    assert "blocks.1.attn.qk" in names and "blocks.1.attn.av" in names
    maps = s.model.attention_maps(s.data.x_val[:3])
    assert len(maps) == 2 and maps[0].shape == (3, 4, 17, 17)
    np.testing.assert_allclose(maps[0].sum(-1), 1.0, rtol=1e-5)
    # CP-ViT style: drop half the patches after block 0, heads after that are still live
    s.model.token_policy = lambda i, attn, keep: np.where(np.arange(17) % 2 == 0, 1.0, 0.0)[None].repeat(len(keep), 0)
    pruned = s.op_trace()
    qk = {op.name: op for op in pruned}["blocks.1.attn.qk"]
    assert qk.input_density == pytest.approx((9 / 17) ** 2, rel=1e-5)
    assert pruned.nonzero_macs < trace.nonzero_macs


def test_bad_patch_names_the_valid_ones():
    with pytest.raises(ValueError, match="patch=5"):
        MnistVit(MnistVitConfig(patch=5))


@pytest.mark.slow
def test_default_config_reaches_90_percent(tmp_path):
    w = MnistVit(MnistVitConfig())
    ctx = RunContext(seed=0, cache_dir=tmp_path)
    start = time.perf_counter()
    s = w.build(ctx)
    seconds = time.perf_counter() - start
    acc = w.evaluate(s, EXACT, ctx)["accuracy"]
    print(f"mnist_vit: test accuracy {acc:.4f}, build {seconds:.1f} s")
    assert acc >= 0.90
