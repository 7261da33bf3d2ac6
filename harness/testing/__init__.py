"""The conformance kit: checks any plugin author runs in their own test suite.

Usage in a plugin's tests (pytest)::

    from harness.testing import check_plugin

    def test_my_accelerator_conforms():
        check_plugin("accelerator", "my_accel")

or, to get the fixture :func:`harness_conformance`, add
``pytest_plugins = ["harness.testing"]`` to your ``conftest.py``.

What is checked, per kind (each failure is an ``AssertionError`` saying what is
wrong and what the contract wants):

* every spec: it validates (:func:`harness.specs.validate_spec`); its config
  builds from defaults and with its ``smoke`` overrides, and both are valid by the
  config's declared ``valid(...)`` metadata (:mod:`harness.validation`), which is
  well-formed; its factory accepts the config; claims name metrics with a stage
  prefix and a paper is given;
* accelerators: ``numerics`` is ``None`` or a backend that, bound to a run seed
  and called with a ``GemmCall`` (contract v2; a v1 ``matmul(a, b)`` backend gets a
  ``ContractWarning``), returns the right shape, finite values, float32 for float
  operands, the same result for a fresh instance with the same config and seed,
  and, with ``prepare_weight``, prepares a weight once and gives the same result
  as preparing it inline; an ``observe()`` method returns finite metrics and
  forgets them; ``cost`` of a small trace (GEMM, attention,
  decode-attention and elementwise ops, weight values, a trace attribute it does
  not know) is a dict of finite numbers; its smoke run composes it with
  ``dot_products``, or with the first installed workload that provides what it
  ``needs``;
* workloads: with the smoke config, ``build``, ``evaluate`` (exact numerics) and
  ``op_trace`` work and give finite metrics and a non-empty trace; the subject is
  of the ``subject:`` kind the spec provides, and a workload that provides
  ``weight_values`` has them in its trace; a workload whose optional data
  package is not installed (``harness.data.MissingDataError``) is skipped;
* techniques: composed with their ``smoke_workload`` (which must provide what
  the technique ``needs``) and ``exact``, a full run finishes (via
  :func:`harness.runner.run_experiment`), twice with the same seed gives the same
  metrics (``perf/`` wall-clock metrics excepted), and with ``cache_result`` a
  second run reuses the cached result with the same metrics.
* training GEMMs (a technique's ``subject.train(..., gemm=g)``):
  :func:`check_training_gemm` trains tiny models through ``g`` and checks calls,
  shapes, finiteness, that every role of every op arrives, and reproducibility.
* subjects (:mod:`harness.subjects`): :func:`check_subject` checks a subject
  against its family's protocol and promises; :func:`check_workload_object` builds
  a workload object twice and checks it (instances: :mod:`harness.testing.toy_workloads`).

Everything runs in-process on the real host: no mocks, no tracking store.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import replace
from typing import Any

import numpy as np

from harness.data import MissingDataError
from harness.host import Host, get_host
from harness.optrace import Op, OpTrace, WeightValues
from harness.specs import AcceleratorSpec, PluginSpec, TechniqueSpec, WorkloadSpec, validate_spec
from harness.testing.subject_checks import check_subject, check_workload_object

__all__ = [
    "check_accelerator",
    "check_plugin",
    "check_spec",
    "check_subject",
    "check_technique",
    "check_training_gemm",
    "check_workload",
    "check_workload_object",
    "harness_conformance",
    "smoke_config",
    "smoke_run",
]

_SMALL_TRACE = OpTrace(
    (
        Op("fc", m=4, k=16, n=8, weight_bits=8, input_bits=8),
        Op("attn_qk", m=4, k=8, n=4, has_weights=False, kind="attention", input_density=0.5),
        Op("decode_qk", m=1, k=8, n=64, count=2, kind="decode_attention", kv_cache_bytes=2048, input_bits=16),
        Op("gelu", kind="elementwise", elements=32),
    ),
    {"fc": WeightValues(np.linspace(-1, 1, 16 * 8, dtype=np.float32).reshape(16, 8), bits=8)},
    attrs={"conformance.unknown": "a cost model ignores trace attributes it does not know"},
)


def smoke_config(spec: PluginSpec) -> Any:
    """The spec's config with its smoke overrides applied."""
    return replace(spec.config(), **dict(spec.smoke))


def _finite_dict(result: Any, what: str) -> dict[str, float]:
    assert isinstance(result, dict), f"{what} must return a dict of metrics, got {type(result).__name__}"
    bad = {k: v for k, v in result.items() if not isinstance(v, (int, float)) or not math.isfinite(float(v))}
    assert not bad, f"{what} returned non-finite or non-numeric values: {bad}"
    return result


def check_spec(spec: PluginSpec) -> None:
    """Contract checks common to every kind, including the config's declared valid values:
    the ``valid(...)`` metadata is well-formed, and the defaults and the smoke overrides
    are valid by it (the runner refuses a config that is not, before anything runs)."""
    from harness.validation import ConfigError, metadata_problems, validate_config

    validate_spec(spec)
    for field_name in ("needs", "provides"):
        names = getattr(spec, field_name)
        assert isinstance(names, frozenset) and all(isinstance(n, str) for n in names), (
            f"{spec.kind} {spec.name!r}: {field_name} must be a set of capability names, got {names!r}"
        )
    malformed = metadata_problems(spec.config)
    assert not malformed, f"{spec.kind} {spec.name!r}: malformed valid(...) metadata: {'; '.join(malformed)}"
    config = spec.config()
    for what, instance in (("default config", config), ("smoke config", smoke_config(spec))):
        try:
            validate_config(instance, spec.kind, spec.name)
        except ConfigError as exc:
            raise AssertionError(f"{spec.kind} {spec.name!r}: its {what} is not valid by its own metadata: {exc}") from None
    obj = spec.factory(config)
    assert obj is not None, f"{spec.kind} {spec.name!r}: factory returned None"
    if spec.paper is not None:
        for field_name in ("title", "authors", "venue"):
            assert getattr(spec.paper, field_name).strip(), f"{spec.name!r}: paper.{field_name} is empty"


def check_accelerator(spec: AcceleratorSpec) -> None:
    check_spec(spec)
    config = smoke_config(spec)
    accel = spec.factory(config)
    assert hasattr(accel, "numerics"), f"accelerator {spec.name!r} needs a 'numerics' attribute (a backend or None)"
    numerics = accel.numerics
    if numerics is not None:
        assert isinstance(getattr(numerics, "name", None), str), f"{spec.name!r}: numerics.name must be a str"
        rng = np.random.default_rng(0)
        a_int = rng.integers(-128, 128, (6, 32)).astype(np.int32)
        b_int = rng.integers(-128, 128, (32, 5)).astype(np.int32)
        a_f = rng.standard_normal((6, 32)).astype(np.float32)
        b_f = rng.standard_normal((32, 5)).astype(np.float32)
        _check_numerics(spec, config, numerics, a_int, b_int, a_f, b_f)
    with tempfile.TemporaryDirectory() as tmp:
        from harness.api import RunContext

        cost = _finite_dict(accel.cost(_SMALL_TRACE, RunContext(0, tmp)), f"{spec.name!r}.cost")
    assert cost, f"accelerator {spec.name!r}: cost() returned no metrics"


def _check_numerics(spec, config, numerics, a_int, b_int, a_f, b_f) -> None:
    """The backend contract v2 (``harness/numerics/backend.py``), through a bound backend
    as the runner uses it: shapes, dtypes, finiteness, reproducibility from the run's
    seed, and that a prepared weight gives what inline preparation gives."""
    from harness.numerics.backend import GemmCall, bind, derive_seed, weight_cache

    bound = bind(numerics, seed=7)  # a v1 backend gets a ContractWarning here
    for a, b, kind in ((a_int, b_int, "integer"), (a_f, b_f, "float")):
        bits = 8 if kind == "integer" else 0
        call = GemmCall(op="fc", weight_stationary=True, a_bits=bits, b_bits=bits)
        out = np.asarray(bound.matmul(a, b, call))
        assert out.shape == (6, 5), f"{spec.name!r}: {kind} matmul returned shape {out.shape}, expected (6, 5)"
        assert np.all(np.isfinite(out)), f"{spec.name!r}: {kind} matmul returned non-finite values"
        if kind == "float":
            assert out.dtype == np.float32, f"{spec.name!r}: float matmul must return float32, got {out.dtype}"
        again = np.asarray(bind(spec.factory(config).numerics, seed=7).matmul(a, b, call))
        assert np.array_equal(out, again), (
            f"{spec.name!r}: {kind} matmul differs between two instances with one config and run seed; "
            "draw randomness from call.seed (or a seed in the config)"
        )
        _check_observe(spec, numerics)
        if bound.v1 or not hasattr(numerics, "prepare_weight"):
            continue
        before = weight_cache(numerics).prepared
        repeat = np.asarray(bound.matmul(a, b, call))
        assert weight_cache(numerics).prepared == before, (
            f"{spec.name!r}: prepare_weight ran again for a weight already prepared"
        )
        assert np.array_equal(out, repeat), f"{spec.name!r}: a cached prepared weight changed the {kind} result"
        fresh = spec.factory(config).numerics
        seeded = replace(call, seed=derive_seed(7, "fc", "inference"))  # what the bound backend gave it
        inline = np.asarray(fresh.matmul(a, b, replace(seeded, prepared=fresh.prepare_weight(b, seeded))))
        assert np.array_equal(out, inline), (
            f"{spec.name!r}: the {kind} result with a prepared weight differs from preparing it for this call"
        )


def _check_observe(spec, numerics) -> None:
    """The optional ``observe()``: a dict of finite numbers with metric names, and a
    second call right away has nothing new to report but what the first forgot."""
    observe = getattr(numerics, "observe", None)
    if observe is None:
        return
    assert callable(observe), f"{spec.name!r}: numerics.observe must be a method"
    seen = _finite_dict(observe() or {}, f"{spec.name!r}.numerics.observe()")
    bad = [k for k in seen if not isinstance(k, str) or ("/" in k and not k.startswith("numerics/"))]
    assert not bad, f"{spec.name!r}: observe() keys must be bare names or 'numerics/...', got {bad}"
    again = observe() or {}
    assert not (seen and again == seen), (
        f"{spec.name!r}: observe() must forget what it returned (a second call repeated {sorted(seen)})"
    )


def check_workload(spec: WorkloadSpec) -> None:
    check_spec(spec)
    from harness.api import RunContext
    from harness.numerics.backend import EXACT

    workload = spec.factory(smoke_config(spec))
    with tempfile.TemporaryDirectory() as tmp:
        ctx = RunContext(0, tmp)
        try:
            subject = workload.build(ctx)
        except MissingDataError as exc:
            _skip(f"workload {spec.name!r} needs optional data: {exc}")
        quality = _finite_dict(workload.evaluate(subject, EXACT, ctx), f"{spec.name!r}.evaluate")
        assert quality, f"workload {spec.name!r}: evaluate() returned no metrics"
        trace = workload.op_trace(subject)
    assert isinstance(trace, OpTrace) and len(trace) > 0, f"workload {spec.name!r}: op_trace() must be a non-empty OpTrace"
    for capability in sorted(spec.provides):
        if capability.startswith("subject:"):
            check_subject(capability, subject)  # it builds the kind of subject it declares
    if "weight_values" in spec.provides:
        weighted = [op.name for op in trace if op.has_weights]
        assert weighted and all(trace.weight_values(name) is not None for name in weighted), (
            f"workload {spec.name!r} provides weight_values, but its op trace has none for {weighted}"
        )


def smoke_run(kind: str, name: str, host: Host | None = None, seed: int = 0, cache_dir: str | None = None):
    """Run ``name`` in a fast composition and return the record (a fresh cache unless
    ``cache_dir`` is given)."""
    from harness.runner import run_experiment

    host = host or get_host()
    spec = host.spec(kind, name)
    choices = {"workload": "dot_products", "technique": "none", "accelerator": "exact"}
    if kind == "technique":
        choices["workload"] = spec.smoke_workload
    elif kind == "accelerator" and spec.needs:  # the first workload that provides what it needs
        providers = [w for w in host.names("workload") if spec.needs <= host.spec("workload", w).provides]
        choices["workload"] = providers[0] if providers else choices["workload"]
    choices[kind] = name
    values = {k: dict(host.spec(k, v).smoke) for k, v in choices.items()}
    if cache_dir is not None:
        return run_experiment(choices, values, seed=seed, cache_dir=cache_dir, host=host)
    with tempfile.TemporaryDirectory() as tmp:
        return run_experiment(choices, values, seed=seed, cache_dir=tmp, host=host)


def _skip(reason: str) -> None:
    """Skip under pytest (optional data absent is not a failure); raise elsewhere."""
    try:
        import pytest
    except ImportError:  # pragma: no cover
        raise MissingDataError(reason) from None
    pytest.skip(reason)


def _seeded(metrics: dict[str, float]) -> dict[str, float]:
    """Metrics the seed determines: all but wall-clock measurements under ``perf/``."""
    return {k: v for k, v in metrics.items() if not k.startswith("perf/")}


def check_technique(spec: TechniqueSpec, host: Host | None = None) -> None:
    check_spec(spec)
    host = host or get_host()
    assert spec.smoke_workload in host.names("workload"), (
        f"technique {spec.name!r}: smoke_workload {spec.smoke_workload!r} is not installed; "
        f"installed: {', '.join(host.names('workload'))}"
    )
    from harness.runner import check_capabilities
    from harness.specs import CapabilityError

    chosen = [host.info("workload", spec.smoke_workload), host.info("accelerator", "exact")]
    chosen.append(replace(chosen[0], spec=spec))  # the technique as given, which may not be installed yet
    try:
        check_capabilities(chosen, host)
    except CapabilityError as exc:
        raise AssertionError(f"technique {spec.name!r}: its smoke_workload cannot run it: {exc}") from None
    first = smoke_run("technique", spec.name, host)
    assert first.status == "FINISHED", f"technique {spec.name!r} smoke run failed: {first.error}"
    second = smoke_run("technique", spec.name, host)
    assert _seeded(first.metrics) == _seeded(second.metrics), (
        f"technique {spec.name!r}: same seed gave different metrics "
        "(only wall-clock metrics under perf/ may differ)"
    )
    if spec.cache_result:  # its result is reused across accelerators: it must replay exactly
        with tempfile.TemporaryDirectory() as tmp:
            computed = smoke_run("technique", spec.name, host, cache_dir=tmp)
            replayed = smoke_run("technique", spec.name, host, cache_dir=tmp)
        assert replayed.tags.get("harness.technique_cache") == "hit", (
            f"technique {spec.name!r}: a second run with the same cache did not reuse the technique's result "
            f"({replayed.error or 'no error'})"
        )
        assert _seeded(computed.metrics) == _seeded(replayed.metrics), (
            f"technique {spec.name!r}: the cached result gave other metrics than computing it; set "
            "cache_result=False in its spec if its result cannot be reused"
        )


def _tiny_models():
    """A CNN (Conv2d, BatchNorm, pooling, Dense) and a one-block ViT, small enough for a step in ms."""
    from harness.nn import BatchNorm, Conv2d, Dense, Flatten, MaxPool2d, ReLU, Sequential, VisionTransformer

    rng = np.random.default_rng(0)
    cnn = Sequential(
        [Conv2d("conv", 1, 3, 3, rng, padding=1), BatchNorm("bn", 3), ReLU("relu"), MaxPool2d("pool", 2),
         Flatten("flat"), Dense("fc", 2 * 2 * 3, 3, rng)],
        (4, 4, 1), 3,
    )
    vit = VisionTransformer(image=4, patch=2, dim=8, depth=1, heads=2, mlp_dim=8, num_classes=3, rng=rng)
    return {"cnn": cnn, "vit": vit}


def check_training_gemm(gemm: Any, deterministic: bool = True) -> None:
    """Train a tiny CNN and a tiny ViT for two steps through the training GEMM ``gemm``.

    Checks that every call gets a :class:`~harness.numerics.GemmCall` with a
    training role and a seed; returns the ``(M, N)`` shape with finite values and
    leaves its operands untouched (layers keep them for backward); that every
    weight layer and attention product is seen in all three roles; that the
    trained weights are finite; and, with ``deterministic``, that a second run
    with the same seed gives identical weights (draw randomness from ``call.seed``).
    """
    from harness.nn import TrainConfig, fit
    from harness.numerics.backend import GemmCall

    name = getattr(gemm, "name", type(gemm).__name__)
    seen: set[tuple[str, str]] = set()

    class Checked:
        def matmul(self, a, b, call):
            assert isinstance(call, GemmCall), f"training GEMM {name!r}: call must be a GemmCall, got {call!r}"
            assert call.role in ("forward", "grad_input", "grad_weight") and call.seed is not None, (
                f"training GEMM {name!r}: got {call!r}, expected a training role and a seed"
            )
            a0, b0 = a.copy(), b.copy()
            out = np.asarray(gemm.matmul(a, b, call))
            where = f"training GEMM {name!r}, op {call.op!r} role {call.role!r}"
            assert out.shape == (a.shape[0], b.shape[1]), (
                f"{where}: returned shape {out.shape} for {a.shape} @ {b.shape}; return the full (M, N) result "
                "(zeros where work is skipped)"
            )
            assert np.all(np.isfinite(out)), f"{where}: returned non-finite values"
            assert np.array_equal(a, a0) and np.array_equal(b, b0), f"{where}: modified its operands in place"
            seen.add((call.op, call.role))
            return out

    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 4, 4, 1)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    cfg = TrainConfig(epochs=1, batch_size=4, lr=0.01)
    for kind, model in _tiny_models().items():
        fit(model, (x, y), None, cfg, seed=0, gemm=Checked())
        state = model.state_dict()
        bad = [k for k, v in state.items() if not np.all(np.isfinite(v))]
        assert not bad, f"training GEMM {name!r}: the {kind}'s parameters {bad} are not finite after two steps"
        ops = [layer.name for layer in model.layers() if type(layer).__name__ in ("Dense", "Conv2d")]
        ops += [f"{layer.name}.{p}" for layer in model.layers() if type(layer).__name__ == "MultiHeadSelfAttention"
                for p in ("qk", "av")]
        missing = sorted({(op, role) for op in ops for role in ("forward", "grad_input", "grad_weight")} - seen)
        assert not missing, f"training GEMM {name!r}: the {kind} never called it for {missing}"
        if deterministic:
            again = _tiny_models()[kind]
            fit(again, (x, y), None, cfg, seed=0, gemm=gemm)
            diff = [k for k, v in again.state_dict().items() if not np.array_equal(v, state[k])]
            assert not diff, (
                f"training GEMM {name!r}: the same seed gave different {kind} weights ({diff}); "
                "draw randomness from call.seed (or pass deterministic=False for a GEMM with learned state)"
            )


def check_plugin(kind: str, name: str, host: Host | None = None) -> None:
    """Run every check for the installed plugin ``name`` of ``kind``."""
    host = host or get_host()
    spec = host.spec(kind, name)
    if kind == "accelerator":
        check_accelerator(spec)
        record = smoke_run(kind, name, host)
        assert record.status == "FINISHED", f"accelerator {name!r} smoke run failed: {record.error}"
    elif kind == "workload":
        check_workload(spec)
        record = smoke_run(kind, name, host)
        assert record.status == "FINISHED", f"workload {name!r} smoke run failed: {record.error}"
        if "eval/accuracy" in record.metrics:  # the runner's drop metric, 0 on exact numerics
            assert record.metrics.get("eval/accuracy_drop_points") == 0.0, (
                f"workload {name!r}: a run on exact numerics should log eval/accuracy_drop_points = 0, got "
                f"{record.metrics.get('eval/accuracy_drop_points')}"
            )
    elif kind == "technique":
        check_technique(spec, host)
    else:
        raise ValueError(f"unknown kind {kind!r}; valid: workload, technique, accelerator")


try:  # the fixture, for `pytest_plugins = ["harness.testing"]`
    import pytest

    @pytest.fixture
    def harness_conformance():
        """``harness_conformance(kind, name)`` runs :func:`check_plugin`."""
        return check_plugin

except ImportError:  # pragma: no cover - pytest is only needed to use the fixture
    pass
