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
  builds from defaults and with its ``smoke`` overrides; its factory accepts the
  config; claims name metrics with a stage prefix and a paper is given;
* accelerators: ``numerics`` is ``None`` or a backend whose ``matmul`` returns the
  right shape, finite values, float32 for float operands and is deterministic
  for a fresh instance with the same config; ``cost`` of a small trace is a
  dict of finite numbers;
* workloads: with the smoke config, ``build``, ``evaluate`` (exact numerics) and
  ``op_trace`` work and give finite metrics and a non-empty trace; a workload
  whose optional data package is not installed (``harness.data.MissingDataError``)
  is skipped, not failed;
* techniques: composed with their ``smoke_workload`` and ``exact``, a full run
  finishes (via :func:`harness.runner.run_experiment`), and twice with the same
  seed gives the same metrics (``perf/`` wall-clock metrics excepted).

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
from harness.optrace import Op, OpTrace
from harness.specs import AcceleratorSpec, PluginSpec, TechniqueSpec, WorkloadSpec, validate_spec

__all__ = [
    "check_accelerator",
    "check_plugin",
    "check_spec",
    "check_technique",
    "check_workload",
    "harness_conformance",
    "smoke_config",
    "smoke_run",
]

_SMALL_TRACE = OpTrace(
    (
        Op("fc", m=4, k=16, n=8, weight_bits=8, input_bits=8),
        Op("attn_qk", m=4, k=8, n=4, has_weights=False, input_density=0.5),
    )
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
    """Contract checks common to every kind."""
    validate_spec(spec)
    config = spec.config()
    smoke_config(spec)
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
        for a, b, kind in ((a_int, b_int, "integer"), (a_f, b_f, "float")):
            out = np.asarray(numerics.matmul(a, b))
            assert out.shape == (6, 5), f"{spec.name!r}: {kind} matmul returned shape {out.shape}, expected (6, 5)"
            assert np.all(np.isfinite(out)), f"{spec.name!r}: {kind} matmul returned non-finite values"
            if kind == "float":
                assert out.dtype == np.float32, f"{spec.name!r}: float matmul must return float32, got {out.dtype}"
            again = np.asarray(spec.factory(config).numerics.matmul(a, b))
            assert np.array_equal(out, again), (
                f"{spec.name!r}: {kind} matmul differs between two instances with one config; "
                "draw randomness from a seed in the config"
            )
    with tempfile.TemporaryDirectory() as tmp:
        from harness.api import RunContext

        cost = _finite_dict(accel.cost(_SMALL_TRACE, RunContext(0, tmp)), f"{spec.name!r}.cost")
    assert cost, f"accelerator {spec.name!r}: cost() returned no metrics"


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


def smoke_run(kind: str, name: str, host: Host | None = None, seed: int = 0):
    """Run ``name`` in a fast composition and return the record."""
    from harness.runner import run_experiment

    host = host or get_host()
    spec = host.spec(kind, name)
    choices = {"workload": "dot_products", "technique": "none", "accelerator": "exact"}
    if kind == "technique":
        choices["workload"] = spec.smoke_workload
    choices[kind] = name
    values = {k: dict(host.spec(k, v).smoke) for k, v in choices.items()}
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
    first = smoke_run("technique", spec.name, host)
    assert first.status == "FINISHED", f"technique {spec.name!r} smoke run failed: {first.error}"
    second = smoke_run("technique", spec.name, host)
    assert _seeded(first.metrics) == _seeded(second.metrics), (
        f"technique {spec.name!r}: same seed gave different metrics "
        "(only wall-clock metrics under perf/ may differ)"
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
