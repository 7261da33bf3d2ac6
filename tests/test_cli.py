"""The `harness` command as a user types it: help, plugins, run errors, failures."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import FAILING_PLUGIN, harness_env, make_dist, mlflow_runs, run_harness


def _imported_modules(args):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "harness", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}


def test_help_and_plugins_do_not_import_mlflow_or_ray():
    for args in (["--help"], ["plugins"]):
        modules = _imported_modules(args)
        heavy = sorted(m for m in modules if re.match(r"^(mlflow|ray)(\.|$)", m))
        assert not heavy, f"harness {' '.join(args)} imported {heavy[:5]}"
        assert "harness.cli" in modules  # the check really looked at our import


def test_plugins_json_lists_the_reference_plugins(workdir):
    result = run_harness(["plugins", "--json"], workdir)
    assert result.returncode == 0, result.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(result.stdout)}
    for key in (("accelerator", "exact"), ("technique", "none"), ("workload", "dot_products")):
        assert key in rows
        row = rows[key]
        assert row["distribution"] == "accel-harness" and row["version"] and row["summary"]


def test_plugins_table_has_a_header_and_every_plugin(workdir):
    result = run_harness(["plugins"], workdir)
    assert result.returncode == 0
    assert result.stdout.splitlines()[0].split()[:3] == ["KIND", "NAME", "DISTRIBUTION"]
    assert re.search(r"^accelerator +exact +accel-harness", result.stdout, re.M)


def test_unknown_command_and_argument_fail_clearly(workdir):
    result = run_harness(["frobnicate"], workdir)
    assert result.returncode == 2 and "valid commands: run, plugins, ui" in result.stderr
    result = run_harness(["plugins", "--yaml"], workdir)
    assert result.returncode == 2 and "valid: --json, --markdown" in result.stderr


def test_unknown_accelerator_names_the_valid_choices(workdir):
    result = run_harness(["run", "accelerator=nonexistent"], workdir)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert re.search(r"harness: accelerator=nonexistent: no such accelerator option; valid: .*ds_cim.*exact", out)
    assert not (workdir / "mlflow.db").exists(), "a config error must not create runs"


def test_unknown_key_is_named(workdir):
    result = run_harness(["run", "accelerator=exact", "accelerator.bogus=1"], workdir)
    assert result.returncode != 0
    assert "Key 'bogus' not in 'ExactConfig'" in result.stdout + result.stderr


def test_wrong_type_is_rejected(workdir):
    result = run_harness(["run", "workload.count=many"], workdir)
    assert result.returncode != 0
    assert "workload.count" in result.stdout + result.stderr


def test_hydra_flags_work(workdir):
    result = run_harness(["run", "--cfg", "job", "accelerator=exact", "workload.length=64"], workdir)
    assert result.returncode == 0, result.stderr
    assert "length: 64" in result.stdout
    info = run_harness(["run", "--info", "defaults"], workdir)
    assert info.returncode == 0 and "accelerator/exact" in info.stdout


def test_plugin_raising_mid_run_leaves_a_failed_run_with_traceback(tmp_path, workdir):
    site = make_dist(tmp_path / "site", "broken-accel", "broken_accel", FAILING_PLUGIN, {"broken": "broken_accel"})
    result = run_harness(["run", "accelerator=broken"], workdir, harness_env(workdir, site))
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr
    (run,) = mlflow_runs(workdir / "mlflow.db")
    assert run.info.status == "FAILED"
    assert run.data.tags["harness.failed_stage"] == "accelerator 'broken' cost"
    # What was measured before the failure is kept.
    assert "numerics/rmse" in run.data.metrics and "trace/macs" in run.data.metrics
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    path = client.download_artifacts(run.info.run_id, "traceback.txt", str(tmp_path))
    text = open(path).read()
    assert "RuntimeError: simulated hardware model crashed" in text and "Traceback" in text
