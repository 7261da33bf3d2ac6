"""Capabilities: what a plugin needs and provides, checked on the driver before anything runs."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass

import pytest

from conftest import harness_env, mlflow_runs, run_harness
from harness.host import get_host
from harness.runner import experiment_identity
from harness.specs import CAPABILITIES, CapabilityError, TechniqueSpec, WorkloadSpec, validate_spec

ADMM_ON_GEMMS = (
    "technique 'admm' needs subject:model, which workload 'dot_products' does not provide "
    "(it provides subject:gemms); workloads that provide subject:model: digits_mlp, mnist_lenet5, mnist_mlp, mnist_vit"
)


@dataclass
class _Cfg:
    x: int = 1


def test_needs_and_provides_accept_any_iterable_and_validate():
    spec = WorkloadSpec(name="w", summary="s", config=_Cfg, factory=_Cfg, provides=["subject:model", "weight_values"])
    assert spec.provides == frozenset({"subject:model", "weight_values"}) and spec.needs == frozenset()
    validate_spec(spec)
    assert all(re.match(r"^[a-z][a-z0-9_]*(:[a-z0-9_]+)?$", name) for name in CAPABILITIES)


def test_builtins_declare_their_capabilities():
    host = get_host()
    for name in ("digits_mlp", "mnist_lenet5", "mnist_vit"):
        assert host.spec("workload", name).provides == {"subject:model", "weight_values", "training_gemms"}
    for name in ("dot_products", "minilm_gemm"):
        assert host.spec("workload", name).provides == {"subject:gemms"}
    assert host.spec("technique", "admm").needs == {"subject:model"}
    for kind, name in (("technique", "none"), ("accelerator", "exact"), ("accelerator", "ds_cim")):
        assert host.spec(kind, name).needs == frozenset()


def test_incompatible_choice_is_refused_naming_both_plugins():
    choices = {"workload": "dot_products", "technique": "admm", "accelerator": "exact"}
    with pytest.raises(CapabilityError) as raised:
        experiment_identity(choices, {})
    assert str(raised.value) == ADMM_ON_GEMMS
    choices["workload"] = "digits_mlp"
    experiment_identity(choices, {})  # a model workload provides it


def test_unprovided_capability_says_nobody_provides_it():
    from harness.host import PluginInfo
    from harness.runner import check_capabilities

    host = get_host()
    needy = TechniqueSpec(name="needy", summary="s", config=_Cfg, factory=_Cfg, needs={"subject:points"})
    infos = [host.info("workload", "dot_products"), PluginInfo(needy, "needy", "d", "1"), host.info("accelerator", "exact")]
    with pytest.raises(CapabilityError, match="needs subject:points, .*no installed plugin provides subject:points"):
        check_capabilities(infos, host)


def test_sweep_with_an_incompatible_pair_fails_before_ray_starts(workdir):
    env = harness_env(workdir, RAY_TMPDIR=str(workdir / "ray"))
    # -X importtime lists every module the command imported: Ray was not even imported.
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "harness", "run", "-m", "workload=dot_products", "technique=admm,none"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert ADMM_ON_GEMMS in result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "harness.launcher" in imported  # the check really went through the Ray launcher's driver
    assert not [m for m in imported if m == "ray" or m.startswith("ray.")], "Ray was imported: it may have started"
    assert "Traceback" not in result.stderr
    assert not (workdir / "mlflow.db").exists() and not (workdir / "ray").exists()


def test_single_run_with_an_incompatible_pair_fails_and_records_nothing(workdir):
    result = run_harness(["run", "workload=dot_products", "technique=admm"], workdir)
    assert result.returncode != 0
    assert ADMM_ON_GEMMS in result.stderr and "Traceback" not in result.stderr
    db = workdir / "mlflow.db"
    assert not db.exists() or mlflow_runs(db) == []  # in particular, no run left RUNNING


def test_conformance_kit_checks_the_smoke_workload_provides_what_a_technique_needs():
    from harness.testing import check_spec, check_technique
    from harness_plugins.none import Identity, NoneConfig

    spec = TechniqueSpec(name="needs_model", summary="s", config=NoneConfig, factory=Identity, needs={"subject:model"})
    check_spec(spec)
    with pytest.raises(AssertionError, match="smoke_workload cannot run it: technique 'needs_model' needs subject:model"):
        check_technique(spec)  # smoke_workload defaults to dot_products
    bad = TechniqueSpec(name="bad", summary="s", config=NoneConfig, factory=Identity, needs={"Model"})
    with pytest.raises(Exception, match="needs 'Model' must be capability names"):
        check_spec(bad)
