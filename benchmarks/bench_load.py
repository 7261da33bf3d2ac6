"""Load and concurrency of the harness, with its correctness checked (issue 12, item 6).

Four scenarios, each a real ``harness run`` subprocess (or several) on a real Ray and a
real MLflow store, each ending in a check that fails the benchmark (non-zero exit):

* ``sweep``: one sweep of ``--jobs`` trivial jobs (the test-only ``spin`` workload, no
  work): wall time, peak driver memory (the driver's own ``ru_maxrss``), and every job
  FINISHED exactly once.
* ``writers``: 8 single runs started at once into one sqlite store, then 2 sweeps at
  once into one experiment: every run FINISHED, none lost, no "database is locked".
* ``server``: a sweep tracking to a real ``mlflow server`` (127.0.0.1, sqlite backend)
  that is killed (SIGKILL) after a few runs are written and restarted seconds later:
  the driver's writes wait and retry, every job is FINISHED exactly once, nothing is
  left pending.
* ``sigkill``: the driver of one sweep is SIGKILLed at ``--kills`` random moments,
  each followed by a rerun of the same command; the last rerun runs to the end. The
  sweep completes with every job FINISHED exactly once.

    .venv/bin/python benchmarks/bench_load.py            # all four, the README figures
    .venv/bin/python benchmarks/bench_load.py --only sigkill --kills 3 --jobs 200

Results and the machine load go to ``benchmarks/results/load.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
sys.path.insert(0, str(TESTS))

from mlflow_server import MlflowServer  # noqa: E402  (tests/mlflow_server.py)

#: Runs ``harness`` and writes the driver's peak resident memory (KiB) at exit.
DRIVER = (
    "import atexit, os, resource, sys\n"
    "atexit.register(lambda: open(os.environ['BENCH_RSS_FILE'], 'w').write("
    "str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)))\n"
    "from harness.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


class Failed(AssertionError):
    """A scenario's correctness check failed."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def environment(folder: Path, uri: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS / "launcher_plugin"), env.get("PYTHONPATH", "")])),
        MLFLOW_TRACKING_URI=uri,
        MLFLOW_DISABLE_TELEMETRY="true",
        RAY_USAGE_STATS_ENABLED="0",
        NUMBA_CACHE_DIR=str(folder / "numba"),
        BENCH_RSS_FILE=str(folder / "rss.txt"),
    )
    if uri.startswith("sqlite:"):
        runs_of(uri)  # create the store once, before any writer races to migrate its schema
    return env


def harness_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", DRIVER, *args]


def runs_of(uri: str, experiment: str = "harness"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    found, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def children_once(runs, jobs: int, what: str) -> Counter:
    """Every job FINISHED exactly once: ``jobs`` config hashes, each with one FINISHED run."""
    children = [r for r in runs if r.data.tags.get("harness.sweep_parent") != "true"]
    finished = Counter(r.data.tags["harness.config_hash"] for r in children if r.info.status == "FINISHED")
    check(len(finished) == jobs, f"{what}: {len(finished)} of {jobs} jobs FINISHED")
    check(set(finished.values()) == {1}, f"{what}: a job FINISHED twice: {[h for h, n in finished.items() if n > 1]}")
    check(not [r for r in runs if r.info.status == "RUNNING"], f"{what}: a run was left RUNNING")
    return Counter(r.info.status for r in children)


def stop_group(proc: subprocess.Popen) -> None:
    """The driver's process group (its private Ray goes with it), by group id."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def sweep_args(folder: Path, jobs: int, *extra: str) -> list[str]:
    return ["run", "-m", "workload=spin", f"seed=range(0,{jobs})", f"cache_dir={folder / 'cache'}",
            "hydra.launcher.progress=false", *extra]


# ---------------------------------------------------------------------------------- scenarios
def scenario_sweep(folder: Path, jobs: int) -> dict:
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env = environment(folder, uri)
    started = time.monotonic()
    done = subprocess.run(harness_cmd(*sweep_args(folder, jobs)), cwd=folder, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    check(done.returncode == 0, f"sweep of {jobs}: exit {done.returncode}: {done.stderr[-2000:]}")
    statuses = children_once(runs_of(uri), jobs, f"sweep of {jobs}")
    rss_mb = int((folder / "rss.txt").read_text()) / 1024
    line = next((x for x in done.stdout.splitlines() if x.startswith(f"Sweep {jobs} jobs")), "")
    return {"jobs": jobs, "wall_s": round(wall, 1), "peak_driver_rss_mb": round(rss_mb, 1),
            "per_job_ms": round(1000 * wall / jobs, 1), "summary": line, "statuses": dict(statuses)}


def scenario_writers(folder: Path, singles: int = 8, sweep_jobs: int = 20) -> dict:
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    env = environment(folder, uri)
    result = {}
    # 8 single runs at once, each its own process writing to the one store.
    started = time.monotonic()
    procs = [subprocess.Popen(harness_cmd("run", "workload=spin", f"seed={i}", f"cache_dir={folder / 'cache'}"),
                              cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(singles)]
    outs = [p.communicate() for p in procs]
    result["singles_wall_s"] = round(time.monotonic() - started, 1)
    for p, (out, err) in zip(procs, outs):
        check(p.returncode == 0, f"single run: exit {p.returncode}: {err[-1500:]}")
        check("database is locked" not in err + out, f"single run: database is locked: {err[-1500:]}")
    runs = runs_of(uri)
    check(len(runs) == singles and {r.info.status for r in runs} == {"FINISHED"},
          f"{singles} single runs at once: {Counter(r.info.status for r in runs)}")
    # 2 sweeps at once into one experiment (each with its own private Ray).
    started = time.monotonic()
    procs = [subprocess.Popen(harness_cmd(*sweep_args(folder, sweep_jobs), f"seed=range({k * 1000},{k * 1000 + sweep_jobs})",
                                          "experiment_name=two_sweeps", "hydra.launcher.num_cpus=1"),
                              cwd=folder, env=dict(env, BENCH_RSS_FILE=str(folder / f"rss{k}.txt")),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(2)]
    outs = [p.communicate() for p in procs]
    result["two_sweeps_wall_s"] = round(time.monotonic() - started, 1)
    for p, (out, err) in zip(procs, outs):
        check(p.returncode == 0, f"concurrent sweep: exit {p.returncode}: {err[-1500:]}")
        check("database is locked" not in err + out, f"concurrent sweep: database is locked: {err[-1500:]}")
    runs = runs_of(uri, "two_sweeps")
    children_once(runs, 2 * sweep_jobs, "two sweeps at once")
    parents = [r for r in runs if r.data.tags.get("harness.sweep_parent") == "true"]
    check(len(parents) == 2 and {r.info.status for r in parents} == {"FINISHED"}, "two sweeps: two FINISHED parents")
    result.update(singles=singles, sweeps=2, sweep_jobs=sweep_jobs, runs_written=singles + len(runs))
    return result


def scenario_server(folder: Path, jobs: int = 24, down_s: float = 10.0) -> dict:
    server = MlflowServer(folder / "server").start()
    try:
        env = environment(folder, server.uri)
        driver = subprocess.Popen(harness_cmd(*sweep_args(folder, jobs, "workload.sleep=0.5")), cwd=folder, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while len(runs_of(server.uri)) < 5:  # the parent and a few children are written
                check(driver.poll() is None, f"server: the sweep ended early: {driver.communicate()[1][-1500:]}")
                check(time.monotonic() < deadline, "server: the sweep never got going")
                time.sleep(0.3)
            written_before = len(runs_of(server.uri))
            server.stop(kill=True)
            killed = time.monotonic()
            time.sleep(down_s)
            server.start()
            down = time.monotonic() - killed
            out, err = driver.communicate(timeout=900)
        finally:
            if driver.poll() is None:
                stop_group(driver)
        check(driver.returncode == 0, f"server: exit {driver.returncode}: {err[-2000:]}")
        check(not list((folder / "cache").rglob("*.pkl")), "server: records were left pending on disk")
        statuses = children_once(runs_of(server.uri), jobs, "server killed and restarted")
        return {"jobs": jobs, "runs_written_before_kill": written_before, "server_down_s": round(down, 1),
                "statuses": dict(statuses)}
    finally:
        server.stop()


def finished_count(db: Path) -> int:
    """FINISHED runs in an sqlite store, read with sqlite3 (cheap enough to poll)."""
    import sqlite3

    con = sqlite3.connect(db, timeout=30)  # read-write: it may have to roll back a killed writer's journal
    try:
        return con.execute("select count(*) from runs where status = 'FINISHED'").fetchone()[0]
    finally:
        con.close()


def scenario_sigkill(folder: Path, jobs: int = 60, kills: int = 10, seed: int = 0) -> dict:
    """Kill points are random: one in five during start-up (a random 0.5-8 s after the
    start), the others once a random number of further jobs has FINISHED (up to a
    quarter of those left), plus a random 0-0.5 s."""
    db = folder / "mlflow.db"
    uri = f"sqlite:///{db}"
    env = environment(folder, uri)
    rng = random.Random(seed)
    args = sweep_args(folder, jobs, "workload.sleep=0.3")
    points = []
    for _ in range(kills):
        before = finished_count(db)
        driver = subprocess.Popen(harness_cmd(*args), cwd=folder, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, start_new_session=True)
        if rng.random() < 0.2:
            point = {"phase": "start-up", "after_s": round(rng.uniform(0.5, 8.0), 2)}
            time.sleep(point["after_s"])
        else:
            left = max(1, jobs - max(0, before - 1))
            point = {"phase": "jobs", "after_more_finished": rng.randint(1, max(1, left // 4))}
            deadline = time.monotonic() + 300
            while finished_count(db) < before + point["after_more_finished"] and driver.poll() is None:
                check(time.monotonic() < deadline, "sigkill: the sweep stopped making progress")
                time.sleep(0.1)
            time.sleep(rng.uniform(0.0, 0.5))
        point["driver_had_exited"] = driver.poll() is not None
        stop_group(driver)
        point["finished_at_kill"] = finished_count(db)
        points.append(point)
    done = subprocess.run(harness_cmd(*args), cwd=folder, env=env, capture_output=True, text=True)
    check(done.returncode == 0, f"sigkill: the final rerun exited {done.returncode}: {done.stderr[-2000:]}")
    statuses = children_once(runs_of(uri), jobs, f"driver SIGKILLed {kills} times")
    parents = [r for r in runs_of(uri) if r.data.tags.get("harness.sweep_parent") == "true"]
    check(len(parents) == 1 and parents[0].info.status == "FINISHED", f"sigkill: parents {[p.info.status for p in parents]}")
    return {"jobs": jobs, "kills": kills, "points": points, "statuses": dict(statuses)}


SCENARIOS = {"sweep": scenario_sweep, "writers": scenario_writers, "server": scenario_server, "sigkill": scenario_sigkill}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append", help="run only these (repeatable)")
    parser.add_argument("--jobs", type=int, default=1000, help="jobs of the large sweep (default 1000)")
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs of the driver (default 10)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "load.json"))
    ns = parser.parse_args()
    results = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "load_before": load()}
    failed = []
    for name in ns.only or list(SCENARIOS):
        folder = Path(tempfile.mkdtemp(prefix=f"hl-{name}-", dir="/tmp"))  # short: Ray's socket paths
        started = time.monotonic()
        try:
            kwargs = {"sweep": {"jobs": ns.jobs}, "sigkill": {"kills": ns.kills}}.get(name, {})
            results[name] = SCENARIOS[name](folder, **kwargs)
            results[name]["scenario_s"] = round(time.monotonic() - started, 1)
            results[name]["load_after"] = load()
            print(f"{name}: ok {json.dumps(results[name])}", flush=True)
        except Failed as exc:
            failed.append(name)
            results[name] = {"failed": str(exc)}
            print(f"{name}: FAILED {exc}", flush=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    results["load_after"] = load()
    Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
    Path(ns.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"results in {ns.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
