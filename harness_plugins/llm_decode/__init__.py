"""``llm_decode``: one decode iteration of an LLM serving batch, as shapes and bytes.

The subject (``subject:serving``, :class:`harness.subjects.ServingSubject`) is a
batch of requests of one model (:data:`MODELS`, published dimensions) whose
context lengths are drawn from a lognormal distribution with mean
``context_mean`` (``mu = ln(mean) - sigma^2 / 2``), clipped to
``[context_min, context_max]``; the run's seed decides the draw. Its op trace
lists, per layer, the QKV, output-projection and FFN GEMMs with ``m = batch`` and
one ``decode_attention`` op per request with that request's KV-cache bytes, then
the LM head. Nothing is computed on numbers: ``evaluate`` reports the trace's
work and memory (``workload/*``), not an accuracy.

Batch and prefill, as trace attributes (:mod:`harness.optrace`) for the cost model:

* ``batch > 0``: exactly that many requests (``serving.batch_policy = "fixed"``);
  a system whose memory holds fewer serves as many as fit and reports
  ``accelerator/fits = 0``.
* ``batch = 0``: "as many as fit" (``"fit"``): the trace lists ``requests``
  requests drawn from the distribution as a sample, and each system admits as many
  requests like them as its KV capacity holds.
* ``prefill_chunk``: prefill tokens of newly admitted requests piggybacked on every
  decode iteration through the same GEMMs (chunked prefill, Sarathi-style);
  ``serving.prefill_chunk``. 0 (default) is a pure decode iteration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from harness import hookimpl
from harness.optrace import Op, OpTrace
from harness.specs import WorkloadSpec
from harness.subjects import DecoderDims
from harness.validation import valid

#: Published dimensions. LLaMA: Touvron et al., "LLaMA: Open and Efficient Foundation
#: Language Models", arXiv 2302.13971, Table 2 (SwiGLU FFN of 2/3 * 4d rounded, as in
#: the released configs; vocabulary 32,000). GPT-3: Brown et al., "Language Models are
#: Few-Shot Learners", arXiv 2005.14165, Table 2.1 (FFN 4d; vocabulary 50,257).
MODELS: dict[str, DecoderDims] = {
    "llama_7b": DecoderDims(layers=32, d_model=4096, heads=32, kv_heads=32, ffn=11008, vocab=32000, gated_ffn=True),
    "llama_13b": DecoderDims(layers=40, d_model=5120, heads=40, kv_heads=40, ffn=13824, vocab=32000, gated_ffn=True),
    "llama_33b": DecoderDims(layers=60, d_model=6656, heads=52, kv_heads=52, ffn=17920, vocab=32000, gated_ffn=True),
    "llama_65b": DecoderDims(layers=80, d_model=8192, heads=64, kv_heads=64, ffn=22016, vocab=32000, gated_ffn=True),
    "gpt3_175b": DecoderDims(layers=96, d_model=12288, heads=96, kv_heads=96, ffn=49152, vocab=50257),
}

_CONTEXT = "tokens already in a request's KV cache"


@dataclass
class LlmDecodeConfig:
    """A serving batch; defaults: LLaMA-7B, mean context 4K, as many requests as fit."""

    model: str = field(default="llama_7b", metadata=valid(one_of=tuple(MODELS)))
    context_mean: int = field(default=4096, metadata=valid(ge=16, le=1 << 20, why=_CONTEXT))
    #: sigma of ln(context); 0 puts every request at exactly context_mean.
    context_sigma: float = field(default=0.5, metadata=valid(ge=0, le=3))
    context_min: int = field(default=128, metadata=valid(ge=1, le=1 << 20))
    context_max: int = field(default=131072, metadata=valid(ge=1, le=1 << 20))
    #: requests decoded together; 0 = as many as the system's memory holds.
    batch: int = field(default=0, metadata=valid(ge=0, le=65536))
    #: requests listed in the trace as the sample of the distribution when batch = 0.
    requests: int = field(default=32, metadata=valid(ge=1, le=4096))
    prefill_chunk: int = field(default=0, metadata=valid(ge=0, le=1 << 20, why="prefill tokens per iteration"))
    kv_bits: int = field(default=16, metadata=valid(one_of=(4, 8, 16, 32), why="KV-cache storage precision"))

    def __validate__(self):
        if self.context_min > self.context_max:
            yield "context_min", f"{self.context_min} is above context_max={self.context_max}"


@dataclass
class DecodeRequests:
    """One decode iteration of a batch (:class:`harness.subjects.ServingSubject`)."""

    model: DecoderDims
    context_lengths: np.ndarray
    policy: str = "fit"
    prefill_chunk: int = 0

    def weight_bytes(self) -> float:
        return self.model.weight_bytes

    def kv_bytes_per_token(self) -> float:
        return self.model.kv_bytes_per_token

    def kv_cache_bytes(self) -> float:
        return self.model.kv_bytes_per_token * float(np.sum(self.context_lengths))

    def op_trace(self) -> OpTrace:
        d = self.model
        batch = len(self.context_lengths)
        ab, wb = d.act_bits, d.weight_bits
        q_bytes = d.heads * d.head_dim * ab / 8
        lengths = [int(n) for n in self.context_lengths]
        ops: list[Op] = []

        def weighted(name: str, k: int, n: int) -> None:
            ops.append(Op(name, m=batch, k=k, n=n, weight_bits=wb, input_bits=ab, output_bits=ab))

        for i in range(d.layers):
            weighted(f"layer{i}.qkv", d.d_model, (d.heads + 2 * d.kv_heads) * d.head_dim)
            for r, length in enumerate(lengths):
                ops.append(Op(
                    f"layer{i}.attn.r{r}", kind="decode_attention", m=1, k=d.head_dim, n=length,
                    count=2 * d.heads, weight_bits=d.kv_bits, input_bits=ab, output_bits=ab,
                    kv_cache_bytes=(2 * d.kv_heads * d.head_dim * length * d.kv_bits + 7) // 8,
                    input_bytes=q_bytes, output_bytes=q_bytes,
                ))
            weighted(f"layer{i}.proj", d.heads * d.head_dim, d.d_model)
            weighted(f"layer{i}.ffn_up", d.d_model, d.ffn)
            if d.gated_ffn:
                weighted(f"layer{i}.ffn_gate", d.d_model, d.ffn)
            ops.append(Op(f"layer{i}.ffn_act", kind="elementwise", elements=batch * d.ffn,
                          input_bits=ab, output_bits=ab))
            weighted(f"layer{i}.ffn_down", d.ffn, d.d_model)
        if d.vocab:
            weighted("lm_head", d.d_model, d.vocab)
        attrs = {"serving.batch_policy": self.policy, "serving.prefill_chunk": int(self.prefill_chunk)}
        return OpTrace(tuple(ops), attrs=attrs)


class LlmDecode:
    name = "llm_decode"
    family = "serving"

    def __init__(self, config: LlmDecodeConfig):
        self.config = config
        c = config
        self.dims = MODELS[c.model]
        if c.kv_bits != self.dims.kv_bits:
            from dataclasses import replace

            self.dims = replace(self.dims, kv_bits=c.kv_bits)

    def contexts(self, seed: int, count: int) -> np.ndarray:
        """``count`` context lengths from the lognormal of mean ``context_mean``."""
        c = self.config
        rng = np.random.default_rng(seed)
        mu = math.log(c.context_mean) - c.context_sigma**2 / 2
        draw = rng.lognormal(mu, c.context_sigma, count) if c.context_sigma else np.full(count, float(c.context_mean))
        return np.clip(np.rint(draw), c.context_min, c.context_max).astype(np.int64)

    def build(self, ctx) -> DecodeRequests:
        c = self.config
        count = c.batch or c.requests
        lengths = self.contexts(ctx.child_seed(self.name, "contexts"), count)
        return DecodeRequests(self.dims, lengths, "fixed" if c.batch else "fit", c.prefill_chunk)

    def evaluate(self, subject: DecodeRequests, backend, ctx) -> dict[str, float]:
        """The batch's work and memory; there is no accuracy to measure."""
        lengths = subject.context_lengths
        return {
            "workload/mean_context": float(np.mean(lengths)),
            "workload/max_context": float(np.max(lengths)),
            "workload/requests": float(len(lengths)),
            "workload/weights_gb": subject.weight_bytes() / 1e9,
            "workload/kv_cache_gb": subject.kv_cache_bytes() / 1e9,
            "workload/kv_mb_per_token": subject.kv_bytes_per_token() / 1e6,
        }

    def op_trace(self, subject: DecodeRequests) -> OpTrace:
        return subject.op_trace()


@hookimpl
def harness_workloads():
    yield WorkloadSpec(
        name="llm_decode",
        summary="LLM serving decode iteration (LLaMA-7B..65B, GPT-3 175B): GEMMs and per-request KV-cache attention",
        config=LlmDecodeConfig,
        factory=LlmDecode,
        smoke={"requests": 4, "context_mean": 512},
        provides={"subject:serving", "memory_ops"},
        headline=("workload/mean_context", "workload/kv_cache_gb"),
    )
