"""``hydra/launcher=harness_ray`` against Hydra's own launcher test suites, and a plain Hydra app.

Hydra's launcher plugins (joblib, ray, rq, submitit) prove themselves by
subclassing ``hydra.test_utils.launcher_common_tests``; so does ours. Every test
here shares one Ray head started on 127.0.0.1 with ``ray start`` in its own
process group (stopped by that group's id, never ``ray stop``) and joins it with
``hydra.launcher.address``, instead of each sweep starting a private Ray.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra.test_utils.launcher_common_tests import (
    BatchedSweeperTestSuite,
    IntegrationTestSuite,
    LauncherTestSuite,
)

from test_launcher import _start_head

LAUNCHER = "harness_ray"

#: What every process talking to the test head needs: loopback, no auth token, no stats.
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """``HOST:PORT`` of a 2-CPU Ray head on loopback, for this module's tests."""
    import tempfile
    import shutil

    folder = tmp_path_factory.mktemp("ray-head")
    short = Path(tempfile.mkdtemp(prefix="hs-", dir="/tmp"))  # unix socket paths stay short
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)  # the in-process suites connect from this process; subprocesses inherit it
    # Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, at import: if an earlier test module
    # imported ray, this process would join the loopback head as a cluster node on the
    # machine's own address, and ray.init would hang. Set what the variable sets.
    from ray._private import ray_constants

    cluster_flag = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    env = dict(os.environ, RAY_TMPDIR=str(short))
    head, address = _start_head(folder, env, num_cpus=2)
    try:
        yield address
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        ray_constants.ENABLE_RAY_CLUSTER = cluster_flag
        head.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(short, ignore_errors=True)
    assert not head.pids(), "the test head must be gone"


@pytest.fixture
def launcher_name() -> str:
    return LAUNCHER


@pytest.fixture
def overrides(ray_head) -> list[str]:
    return [f"hydra.launcher.address={ray_head}", "hydra.launcher.progress=false"]


@pytest.fixture
def task_launcher_cfg() -> dict:
    return {}


@pytest.fixture
def extra_flags(ray_head) -> list[str]:
    return [
        "-m",
        f"hydra/launcher={LAUNCHER}",
        "hydra/hydra_logging=disabled",
        "hydra/job_logging=disabled",
        f"hydra.launcher.address={ray_head}",
        "hydra.launcher.progress=false",
    ]


class TestHarnessRayLauncher(LauncherTestSuite):
    """Hydra's launcher suite: composition, return values, per-job outputs."""


class TestHarnessRayLauncherIntegration(IntegrationTestSuite):
    """Hydra's integration suite: real apps in subprocesses (job names, sweep dirs, chdir)."""


class TestHarnessRayLauncherBatched(BatchedSweeperTestSuite):
    """Hydra's batched-sweeper suite: three batches of two jobs."""

    @pytest.fixture
    def overrides(self, ray_head) -> list[str]:
        return [f"hydra.launcher.address={ray_head}", "hydra.launcher.progress=false", "hydra.sweeper.max_batch_size=2"]


PLAIN_APP = """
import os
import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback


class Seen(Callback):
    # Job callbacks run where Hydra's launchers run them: on the worker, around the job.
    def on_job_end(self, config, job_return, **kwargs):
        out = HydraConfig.get().runtime.output_dir
        open(os.path.join(out, "returned"), "w").write(repr(job_return.return_value))


@hydra.main(version_base="1.3", config_path=".", config_name="plain")
def app(cfg):
    return cfg.x * cfg.x


if __name__ == "__main__":
    app()
"""


@pytest.mark.usefixtures("hydra_restore_singletons")
def test_a_plain_hydra_app_returns_each_jobs_value_to_the_sweeper(hydra_sweep_runner, ray_head, tmp_path):
    """Not the harness: the app's own task function runs on Ray and the sweeper gets its value."""
    sweep = hydra_sweep_runner(
        calling_file=None,
        calling_module="hydra.test_utils.a_module",
        task_function=lambda cfg: {"a": cfg.a, "square": cfg.a * cfg.a, "pid": os.getpid()},
        config_path="configs",
        config_name="compose",
        overrides=["+a=1,2,3", f"hydra/launcher={LAUNCHER}", f"hydra.launcher.address={ray_head}"],
        temp_dir=tmp_path,
    )
    with sweep:
        values = [ret.return_value for ret in sweep.returns[0]]
    assert [(v["a"], v["square"]) for v in values] == [(1, 1), (2, 4), (3, 9)]
    assert os.getpid() not in {v["pid"] for v in values}, "the jobs ran in Ray workers"


def test_a_plain_hydra_script_writes_hydras_per_job_outputs_and_runs_job_callbacks(tmp_path, ray_head):
    (tmp_path / "app.py").write_text(PLAIN_APP)
    (tmp_path / "plain.yaml").write_text("x: 0\nhydra:\n  callbacks:\n    seen:\n      _target_: __main__.Seen\n")
    done = subprocess.run(
        [sys.executable, "app.py", "-m", "x=1,2,3", f"hydra/launcher={LAUNCHER}", f"hydra.launcher.address={ray_head}",
         "hydra.sweep.dir=out", "hydra.job.chdir=true"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for num, x in enumerate((1, 2, 3)):
        job = tmp_path / "out" / str(num)
        assert (job / ".hydra" / "config.yaml").read_text().strip() == f"x: {x}"
        assert (job / ".hydra" / "overrides.yaml").is_file() and (job / ".hydra" / "hydra.yaml").is_file()
        assert (job / "app.log").is_file()
        assert (job / "returned").read_text() == str(x * x)
