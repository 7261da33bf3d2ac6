"""The third-party example: installed with pip, found, run, and conformant."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from conftest import REPO, harness_env, mlflow_runs, run_harness


def test_pip_installed_example_is_listed_and_runs(tmp_path, workdir):
    target = tmp_path / "site"
    source = tmp_path / "example"  # setuptools builds in the source folder: build a copy, not the repo's
    shutil.copytree(REPO / "examples" / "third_party_plugin", source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    env = harness_env(workdir, target)
    listed = run_harness(["plugins", "--json"], workdir, env)
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["bf16"]["kind"] == "accelerator"
    assert rows["bf16"]["distribution"] == "harness-example-bf16"
    assert {"exact", "none", "dot_products"} <= set(rows)

    ran = run_harness(["run", "accelerator=bf16", "workload.count=64", "workload.bits=0"], workdir, env)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    (run,) = mlflow_runs(workdir / "mlflow.db")
    assert run.info.status == "FINISHED"
    assert run.data.tags["harness.accelerator.distribution"] == "harness-example-bf16 0.1.0"
    # bfloat16 operands (8-bit significand) err far more than float32 BLAS does.
    assert run.data.metrics["numerics/rmse"] > 100 * run.data.metrics["numerics/rmse_exact"] > 0

    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(source / "tests")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert tests.returncode == 0, tests.stdout[-2000:]
