"""Load and concurrency, checked (issue 12, item 6): ``benchmarks/bench_load.py``'s
scenarios at smaller sizes. Slow (minutes each): ``pytest -m slow tests/test_load.py``.
The README's figures come from the benchmark at full size."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_load  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def folder():
    import shutil

    path = Path(tempfile.mkdtemp(prefix="hl-load-", dir="/tmp"))  # short: Ray's socket paths
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_sweep_of_200_trivial_jobs_finishes_each_once(folder):
    result = bench_load.scenario_sweep(folder, jobs=200)
    assert result["statuses"] == {"FINISHED": 200}


def test_8_single_runs_and_2_sweeps_write_to_one_sqlite_store_at_once(folder):
    result = bench_load.scenario_writers(folder, singles=8, sweep_jobs=10)
    assert result["runs_written"] == 8 + 2 * 10 + 2


def test_a_tracking_server_killed_and_restarted_mid_sweep_loses_nothing(folder):
    result = bench_load.scenario_server(folder, jobs=16, down_s=5.0)
    assert result["statuses"] == {"FINISHED": 16}


def test_the_driver_sigkilled_three_times_then_rerun_finishes_each_job_once(folder):
    result = bench_load.scenario_sigkill(folder, jobs=30, kills=3, seed=1)
    assert result["statuses"]["FINISHED"] == 30
