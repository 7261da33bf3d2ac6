"""Conformance checks for subjects (:mod:`harness.subjects`) and workload objects.

:func:`check_subject` checks that a subject has every member of its family's
protocol and that those members keep their promises on a small sample (shapes,
exact evaluation deterministic, masks that mask, a trace consistent with the
subject). :func:`check_workload_object` builds a workload twice from one seed and
checks the subject, exact evaluation and the op trace. Both raise
``AssertionError`` naming what is wrong. Checks that change a subject work on
``subject.copy()``.
"""

from __future__ import annotations

import math
import tempfile
from typing import Any

import numpy as np

from harness.numerics.backend import EXACT
from harness.optrace import KINDS, OpTrace
from harness.subjects import Approximator, DecoderDims, FAMILIES, missing_members, protocol_for

__all__ = ["check_subject", "check_workload_object"]


def _metrics(result: Any, what: str) -> dict[str, float]:
    assert isinstance(result, dict) and result, f"{what} must return a non-empty dict of metrics, got {result!r}"
    bad = {k: v for k, v in result.items() if not isinstance(v, (int, float)) or not math.isfinite(float(v))}
    assert not bad, f"{what} returned non-finite or non-numeric values: {bad}"
    return result


def _trace(trace: Any, what: str) -> OpTrace:
    assert isinstance(trace, OpTrace) and len(trace) > 0, f"{what}: op_trace() must be a non-empty OpTrace, got {trace!r}"
    assert all(op.kind in KINDS for op in trace), f"{what}: op kinds must be among {KINDS}"
    return trace


def _deterministic(fn, what: str) -> dict[str, float]:
    first = _metrics(fn(), what)
    assert fn() == first, f"{what} gave different metrics twice with EXACT; draw randomness from the run seed"
    return first


def _check_weighted(subject: Any, what: str) -> None:
    weights = subject.weights()
    assert isinstance(weights, dict) and weights, f"{what}: weights() must be a non-empty dict"
    assert set(subject.masks()) == set(weights), f"{what}: masks() must have the keys of weights()"
    density = subject.density()
    assert set(density) == set(weights) and all(0.0 <= d <= 1.0 for d in density.values()), (
        f"{what}: density() must give a fraction in [0, 1] per weight, got {density}"
    )
    if hasattr(subject, "copy"):
        name = next(iter(weights))
        other = subject.copy()
        other.set_mask(name, np.zeros_like(weights[name]))
        assert other.density()[name] == 0.0, f"{what}: an all-zero mask on {name!r} must give density 0"
        assert subject.density()[name] == density[name], f"{what}: copy() must be independent (set_mask leaked)"


def _check_pixel(s: Any, what: str) -> None:
    lr, hr = s.data("test")
    assert lr.ndim == 4 and hr.shape == (lr.shape[0], lr.shape[1] * s.scale, lr.shape[2] * s.scale, lr.shape[3]), (
        f"{what}: data('test') must give (B,H,W,C) and (B,sH,sW,C) with s={s.scale}, got {lr.shape}, {hr.shape}"
    )
    x = lr[:2]
    y = s.forward(x, EXACT)
    assert y.shape == hr[:2].shape and np.all(np.isfinite(y)), f"{what}: forward gave {y.shape}, expected {hr[:2].shape}"
    maps = s.feature_maps(x, EXACT)
    assert maps and all(f.ndim == 4 and f.shape[:3] == x.shape[:3] for f in maps.values()), (
        f"{what}: feature_maps must give (B,H,W,F) per layer, got {({k: v.shape for k, v in maps.items()})}"
    )
    metrics = _deterministic(lambda: s.evaluate(EXACT, "test"), f"{what}.evaluate")
    assert "psnr" in metrics, f"{what}: evaluate must report 'psnr', got {sorted(metrics)}"
    rows = s.copy().train(1)
    assert rows and all(math.isfinite(r["loss"]) for r in rows), f"{what}: train(1) must return rows with a finite loss"
    _check_weighted(s, what)


def _check_kernel(s: Any, what: str) -> None:
    x, y = s.data("test")
    assert np.allclose(s.exact(x), y), f"{what}: data('test') outputs must be exact(inputs)"
    assert tuple(s.topology)[0] == x.shape[1] and tuple(s.topology)[-1] == y.shape[1], (
        f"{what}: topology {s.topology} must start at d_in={x.shape[1]} and end at d_out={y.shape[1]}"
    )
    err = s.error(y, y)
    assert err.shape == (len(x),) and np.all(err == 0), f"{what}: error(y, y) must be zeros of shape (N,)"
    assert s.bound > 0, f"{what}: bound must be > 0, got {s.bound}"
    exact = s.evaluate(approx=s.exact)
    assert exact["error"] == 0 and exact["within_bound"] == 1 and exact["invocation"] == 1, (
        f"{what}: the exact function as approximation must have error 0 and be within bound, got {exact}"
    )
    _deterministic(lambda: s.evaluate(backend=EXACT), f"{what}.evaluate")
    assert isinstance(s.approximator, Approximator), f"{what}: approximator must be callable(x, backend) with op_trace()"


def _check_serving(s: Any, what: str) -> None:
    d = s.model
    assert isinstance(d, DecoderDims), f"{what}: model must be a harness.subjects.DecoderDims, got {type(d).__name__}"
    lengths = np.asarray(s.context_lengths)
    assert lengths.ndim == 1 and len(lengths) and np.all(lengths >= 1), f"{what}: context_lengths must be (B,) >= 1"
    trace = _trace(s.op_trace(), what)
    assert s.op_trace() == trace, f"{what}: op_trace() must be deterministic"
    attn = [op for op in trace if op.kind == "decode_attention"]
    assert len(attn) == d.layers * len(lengths), (
        f"{what}: expected one decode_attention op per layer and request ({d.layers * len(lengths)}), got {len(attn)}"
    )
    kv = sum(op.kv_cache_bytes for op in attn)
    assert abs(kv - s.kv_cache_bytes()) <= len(attn), f"{what}: trace KV bytes {kv} != kv_cache_bytes() {s.kv_cache_bytes()}"
    assert s.kv_bytes_per_token() == d.kv_bytes_per_token, f"{what}: kv_bytes_per_token() disagrees with model"
    gemms = [op for op in trace if op.kind == "gemm"]
    assert gemms and all(op.m == len(lengths) for op in gemms), f"{what}: every weight GEMM must have m = batch size"
    wbytes = sum(op.weight_bytes for op in gemms)
    assert math.isclose(wbytes, s.weight_bytes()), f"{what}: trace weight bytes {wbytes} != weight_bytes() {s.weight_bytes()}"
    policy = trace.attrs.get("serving.batch_policy", "fixed")
    assert policy in ("fixed", "fit"), f"{what}: trace attribute serving.batch_policy={policy!r}; valid: fixed, fit"
    chunk = trace.attrs.get("serving.prefill_chunk", 0)
    assert isinstance(chunk, int) and chunk >= 0, f"{what}: serving.prefill_chunk must be an int >= 0, got {chunk!r}"


def _check_points(s: Any, what: str) -> None:
    points, features, labels = s.data("test")
    assert points.ndim == 3 and points.shape[2] == 3, f"{what}: points must be (B,N,3), got {points.shape}"
    assert features is None or features.shape[:2] == points.shape[:2], f"{what}: features must be (B,N,C)"
    assert labels.shape == (len(points),) and 0 <= labels.min() and labels.max() < s.num_classes, (
        f"{what}: labels must be (B,) in 0..num_classes-1"
    )
    k = min(4, points.shape[1])
    idx = s.neighbors(points[:2], k)
    assert idx.shape == (2, points.shape[1], k), f"{what}: neighbors(points, {k}) gave {idx.shape}"
    gathered = np.take_along_axis(points[:2, None, :, :], idx[..., None], axis=2)
    dist = np.linalg.norm(gathered - points[:2, :, None, :], axis=-1)
    assert np.all(dist[..., 0] == 0) and np.all(np.diff(dist, axis=-1) >= -1e-7), (
        f"{what}: neighbors must list each point itself first, then increasing distance"
    )
    logits = s.logits(points[:2], None if features is None else features[:2], EXACT)
    assert logits.shape == (2, s.num_classes) and np.all(np.isfinite(logits)), f"{what}: logits gave {logits.shape}"
    metrics = _deterministic(lambda: s.evaluate(EXACT, "test"), f"{what}.evaluate")
    assert 0.0 <= metrics.get("accuracy", -1.0) <= 1.0, f"{what}: evaluate must report an accuracy in [0, 1]"
    _check_weighted(s, what)


def _check_model(s: Any, what: str) -> None:
    first = s.evaluate(EXACT, "test")
    assert 0.0 <= first <= 1.0 and s.evaluate(EXACT, "test") == first, f"{what}: evaluate must be a deterministic accuracy"
    _check_weighted(s, what)


def _check_gemms(s: Any, what: str) -> None:
    assert s.operands, f"{what}: operands must not be empty"
    for op, (a, b) in s.operands.items():
        assert a.ndim == 2 and b.ndim == 2 and a.shape[1] == b.shape[0], (
            f"{what}: operands[{op!r}] must be (M,K) and (K,N), got {a.shape} and {b.shape}"
        )


_CHECKS = {
    "model": _check_model,
    "gemms": _check_gemms,
    "pixel": _check_pixel,
    "kernel": _check_kernel,
    "serving": _check_serving,
    "points": _check_points,
}


def check_subject(family: str, subject: Any) -> None:
    """Check that ``subject`` keeps the promises of ``family`` (``"pixel"`` or ``"subject:pixel"``)."""
    proto = protocol_for(family)
    name = family.split(":", 1)[-1]
    what = f"{type(subject).__name__} (subject:{name})"
    missing = missing_members(subject, name)
    assert not missing, f"{what} lacks {', '.join(missing)} of {proto.__module__}.{proto.__qualname__}"
    assert isinstance(subject, proto), f"{what} is not a {proto.__qualname__}"
    _CHECKS[name](subject, what)
    if name not in ("serving", "gemms"):
        _trace(subject.op_trace(), what)


def check_workload_object(workload: Any, family: str | None = None, seed: int = 0) -> Any:
    """Build ``workload`` twice from ``seed``; check the subject against ``family``
    (default ``workload.family``), that exact evaluation is finite and the same for
    both builds and that both op traces agree. Returns the first subject."""
    from harness.api import RunContext, Workload

    family = family or getattr(workload, "family", None)
    assert family in FAMILIES, f"{type(workload).__name__}: name its family (one of {', '.join(FAMILIES)})"
    assert isinstance(workload, Workload), f"{type(workload).__name__} needs build, evaluate and op_trace"
    results = []
    for _ in range(2):
        with tempfile.TemporaryDirectory() as tmp:
            ctx = RunContext(seed, tmp)
            subject = workload.build(ctx)
            metrics = _metrics(workload.evaluate(subject, EXACT, ctx), f"{type(workload).__name__}.evaluate")
            results.append((subject, metrics, _trace(workload.op_trace(subject), type(workload).__name__)))
    (subject, metrics, trace), (_, metrics2, trace2) = results
    assert metrics == metrics2, f"{type(workload).__name__}: two builds with seed {seed} evaluate differently"
    assert trace == trace2, f"{type(workload).__name__}: two builds with seed {seed} give different op traces"
    check_subject(family, subject)
    return subject
