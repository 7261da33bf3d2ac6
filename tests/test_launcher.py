"""The harness on ``hydra/launcher=harness_ray``, end to end on a real Ray.

Every sweep here is a real ``harness run -m`` subprocess on a real Ray: a private
local instance the launcher starts, or clusters the tests start with ``ray
start`` on loopback (in their own process groups, temp folders under tmp_path,
stopped by process group id: never ``ray stop``, which is machine-wide).

Slow jobs come from the test-only ``spin`` workload in ``tests/launcher_plugin``,
registered through a dist-info folder put on PYTHONPATH of the subprocesses only.
"""

from __future__ import annotations

import io
import json
import os
import signal
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from harness.launcher import Progress, options_from
from harness.launcher.harness_hook import sweep_id_of

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PLUGIN_PATH = Path(__file__).resolve().parent / "launcher_plugin"
SMALL = ["workload.count=64", "workload.columns=8"]


# -- helpers -------------------------------------------------------------------------
@pytest.fixture
def short_tmp():
    """A short folder for Ray's session files: unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="hl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(PLUGIN_PATH), env.get("PYTHONPATH", "")) if p),
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        MLFLOW_DISABLE_TELEMETRY="true",
        HOME=str(home),  # anything Ray or MLflow would leave in the home folder shows here
        TMPDIR=str(tmp_path / "tmp"),  # the launcher's private Ray session folder goes here (or /tmp if too long)
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="disabled",
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        NUMBA_CACHE_DIR=str(tmp_path / "numba"),
    )
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env.update(extra)
    return env


def _why(tmp_path: Path, done: subprocess.CompletedProcess) -> str:
    """The command's stderr and the tracebacks of its FAILED runs, for a failing assert."""
    tracebacks = [p.read_text()[-1500:] for p in sorted(tmp_path.rglob("traceback.txt"))[:3]]
    return done.stderr[-3000:] + "".join(f"\n--- {t}" for t in tracebacks)


def _harness(tmp_path: Path, *args: str, env=None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "harness"), "run", "-m", *args, f"cache_dir={tmp_path / 'cache'}"],
        cwd=tmp_path,
        env=env or _env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _client(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def _runs(tmp_path: Path, experiment: str = "harness"):
    client = _client(tmp_path)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return [], []
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("harness.sweep_parent") == "true"]
    children = [r for r in runs if r.data.tags.get("harness.sweep_parent") != "true"]
    return parents, children


def _finished_by_hash(children) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in children:
        if run.info.status == "FINISHED":
            h = run.data.tags["harness.config_hash"]
            counts[h] = counts.get(h, 0) + 1
    return counts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _no_leftovers(tmp_path: Path, ray_tmp: Path) -> None:
    assert list((tmp_path / "home").iterdir()) == [], "nothing may be written to the home folder"
    assert not [p for p in ray_tmp.iterdir() if p.name.startswith("harness-ray-")], (
        "the private Ray session folder must be removed"
    )


class RayNode:
    """A Ray node in its own process group, stopped by that group's id.

    The head is ``ray start --head --block``. A worker node is started by
    ``launcher_plugin/ray_worker_node.py`` instead of ``ray start --address``, which
    cannot join on loopback only with Ray 2.60 (see that file).
    """

    def __init__(self, tmp_path: Path, name: str, *args: str, env=None, command=None):
        self.log = tmp_path / f"{name}.log"
        self.proc = subprocess.Popen(
            command
            or [str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats", *args],
            env=env,
            stdout=open(self.log, "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def pids(self) -> set[int]:
        out = subprocess.run(["ps", "-eo", "pid=,pgid="], capture_output=True, text=True).stdout.split()
        return {int(pid) for pid, pgid in zip(out[::2], out[1::2]) if int(pgid) == self.proc.pid}

    def kill(self, sig=signal.SIGKILL) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM the group (ray start tidies up), SIGKILL whatever is left of it."""
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.3)
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _cluster_env(tmp_path: Path, ray_tmp: Path) -> dict[str, str]:
    # Fast node-death detection, so a retried task is not sent to the dead node.
    return _env(
        tmp_path,
        RAY_TMPDIR=str(ray_tmp),
        RAY_health_check_period_ms="500",
        RAY_health_check_timeout_ms="1000",
        RAY_health_check_failure_threshold="3",
    )


def _wait_for_nodes(env, address: str, count: int) -> None:
    code = (
        "import ray, sys, time\n"
        f"ray.init(address={address!r}, logging_level='ERROR')\n"
        "t = time.monotonic()\n"
        f"while sum(n['Alive'] for n in ray.nodes()) < {count} and time.monotonic() - t < 60: time.sleep(0.3)\n"
        f"sys.exit(0 if sum(n['Alive'] for n in ray.nodes()) >= {count} else 1)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=120).returncode == 0, "nodes did not join"


def _assert_loopback_only(pids: set[int]) -> None:
    """Every TCP listener of the given processes is on 127.0.0.1."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if any(f"pid={pid}," in line for pid in pids):
            assert line.split()[3].rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"), line


def _start_head(tmp_path: Path, env, num_cpus: int) -> tuple[RayNode, str]:
    port = _free_port()
    head = RayNode(
        tmp_path, "head", "--head", f"--port={port}", f"--num-cpus={num_cpus}", "--include-dashboard=false",
        "--object-store-memory=100000000", f"--temp-dir={env['RAY_TMPDIR']}", env=env,
    )
    address_file = Path(env["RAY_TMPDIR"]) / "ray_current_cluster"
    deadline = time.monotonic() + 90
    while not address_file.exists():
        if head.proc.poll() is not None or time.monotonic() > deadline:
            head.stop()
            pytest.fail(f"ray head did not start: {head.log.read_text()[-2000:]}")
        time.sleep(0.2)
    return head, f"127.0.0.1:{port}"


# -- fast checks, no Ray -------------------------------------------------------------
def test_sweep_id_ignores_order_and_duplicates():
    assert sweep_id_of(["b", "a"]) == sweep_id_of(["a", "b", "a"])
    assert sweep_id_of(["a"]) != sweep_id_of(["a", "b"])


def test_bad_options_name_the_value_and_what_is_valid():
    with pytest.raises(ValueError, match=r"cpus_per_job=0: must be > 0"):
        options_from({"cpus_per_job": 0})
    with pytest.raises(ValueError, match=r"max_concurrent=0"):
        options_from({"max_concurrent": 0})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['adress'\]; valid: .*'address'"):
        options_from({"adress": "auto"})


def test_progress_plain_lines_without_a_terminal():
    out = io.StringIO()
    progress = Progress(total=5, skipped=1, stream=out, min_gap=0.0)
    progress.update(0, 0, 2)
    progress.update(2, 1, 1)
    progress.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[0].startswith("[ray] 0/4 done (0 finished, 0 failed, 1 skipped), 2 running")
    assert "3/4 done (2 finished, 1 failed, 1 skipped), 1 running" in lines[1]
    assert "elapsed, ~" in lines[1] and lines[1].endswith("left")


def test_progress_lines_are_rate_limited_and_the_last_state_is_shown():
    out = io.StringIO()
    progress = Progress(total=100, skipped=0, stream=out, min_gap=60.0)
    for n in range(100):
        progress.update(n, 0, 2, force=True)
    progress.update(100, 0, 0, force=True)
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("[ray] 0/100 done") and lines[1].startswith("[ray] 100/100 done")


def test_progress_rewrites_one_line_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    progress = Progress(total=2, skipped=0, stream=out, min_gap=0.0)
    progress.update(1, 0, 1)
    progress.update(2, 0, 0)
    progress.close()
    assert out.getvalue().count("\r") == 2 and out.getvalue().endswith("\n")


def test_sweep_cfg_job_prints_each_jobs_config(tmp_path):
    done = subprocess.run(
        [str(BIN / "harness"), "run", "-m", "--cfg", "job", "seed=0,1", "technique=none,admm"],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    heads = [line for line in done.stdout.splitlines() if line.startswith("# job ")]
    assert heads == [
        "# job 0: seed=0 technique=none", "# job 1: seed=0 technique=admm",
        "# job 2: seed=1 technique=none", "# job 3: seed=1 technique=admm",
    ]
    assert done.stdout.count("\nseed: 1\n") == 2 and "ratio:" in done.stdout
    assert not (tmp_path / "mlflow.db").exists(), "printing configs runs nothing"


def test_plugins_that_cannot_work_together_fail_the_sweep_before_ray_starts(tmp_path):
    done = _harness(tmp_path, "workload=spin", "workload.incompatible=false,true", "seed=0,1")
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "job #2 (workload=spin workload.incompatible=True seed=0 " in done.stderr
    assert "): spin (incompatible=true) cannot run on this accelerator" in done.stderr
    assert "2 of 4 jobs cannot run; nothing was started" in done.stderr
    assert "Traceback" not in done.stderr
    assert "[ray]" not in done.stdout and not (tmp_path / "mlflow.db").exists()


# -- sweeps on a private local Ray ---------------------------------------------------
def test_a_parameter_of_one_choice_sweeps_with_when_and_each_experiment_runs_once(tmp_path):
    args = ["technique=none,admm", "when.technique.admm.ratio=10,30", "workload=digits_mlp"]
    done = _harness(tmp_path, *args)
    assert done.returncode == 0, _why(tmp_path, done)
    assert "Sweep 4 jobs: 3 finished, 0 failed, 1 skipped" in done.stdout
    assert "same config as job #0" in done.stdout
    parents, children = _runs(tmp_path)
    assert sorted((c.data.params["technique"], c.data.params.get("technique.ratio"), c.info.status) for c in children) == [
        ("admm", "10.0", "FINISHED"), ("admm", "30.0", "FINISHED"), ("none", None, "FINISHED"),
    ]
    summary = _client(tmp_path).download_artifacts(parents[0].info.run_id, "sweep_summary.md", str(tmp_path))
    assert f"`harness run -m {' '.join(args)} cache_dir=" in Path(summary).read_text(), "the full command line"
    assert sorted(c.info.run_name for c in children) == [
        "admm ratio=10 on exact s0", "admm ratio=30 on exact s0", "none on exact s0",
    ]



def test_a_job_reusing_a_technique_result_starts_in_an_idle_slot_and_waits_for_it(tmp_path):
    """Two accelerators share one (cached) technique result: the second job is held back
    while other work could use the slot; with the other slot idle it starts at once,
    waits on the cache's lock while the first job computes, and reuses the result."""
    done = _harness(tmp_path, "workload=spin", "technique=nap", "technique.seconds=4", "accelerator=exact,ds_cim",
                    "hydra.launcher.num_cpus=2")
    assert done.returncode == 0, _why(tmp_path, done)
    parents, children = _runs(tmp_path)
    assert parents[0].data.tags["harness.sweep.jobs_started_early"] == "1"
    first, second = sorted(children, key=lambda r: r.data.tags["harness.technique_cache"], reverse=True)
    assert (first.data.tags["harness.technique_cache"], second.data.tags["harness.technique_cache"]) == ("miss", "hit")
    assert second.info.start_time < first.info.end_time - 2000, "started while the first was computing"
    assert second.info.end_time >= first.info.start_time + 4000, "waited for the result, did not compute it"


def test_short_jobs_go_to_ray_in_batches_and_a_batch_whose_worker_dies_is_retried_job_by_job(tmp_path):
    """40 trivial jobs take fewer than 40 Ray tasks; the job that kills its worker
    (seed 25, inside a batch) fails alone, every other job finishes exactly once."""
    done = _harness(tmp_path, "workload=spin", "workload.exit_on_seed=25", "seed=range(0,40)",
                    "hydra.launcher.max_retries=0")
    assert done.returncode == 1, _why(tmp_path, done)  # one job FAILED
    parents, children = _runs(tmp_path)
    tags = parents[0].data.tags
    assert int(tags["harness.sweep.ray_tasks"]) < 40 - 10, tags  # batched (the first few go one by one)
    by_seed: dict[str, list[str]] = {}
    for c in children:
        by_seed.setdefault(c.data.params["seed"], []).append(c.info.status)
    assert sorted(by_seed, key=int) == [str(s) for s in range(40)] and all(len(v) == 1 for v in by_seed.values())
    assert by_seed.pop("25") == ["FAILED"] and set(s for v in by_seed.values() for s in v) == {"FINISHED"}
    assert "worker lost" in done.stdout, done.stdout[-3000:]  # the summary's note on the FAILED job

    one = tmp_path / "one"
    one.mkdir()
    done = _harness(one, "workload=spin", "seed=range(0,12)", "hydra.launcher.max_jobs_per_task=1")
    assert done.returncode == 0, _why(one, done)
    assert _runs(one)[0][0].data.tags["harness.sweep.ray_tasks"] == "12"


def test_sweep_of_8_jobs_is_one_parent_with_8_finished_children_and_a_rerun_skips_them(tmp_path, short_tmp):
    args = [*SMALL, "seed=0,1,2,3", "workload.sparsity=0.0,0.5"]
    done = _harness(tmp_path, *args, env=_env(tmp_path, TMPDIR=str(short_tmp)))
    assert done.returncode == 0, _why(tmp_path, done)
    assert "Sweep 8 jobs: 8 finished, 0 failed, 0 skipped" in done.stdout
    assert "[ray] 8/8 done (8 finished, 0 failed)" in done.stdout  # plain progress lines (no TTY)
    parents, children = _runs(tmp_path)
    assert len(parents) == 1 and len(children) == 8
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["harness.sweep.finished"] == "8"
    assert "seed=0,1,2,3" in parent.data.tags["harness.sweep_overrides"]
    assert {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.data.tags["harness.sweep_id"] for c in children} == {parent.data.tags["harness.sweep_id"]}
    assert len(_finished_by_hash(children)) == 8
    client = _client(tmp_path)
    summary = client.download_artifacts(parent.info.run_id, "sweep_summary.md", str(tmp_path))
    table = Path(summary).read_text()
    assert table.count("| FINISHED |") == 8 and "numerics/" in table
    # Run names say what varied (issue 11): unique, short keys, the seed; each run has a description.
    names = {c.info.run_name for c in children}
    assert names == {f"dot_products sparsity={s}: none on exact s{seed}" for s in ("0.0", "0.5") for seed in range(4)}
    child = children[0]
    note = child.data.tags["mlflow.note.content"]
    assert "harness run -m" in note and child.data.tags["harness.config_hash"] in note and "`seed=" in note
    assert child.data.tags["mlflow.source.git.commit"] in note
    # The summary and the parent lead with the plugins' headline metrics (dot_products: numerics/rmse).
    header = next(line for line in table.splitlines() if line.startswith("| job |"))
    assert header.split(" | ")[4] == "numerics/rmse"
    assert table.index("| numerics/rmse |") < table.index("| job |")
    rmse = [c.data.metrics["numerics/rmse"] for c in children]
    assert parent.data.metrics["numerics/rmse/max"] == pytest.approx(max(rmse))
    assert parent.data.metrics["numerics/rmse/mean"] == pytest.approx(sum(rmse) / 8)
    assert "8 jobs" in parent.data.tags["mlflow.note.content"] and parent.data.tags["mlflow.source.git.commit"]
    _no_leftovers(tmp_path, short_tmp)

    # The same command again: everything already FINISHED, nothing runs, Ray is not started.
    again = _harness(tmp_path, *reversed(args))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Sweep 8 jobs: 0 finished, 0 failed, 8 skipped" in again.stdout
    assert "Ray start-up 0.0 s" in again.stdout
    parents2, children2 = _runs(tmp_path)
    assert [p.info.run_id for p in parents2] == [parent.info.run_id]  # the parent is reused
    assert len(children2) == 8

    # resume=false forces reruns, under a new parent.
    forced = _harness(tmp_path, *SMALL, "seed=0,1", "hydra.launcher.resume=false")
    assert forced.returncode == 0, forced.stderr[-3000:]
    parents3, children3 = _runs(tmp_path)
    assert len(parents3) == 2 and len(children3) == 10


def test_a_failing_job_is_recorded_failed_and_the_others_finish(tmp_path):
    # A failure at run time (a plugin raising in a worker); invalid configs are refused on the driver instead.
    args = ["workload=spin", "workload.fail=false,true", "seed=0,1"]
    done = _harness(tmp_path, *args)
    assert done.returncode == 1
    assert "Sweep 4 jobs: 2 finished, 2 failed, 0 skipped" in done.stdout
    assert "failing on purpose" in done.stdout
    assert "2 of 4 jobs FAILED" in done.stderr
    assert "Traceback" not in done.stderr  # the summary says it all; tracebacks are in the runs
    parents, children = _runs(tmp_path)
    assert parents[0].info.status == "FAILED" and parents[0].data.tags["harness.sweep.failed"] == "2"
    statuses = sorted((c.data.params["workload.fail"], c.info.status) for c in children)
    assert statuses == [("False", "FINISHED"), ("False", "FINISHED"), ("True", "FAILED"), ("True", "FAILED")]
    failed = next(c for c in children if c.info.status == "FAILED")
    tb = Path(_client(tmp_path).download_artifacts(failed.info.run_id, "traceback.txt", str(tmp_path))).read_text()
    assert "RuntimeError" in tb and "failing on purpose" in tb

    # A resume reruns only the FAILED ones (they fail again, once each).
    again = _harness(tmp_path, *args)
    assert again.returncode == 1
    assert "Sweep 4 jobs: 0 finished, 2 failed, 2 skipped" in again.stdout


WATCHING_APP = """
import json
import time

import hydra

from harness.launcher.hooks import SweepHook


class WatchingHook(SweepHook):
    \"\"\"Its prepare() ends only once Ray is up: it would wait forever if Ray started after it.\"\"\"

    def prepare(self, jobs):
        import ray

        started, deadline = time.monotonic(), time.monotonic() + 90
        while not ray.is_initialized():
            if time.monotonic() > deadline:
                raise RuntimeError("Ray did not start while the hook prepared")
            time.sleep(0.02)
        with open("prepare.json", "w") as fh:
            json.dump({"waited_s": time.monotonic() - started, "jobs": len(jobs)}, fh)


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg):
    return cfg.x


if __name__ == "__main__":
    main()
"""


def test_the_hook_prepares_while_ray_starts(tmp_path, short_tmp):
    (tmp_path / "app.py").write_text(WATCHING_APP)
    done = subprocess.run(
        [sys.executable, "app.py", "-m", "+x=1,2", "hydra/launcher=harness_ray", "hydra.launcher.hook=__main__:WatchingHook",
         f"hydra.launcher.temp_dir={short_tmp / 'ray'}", "hydra.launcher.progress=false", "hydra.sweep.dir=out"],
        cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads((tmp_path / "prepare.json").read_text())
    assert seen["jobs"] == 2 and seen["waited_s"] > 0.1  # it saw Ray come up while it ran


LEAN_HEAD_PROBE = """
import json, sys
from harness.launcher.cluster import Cluster
from harness.launcher.config import HarnessRayLauncherConf
from ray._private import parameter

untouched = parameter.RayParams.__init__
seen = {}
for log_to_driver in (False, True):
    cluster = Cluster(HarnessRayLauncherConf(num_cpus=1, log_to_driver=log_to_driver, temp_dir=sys.argv[1] + str(log_to_driver)))
    ray = cluster.start()
    from ray._private.worker import _global_node

    @ray.remote
    def shout():
        print("hello from the worker", flush=True)
        return 7

    seen[str(log_to_driver)] = {"processes": sorted(_global_node.all_processes), "result": ray.get(shout.remote())}
    import time; time.sleep(1.5)  # the log monitor polls the worker's log file
    cluster.stop()
seen["params_restored"] = parameter.RayParams.__init__ is untouched
print(json.dumps(seen))
"""


def test_a_private_ray_starts_no_autoscaler_monitor_and_a_log_monitor_only_for_log_to_driver(tmp_path, short_tmp):
    # A private one-node Ray never scales, and the log monitor only forwards workers' output:
    # without them ray.shutdown took 0.1 s instead of 1.4 s (harness.launcher.cluster._lean_head).
    (tmp_path / "probe.py").write_text(LEAN_HEAD_PROBE)
    done = subprocess.run([sys.executable, "probe.py", str(short_tmp / "ray")], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    quiet, loud = seen["False"], seen["True"]
    assert quiet["result"] == loud["result"] == 7
    assert {"gcs_server", "raylet"} <= set(quiet["processes"]), quiet  # the names Ray gives its processes
    assert "monitor" not in quiet["processes"] and "log_monitor" not in quiet["processes"], quiet
    assert "monitor" not in loud["processes"] and "log_monitor" in loud["processes"], loud
    assert seen["params_restored"]
    assert (done.stdout + done.stderr).count("hello from the worker") == 1  # forwarded with log_to_driver only


def test_the_finished_hashes_hint_reads_a_sqlite_store_as_mlflow_does(tmp_path):
    from harness.store import finished_hashes_hint
    from harness.tracking import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert finished_hashes_hint(uri, "harness") == set()  # no store yet: nothing finished
    tracker = MlflowTracker(uri, "harness")
    done_id = tracker.create_run("done", tags={"harness.config_hash": "aaa"})
    tracker.set_status(done_id, "FINISHED")
    tracker.create_run("running", tags={"harness.config_hash": "bbb"})
    deleted = tracker.create_run("deleted", tags={"harness.config_hash": "ccc"})
    tracker.set_status(deleted, "FINISHED")
    tracker.client.delete_run(deleted)
    other = MlflowTracker(uri, "other")
    other.set_status(other.create_run("elsewhere", tags={"harness.config_hash": "ddd"}), "FINISHED")
    assert finished_hashes_hint(uri, "harness") == set(tracker.finished_runs()) == {"aaa"}
    assert finished_hashes_hint(uri, "other") == {"ddd"}
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    assert finished_hashes_hint(f"sqlite:///{tmp_path / 'junk.db'}", "harness") is None
    assert finished_hashes_hint("http://127.0.0.1:5000", "harness") is None


def test_an_invalid_config_in_a_sweep_is_refused_before_ray_starts(tmp_path):
    done = _harness(tmp_path, *SMALL, "workload.distribution=uniform,bogus")
    assert done.returncode != 0
    assert "workload.distribution='bogus'" in done.stderr and "uniform" in done.stderr
    assert "nothing was started" in done.stderr and "Traceback" not in done.stderr
    assert "[ray]" not in done.stdout + done.stderr


def test_numba_threads_follow_cpus_per_job_and_kernels_stay_warm(tmp_path):
    done = _harness(
        tmp_path, "workload=spin", "workload.iterations=1", "seed=0,1,2,3", "hydra.launcher.max_concurrent=1",
        f"hydra.launcher.numba_cache_dir={tmp_path / 'kernels'}",
    )
    assert done.returncode == 0, _why(tmp_path, done)
    _, children = _runs(tmp_path)
    metrics = sorted((int(c.data.params["seed"]), c.data.metrics) for c in children)
    assert {m["spin/numba_threads"] for _, m in metrics} == {1.0}
    # One worker runs the four jobs one after another: compiled once, then warm.
    sources = [m["spin/kernel_source"] for _, m in metrics]
    assert sources.count(2.0) <= 1 and sources.count(0.0) >= 3, sources
    assert list((tmp_path / "kernels").rglob("*.nbi")), "numba's cache goes to hydra.launcher.numba_cache_dir"


def test_driver_killed_mid_sweep_then_rerun_completes_each_job_exactly_once(tmp_path, short_tmp):
    args = ["workload=spin", "workload.sleep=1", "seed=0,1,2,3,4,5", "hydra.launcher.max_concurrent=2"]
    env = _env(tmp_path, TMPDIR=str(short_tmp))  # the killed driver's Ray folder stays behind: keep it in short_tmp
    _runs(tmp_path)  # create the store now, so the polling below never races the driver creating it
    driver = subprocess.Popen(
        [str(BIN / "harness"), "run", "-m", *args, f"cache_dir={tmp_path / 'cache'}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            _, children = _runs(tmp_path)
            if sum(c.info.status == "FINISHED" for c in children) >= 2:
                break
            assert driver.poll() is None, driver.stdout.read()
            time.sleep(0.5)
        else:
            pytest.fail("the sweep did not get going")
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        # The driver's private Ray (in the driver's process group; its workers exit
        # with their raylet) should go with it; make sure of it before going on.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(driver.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.5)
        else:
            os.killpg(driver.pid, signal.SIGKILL)
    _, before = _runs(tmp_path)
    finished_before = {c.info.run_id for c in before if c.info.status == "FINISHED"}
    assert 2 <= len(finished_before) < 6

    done = _harness(tmp_path, *args, env=env)
    assert done.returncode == 0, _why(tmp_path, done)
    assert f"{len(finished_before)} skipped" in done.stdout
    parents, children = _runs(tmp_path)
    counts = _finished_by_hash(children)
    assert len(counts) == 6 and set(counts.values()) == {1}, counts
    assert finished_before <= {c.info.run_id for c in children if c.info.status == "FINISHED"}
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the resumed sweep kept its parent
    assert all(c.info.status in ("FINISHED", "KILLED") for c in children)


def _process_group(pgid: int) -> dict[int, str]:
    """``{pid: executable}`` of the live processes in a process group."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) == pgid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().split(b"\0")[0].decode()
        except (OSError, ProcessLookupError):
            continue
    return found


def test_the_local_raylet_killed_mid_sweep_restarts_ray_and_each_job_finishes_once(tmp_path, short_tmp):
    markers = tmp_path / "markers"
    env = _env(tmp_path, TMPDIR=str(short_tmp))
    _runs(tmp_path)
    driver = subprocess.Popen(
        [str(BIN / "harness"), "run", "-m", "workload=spin", "workload.sleep=2", f"workload.marker_dir={markers}",
         "seed=0,1,2,3,4,5", "hydra.launcher.max_concurrent=2", f"cache_dir={tmp_path / 'cache'}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (markers.exists() and list(markers.iterdir())):
            assert driver.poll() is None, driver.communicate()
            time.sleep(0.2)
        raylets = [pid for pid, exe in _process_group(driver.pid).items() if exe.endswith("/raylet")]
        assert len(raylets) == 1, _process_group(driver.pid)
        started = {m.name for m in markers.iterdir()}
        os.kill(raylets[0], signal.SIGKILL)
        out, err = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    assert driver.returncode == 0, out[-2000:] + err[-3000:]
    assert "the local Ray node died" in err and "restarting Ray (1 of hydra.launcher.max_restarts=2)" in err, err[-3000:]
    assert "Sweep 6 jobs: 6 finished, 0 failed" in out
    parents, children = _runs(tmp_path)
    assert {c.info.status for c in children} == {"FINISHED"}, [c.data.tags.get("mlflow.note.content") for c in children]
    counts = _finished_by_hash(children)
    assert len(counts) == 6 and set(counts.values()) == {1}, counts
    assert parents[0].data.tags["harness.sweep.ray_restarts"] == "1"
    resubmitted = {c.data.params["seed"] for c in children if c.data.tags.get("harness.resubmitted_after_node_loss") == "1"}
    assert {m.split("-")[0] for m in started} <= resubmitted, (started, resubmitted)
    for seed in {m.split("-")[0] for m in started}:  # ran twice: on the dead node, then after the restart
        assert len(list(markers.glob(f"{seed}-*"))) == 2
    time.sleep(1.0)
    assert not _process_group(driver.pid), "the first Ray's processes must all be gone"
    assert not [p for p in short_tmp.iterdir() if p.name.startswith("harness-ray-")], "both Ray session folders removed"


# -- clusters started with `ray start` -------------------------------------------------
@pytest.mark.cluster
def test_address_auto_joins_a_running_cluster_and_leaves_it_running(tmp_path, short_tmp):
    env = _cluster_env(tmp_path, short_tmp)
    head, address = _start_head(tmp_path, env, num_cpus=2)
    try:
        done = _harness(tmp_path, *SMALL, "seed=0,1,2", "hydra.launcher.address=auto", env=env)
        assert done.returncode == 0, _why(tmp_path, done)
        assert "Sweep 3 jobs: 3 finished" in done.stdout
        _assert_loopback_only(head.pids())
        assert head.proc.poll() is None, "joining a cluster must not stop it"
        parents, children = _runs(tmp_path)
        assert parents[0].data.tags["harness.sweep.ray_address"] == address, "jobs ran on the test's cluster"
        assert parents[0].data.tags["harness.sweep.ray_started_here"] == "false"
        assert {c.info.status for c in children} == {"FINISHED"}
    finally:
        head.stop()
    assert not head.pids()


@pytest.mark.cluster
def test_killing_a_worker_node_mid_sweep_retries_its_job_and_records_each_job_once(tmp_path, short_tmp):
    env = _cluster_env(tmp_path, short_tmp)
    head, address = _start_head(tmp_path, env, num_cpus=1)
    worker = None
    try:
        worker = RayNode(tmp_path, "worker", env=env, command=[
            sys.executable, str(PLUGIN_PATH / "ray_worker_node.py"), address, str(short_tmp), "1"])
        _wait_for_nodes(env, address, 2)
        _assert_loopback_only(head.pids() | worker.pids())
        markers = tmp_path / "markers"
        _runs(tmp_path)
        driver = subprocess.Popen(
            [str(BIN / "harness"), "run", "-m", "workload=spin", "workload.sleep=3", f"workload.marker_dir={markers}",
             "seed=0,1,2,3", f"hydra.launcher.address={address}", f"cache_dir={tmp_path / 'cache'}"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            # Wait until a job is running in a process of the worker node, then kill the node.
            deadline = time.monotonic() + 120
            victim = None
            node_id = worker.log.read_text().split()[2]  # "worker node <id> raylet pid <pid>"
            while victim is None and time.monotonic() < deadline and driver.poll() is None:
                for marker in markers.glob("*-*") if markers.exists() else []:
                    if marker.read_text() == node_id:
                        victim = marker.name
                time.sleep(0.2)
            assert victim, f"no job ever ran on the worker node: {driver.poll()} {list(markers.glob('*'))}"
            worker.kill()
            out, _ = driver.communicate(timeout=180)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
        assert driver.returncode == 0, out[-3000:]
        assert "Sweep 4 jobs: 4 finished, 0 failed" in out
        _, children = _runs(tmp_path)
        assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
        counts = _finished_by_hash(children)
        assert len(counts) == 4 and set(counts.values()) == {1}
        seed = victim.split("-")[0]
        assert len(list(markers.glob(f"{seed}-*"))) == 2, "the killed job ran again, elsewhere"
    finally:
        if worker is not None:
            worker.stop()
        head.stop()
    assert not head.pids() and not worker.pids()


def test_keep_ray_leaves_a_local_ray_that_the_next_sweep_joins_and_ray_stop_ends(tmp_path, short_tmp):
    """hydra.launcher.keep_ray=true: the first sweep starts a private Ray that outlives it
    (recorded under the temp folder), the second joins it (no start-up), `harness ray-stop`
    stops its process group and removes its folder."""
    import json

    env = _env(tmp_path, TMPDIR=str(short_tmp))
    record = short_tmp / f"harness-ray-{os.getuid()}.json"
    try:
        first = _harness(tmp_path, *SMALL, "seed=0,1", "hydra.launcher.keep_ray=true", env=env)
        assert first.returncode == 0, _why(tmp_path, first)
        info = json.loads(record.read_text())
        assert info["address"].startswith("127.0.0.1:")
        os.killpg(info["pid"], 0)  # still running after the sweep
        second = _harness(tmp_path, *SMALL, "seed=2,3", "hydra.launcher.keep_ray=true", env=env)
        assert second.returncode == 0, _why(tmp_path, second)
        parents, children = _runs(tmp_path)
        assert sorted(p.data.tags["harness.sweep.ray_kept"] for p in parents) == ["reused", "started"]
        assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
        reused = next(p for p in parents if p.data.tags["harness.sweep.ray_kept"] == "reused")
        assert reused.data.tags["harness.sweep.ray_address"] == info["address"]
    finally:
        stop = subprocess.run([str(BIN / "harness"), "ray-stop"], env=env, capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0 and "stopped the kept Ray" in stop.stdout, stop.stdout + stop.stderr
    from harness.launcher.kept_ray import group_alive

    assert not group_alive(info["pid"])  # (zombies waiting for their new parent do not count)
    assert not record.exists() and not Path(info["temp_dir"]).exists()


# -- the driver's fast paths: same results as the slow ones ---------------------------------
@pytest.mark.usefixtures("hydra_restore_singletons")  # initialize_config_dir sets Hydra's version base
def test_sweep_composer_gives_hydras_own_configs():
    """Composing the defaults once per set of group overrides gives exactly what Hydra's
    load_sweep_config gives, for value, group, `+` and `hydra.*` overrides and `when.*`."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from harness.config import conf_dir, register_configs
    from harness.launcher.compose import SweepComposer

    register_configs()
    cases = [
        (["workload=dot_products"], [["workload=dot_products", f"seed={s}"] for s in range(3)], 1),
        # Lines repeated in every job are parsed once (scalars and quoted strings), lists each time.
        ([], [["workload=dot_products", "+note='a b'", "+vals=[1,2]", f"seed={s}"] for s in range(3)], 1),
        (
            ["hydra.job.chdir=true"],
            [
                ["technique=none", "workload=dot_products", "workload.count=5"],
                ["technique=admm", "workload=digits_mlp", "when.technique.admm.ratio=10"],
                ["technique=none", "workload=dot_products", "workload.count=7"],
            ],
            2,
        ),
        ([], [["+experiment=quickstart", "seed=1"], ["+experiment=quickstart", "seed=2"], ["accelerator=ds_cim"]], 2),
        # Overrides of what Hydra fills in after the overrides: those jobs fill it themselves.
        ([], [["seed=1"], ["seed=2", "hydra.job.name=custom"], ["seed=3", "+hydra.job.env_set.FOO=bar"],
              ["seed=4", "hydra.runtime.cwd=/elsewhere"], ["seed=5"]], 4),
    ]
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir()), job_name="harness"):
        loader = GlobalHydra.instance().config_loader()
        for master_overrides, jobs, shapes in cases:
            master = loader.load_configuration("config", master_overrides, run_mode=RunMode.MULTIRUN)
            composer = SweepComposer(loader, master)
            for overrides in jobs:
                want, got = loader.load_sweep_config(master, overrides), composer.compose(overrides)
                assert OmegaConf.to_yaml(got) == OmegaConf.to_yaml(want), overrides
                assert OmegaConf.is_struct(got) and OmegaConf.is_readonly(got.hydra) == OmegaConf.is_readonly(want.hydra)
                assert OmegaConf.get_type(got) == OmegaConf.get_type(want)
                assert OmegaConf.get_type(got, "hydra") == OmegaConf.get_type(want, "hydra")
            assert composer.fast and composer.composed == shapes
            if any("+vals=[1,2]" in job for job in jobs):
                assert {"workload=dot_products", "+note='a b'", "seed=2"} <= set(composer._parsed)
                assert "+vals=[1,2]" not in composer._parsed
        # Every multirun has hydra.mode=MULTIRUN among its hydra overrides: hydra.* overrides
        # that leave Hydra's runtime fields alone keep them filled once per shape; env_copy
        # (it feeds env_set) makes its job fill them itself.
        master = loader.load_configuration(
            "config", ["hydra.mode=MULTIRUN", "hydra.sweep.dir=/tmp/sweep-x"], run_mode=RunMode.MULTIRUN)
        composer = SweepComposer(loader, master)
        jobs = [["seed=1"], ["seed=2"], ["seed=3", "hydra.job.env_copy=[HOME]"], ["seed=4"]]
        for overrides in jobs:
            want, got = loader.load_sweep_config(master, overrides), composer.compose(overrides)
            assert OmegaConf.to_yaml(got) == OmegaConf.to_yaml(want), overrides
        assert got.hydra.overrides.hydra == ["hydra.mode=MULTIRUN", "hydra.sweep.dir=/tmp/sweep-x"]
        assert composer.composed == 2 and composer.runtime_fills == 2  # seeds 1, 2, 4 once; seed 3 its own
        master = loader.load_configuration("config", [], run_mode=RunMode.MULTIRUN)
        composer = SweepComposer(loader, master)
        with pytest.raises(Exception) as bad:
            composer.compose(["workload.no_such_key=1"])
        with pytest.raises(type(bad.value)):
            loader.load_sweep_config(master, ["workload.no_such_key=1"])


def test_write_many_leaves_runs_as_write_does(tmp_path):
    """The sqlite batch path writes runs MLflow reads back exactly as the per-call path's."""
    from harness.record import Record
    from harness.tracking import MlflowTracker

    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "harness")
    parent = tracker.create_run("parent")

    def record(i: int, status: str = "FINISHED") -> Record:
        r = Record(start_ms=1000 + i, end_ms=2000 + i, status=status)
        r.params.update({"seed": str(i), "workload": "spin", "workload.x": "1"})
        r.metrics.update({"a/b": 1.5 + i, "nan": float("nan"), "inf": float("inf")})
        r.series["train/loss"] = [(0, 3.0), (1, 2.0), (2, 2.5)]
        r.tags.update({"harness.config_hash": f"h{i}"})
        r.artifacts.update({"config.yaml": b"a: 1\n", "tables/op_trace.csv": b"x,y\n"})
        return r

    one = tracker.write(record(1), "job one", parent_run_id=parent)
    many = tracker.write_many([(record(1), "job one", parent), (record(2, "FAILED"), "two", None)])
    assert all(isinstance(x, str) for x in many)
    a, b = tracker.client.get_run(one), tracker.client.get_run(many[0])
    for field in ("status", "start_time", "end_time", "user_id", "lifecycle_stage", "run_name", "experiment_id"):
        assert getattr(a.info, field) == getattr(b.info, field), field
    assert b.info.artifact_uri == a.info.artifact_uri.replace(one, many[0])
    assert a.data.params == b.data.params and a.data.tags == b.data.tags
    assert str(a.data.metrics) == str(b.data.metrics)  # NaN != NaN
    history = [[(m.step, m.value) for m in tracker.client.get_metric_history(r, "train/loss")] for r in (one, many[0])]
    assert history[0] == history[1] == [(0, 3.0), (1, 2.0), (2, 2.5)]
    assert sorted(f.path for f in tracker.client.list_artifacts(one)) == sorted(
        f.path for f in tracker.client.list_artifacts(many[0]))
    assert tracker.client.get_run(many[1]).info.status == "FAILED"
    assert tracker.finished_runs() == {"h1": tracker.finished_runs()["h1"]}
    # A record the store refuses does not take the others of its batch with it.
    bad = record(3)
    bad.params["p" * 300] = "key too long"
    out = tracker.write_many([(record(4), "four", None), (bad, "bad", None)])
    assert isinstance(out[0], str) and isinstance(out[1], Exception)
    assert tracker.client.get_run(out[0]).info.status == "FINISHED"
