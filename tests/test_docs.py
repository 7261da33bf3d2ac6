"""Docs that must match the code: every hook in the guide, and the guide's tutorial works."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

from conftest import REPO, harness_env, mlflow_runs, run_harness
from harness import hookspecs

GUIDE = REPO / "docs" / "plugin_guide.md"


def _hooks():
    return [(name, fn) for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "harness_spec")]


def test_every_hook_is_documented_with_its_exact_signature():
    text = GUIDE.read_text()
    hooks = _hooks()
    assert len(hooks) == 3
    for name, fn in hooks:
        signature = f"{name}{inspect.signature(fn)}".replace("'", "")
        assert f"`{signature}`" in text, f"docs/plugin_guide.md does not document {signature}"
        doc = inspect.getdoc(fn)
        assert doc and "Called" in doc and ":return:" in doc and "Example::" in doc, f"hookspec {name} is under-documented"


def _guide_files() -> dict[str, str]:
    blocks = re.findall(r"```\w+ file=(\S+)\n(.*?)```", GUIDE.read_text(), re.S)
    return {path: body for path, body in blocks}


def test_the_tutorial_plugin_installs_runs_and_sweeps(tmp_path, workdir):
    files = _guide_files()
    assert {"pyproject.toml", "harness_trunc_mac/__init__.py", "tests/test_conformance.py"} <= set(files)
    package = tmp_path / "harness-trunc-mac"
    for path, body in files.items():
        (package / path).parent.mkdir(parents=True, exist_ok=True)
        (package / path).write_text(body)
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(package)],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    env = harness_env(workdir, site)
    listed = run_harness(["plugins"], workdir, env)
    assert re.search(r"^accelerator +trunc_mac +harness-trunc-mac 0\.1\.0", listed.stdout, re.M), listed.stdout

    refused = run_harness(["run", "accelerator=trunc_mac", "accelerator.drop_bits=many"], workdir, env)
    assert refused.returncode != 0 and "drop_bits" in refused.stdout + refused.stderr

    sweep = run_harness(
        ["run", "-m", "accelerator=trunc_mac", "accelerator.drop_bits=0,4,8", "workload=dot_products",
         "workload.distribution=relu", "workload.count=32", "workload.columns=4"],
        workdir, env, timeout=600,
    )
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    runs = [r for r in mlflow_runs(workdir / "mlflow.db") if "harness.config_hash" in r.data.tags]
    rmse = {r.data.params["accelerator.drop_bits"]: r.data.metrics["numerics/rmse"] for r in runs}
    assert set(rmse) == {"0", "4", "8"}
    # Dropping no bits is exact; dropping more bits errs more, as the guide promises.
    assert rmse["0"] == 0.0 < rmse["4"] < rmse["8"]

    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package / "tests")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert tests.returncode == 0, tests.stdout[-2000:]


def test_readme_opens_with_the_two_setup_commands():
    text = (REPO / "README.md").read_text()
    block = re.search(r"```(?:bash|sh|shell)\n(.*?)```", text, re.S).group(1)
    lines = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) == 2
    assert "harness run -m" in lines[0] and "pip install" in lines[0]
    assert "pytest" in lines[1] and "pip install" in lines[1]
    ci = (REPO / ".ci" / "run").read_text()
    assert "README.md" in ci, ".ci/run must run the README's test command"


def test_readme_plugin_table_matches_the_installed_builtins():
    from harness.cli import plugin_rows, plugins_markdown
    from harness.host import get_host

    builtins = [i for i in get_host().infos() if i.distribution == "accel-harness"]
    expected = plugins_markdown(plugin_rows(builtins))
    text = (REPO / "README.md").read_text()
    table = text.split("<!-- plugins:begin -->\n", 1)[1].split("<!-- plugins:end -->", 1)[0].strip()
    assert table == expected, "README plugin table is stale: paste `harness plugins --markdown` between the markers"
