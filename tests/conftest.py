"""Shared helpers for the harness tests.

Plugins under test are real installed distributions: :func:`make_dist` writes a
package and its ``.dist-info`` (with ``entry_points.txt``) into a folder that a
subprocess gets on ``PYTHONPATH``, which is exactly what ``pip install`` leaves
behind, so discovery runs through ``importlib.metadata`` as it would for a user.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

# Numba's on-disk kernel cache goes to a temporary folder, not next to the sources
# (set before anything imports numba; subprocesses inherit it).
os.environ.setdefault("NUMBA_CACHE_DIR", tempfile.mkdtemp(prefix="harness-tests-numba-"))
# The harness's per-user cache (the migrated MLflow store template, harness.store_template)
# is the session's own, not the user's ~/.cache/harness.
os.environ.setdefault("HARNESS_CACHE_HOME", tempfile.mkdtemp(prefix="harness-tests-cache-"))

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

#: The integration tier (marker ``integration``): tests that start a real Ray, a server,
#: a browser, pip or git worktrees, each taking tens of seconds, and the few that run the
#: CLI as several processes in a row (8-10 s each). ``pytest`` alone runs
#: the default tier; the README's test command (and so CI) runs both:
#: ``pytest && pytest -m "integration and not slow"``. Whole modules, then single tests.
INTEGRATION_MODULES = {
    "test_launcher", "test_launcher_hydra_suites", "test_launcher_loopback", "test_end_to_end",
    "test_dashboard_browser", "test_example_plugin", "test_packaging",
}
INTEGRATION_TESTS = {
    "test_cli.py::test_plugin_raising_mid_run_leaves_a_failed_run_with_traceback",
    "test_compare.py::test_compare_commits_flags_a_kernel_made_2x_slower",
    "test_dashboard.py::test_harness_dashboard_command_and_its_errors",
    "test_host.py::test_cli_with_broken_plugins_installed",
    "test_runner.py::test_two_cli_runs_log_identical_metrics",
    "test_runner.py::test_a_single_run_caches_numba_kernels_under_cache_dir_not_next_to_the_source",
    "test_docs.py::test_the_tutorial_plugin_installs_runs_and_sweeps",
    "test_reliability.py::test_a_record_the_store_refuses_after_the_run_is_kept_and_written_by_the_next_run",
    "test_reliability.py::test_ctrl_c_stops_a_single_run_within_seconds_and_records_it_killed",
    "test_reliability.py::test_ui_prints_a_runs_link_per_experiment",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = f"{item.path.name}::{item.originalname}"
        if item.path.stem in INTEGRATION_MODULES or name in INTEGRATION_TESTS:
            item.add_marker(pytest.mark.integration)


def make_dist(site: Path, dist: str, module: str, source: str, entry_points: dict[str, str], version: str = "0.1.0") -> Path:
    """Install a one-module distribution into ``site`` (a PYTHONPATH folder)."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "\n".join(f"{name} = {value}" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[harness]\n{lines}\n")
    return site


def harness_env(tmp_path: Path, extra_path: Path | None = None, **extra: str) -> dict[str, str]:
    """Environment for a harness subprocess: its own MLflow store, no telemetry."""
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(
        MLFLOW_DISABLE_TELEMETRY="true",
        RAY_USAGE_STATS_ENABLED="0",
        HYDRA_FULL_ERROR="0",
    )
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(extra_path), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def run_harness(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m harness ARGS`` in ``cwd``; returns the completed process."""
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=cwd,
        env=env if env is not None else harness_env(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def mlflow_runs(db: Path, experiment: str = "harness") -> list:
    """All runs of ``experiment`` in the sqlite store at ``db``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], max_results=1000)


FAILING_PLUGIN = '''
from dataclasses import dataclass
from harness import hookimpl
from harness.specs import AcceleratorSpec

@dataclass
class BrokenConfig:
    fail_in: str = "cost"

class Broken:
    numerics = None
    def __init__(self, config):
        self.config = config
    def cost(self, trace, ctx):
        raise RuntimeError("simulated hardware model crashed")

@hookimpl
def harness_accelerators():
    yield AcceleratorSpec(name="broken", summary="Raises in its cost model", config=BrokenConfig, factory=Broken)
'''


def twin_plugin(tag: str) -> str:
    return f'''
from dataclasses import dataclass
from harness import hookimpl
from harness.specs import AcceleratorSpec
from harness_plugins.exact import ExactAccelerator

@dataclass
class TwinConfig:
    pass

@hookimpl
def harness_accelerators():
    yield AcceleratorSpec(name="twin", summary="One of two with one name ({tag})", config=TwinConfig, factory=ExactAccelerator)
'''


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty working folder for a harness command (its mlflow.db lands here)."""
    path = tmp_path / "work"
    path.mkdir()
    return path
