"""Ray launcher benchmark: parallel efficiency, per-job overhead, warm kernels.

    .venv/bin/python benchmarks/bench_launcher.py [--jobs 16] [--seconds 2] [--trivial 100] [--base DIR]

Measured side by side in one run, each sweep a real ``harness run -m`` in a fresh
folder with its own MLflow store:

(a) ``--jobs`` CPU-bound jobs of about ``--seconds`` each (the test-only ``spin``
    workload: fixed work in a numba kernel) with Hydra's basic launcher (one after
    another, in process) and with the Ray launcher on all cores. Reported: wall
    times and their ratio, and the Ray sweep's efficiency after Ray start-up,
    ``ideal / actual`` where ideal = total job time / cores: once with the jobs'
    CPU time (what the brief asks; it also charges CPU other processes on a shared
    machine took from us) and once with the jobs' own wall time (slot
    utilization: how well the launcher keeps every core's slot busy).
(b) ``--trivial`` jobs (``spin`` with no work: ~1 ms in the plugins): the harness's
    overhead per job end to end (the slope of the command's wall time between a
    small and this sweep, Ray start-up excluded), for both launchers.
(b') Hydra's composition of one job of the harness config (``load_sweep_config``,
    what Hydra's launchers do per job) next to the launcher's (the defaults composed
    once, each job's value overrides applied to a copy: harness/launcher/compose.py),
    measured in this process.
(b'') a worker's ``run_job`` for one trivial job: Hydra's own against the launcher's
    lean one (harness/launcher/remote.py), alternating job by job in this process.
(c) warm kernels: four small ``spin`` jobs on one worker with an empty numba cache,
    then the same four again (a new Ray, new worker processes, same cache): how the
    kernel was obtained in each job and what its first call cost.
(d) Ray at rest: the CPU the launcher's private Ray's own processes (GCS, raylet,
    dashboard head, agents, idle workers) take over 20 s with no job: CPU a sweep's
    jobs cannot have, the floor under (a)'s efficiency on a small machine.

``--base DIR`` also runs (a)'s Ray sweep and (b) with the code of another checkout
(a ``git worktree`` of an earlier commit: its ``harness``, ``hydra_plugins`` and
entry points first on ``PYTHONPATH``, this venv's dependencies), each right after
the same sweep with this code, so before and after share the machine's load.

Results go to ``benchmarks/results/launcher.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PLUGIN_PATH = ROOT / "tests" / "launcher_plugin"
#: Million spin steps per second of CPU on this machine kind (measured: ~1.5 ns a step).
STEPS_PER_S = 650.0


#: Set by ``--base``: ``PYTHONPATH`` entries that make a sweep run another checkout's code.
BASE_PATH: list[str] = []


def sweep(folder: Path, *args: str, numba_cache: Path, base: bool = False) -> tuple[float, subprocess.CompletedProcess]:
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    first = BASE_PATH if base else []
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (*first, str(PLUGIN_PATH), env.get("PYTHONPATH", "")) if p),
        MLFLOW_TRACKING_URI=f"sqlite:///{folder / 'mlflow.db'}",
        MLFLOW_DISABLE_TELEMETRY="true",
        NUMBA_CACHE_DIR=str(numba_cache),  # the basic launcher's jobs use the same cache
    )
    cmd = [
        sys.executable, "-m", "harness", "run", "-m", *args,
        f"cache_dir={folder / 'cache'}", f"hydra.launcher.numba_cache_dir={numba_cache}",
    ]
    if "hydra/launcher=basic" in args:
        cmd.remove(f"hydra.launcher.numba_cache_dir={numba_cache}")
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return wall, done


def runs_of(folder: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name("harness")
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    parents = [r for r in runs if r.data.tags.get("harness.sweep_parent") == "true"]
    children = [r for r in runs if r.data.tags.get("harness.sweep_parent") != "true"]
    return parents, children


def job_span(children) -> float:
    """Wall time from the first job's start to the last job's end (basic launcher)."""
    return (max(r.info.end_time for r in children) - min(r.info.start_time for r in children)) / 1000.0


def ray_efficiency(folder: Path, cores: int) -> dict:
    """What a Ray sweep's parent run and children say about its parallel efficiency."""
    parents, children = runs_of(folder)
    tags = parents[0].data.tags
    # Jobs wall: Ray ready to the last record written (the writer thread's drain included).
    jobs_wall = float(tags["harness.sweep.jobs_wall_s"]) + float(tags.get("harness.sweep.write_wait_s", 0.0))
    cpu = sum(r.data.metrics["spin/cpu_s"] for r in children)
    job_wall = sum(float(r.data.tags["harness.duration_s"]) for r in children)
    return {
        "ray_startup_s": float(tags["harness.sweep.ray_startup_s"]),
        "ray_jobs_wall_s": jobs_wall,
        "ray_shutdown_s": float(tags["harness.sweep.ray_shutdown_s"]),
        "job_cpu_s_mean_ray": cpu / len(children),
        "cpu_efficiency_after_startup": (cpu / cores) / jobs_wall,
        "slot_utilization_after_startup": (job_wall / cores) / jobs_wall,
    }


def bench_parallel(work: Path, jobs: int, seconds: float, cores: int, cache: Path) -> dict:
    iterations = round(seconds * STEPS_PER_S)
    common = ["workload=spin", f"workload.iterations={iterations}", f"seed=range(0,{jobs})"]
    sweep(work / "warmup", "workload=spin", "workload.iterations=1", "hydra/launcher=basic", numba_cache=cache)
    basic_wall, _ = sweep(work / "a-basic", *common, "hydra/launcher=basic", numba_cache=cache)
    _, basic_children = runs_of(work / "a-basic")
    load = os.getloadavg()
    ray_wall, _ = sweep(work / "a-ray", *common, numba_cache=cache)
    base = {}
    if BASE_PATH:
        base_load = os.getloadavg()
        base_wall, _ = sweep(work / "a-ray-base", *common, numba_cache=cache, base=True)
        base = {"base": {"ray_wall_s": base_wall, "load_avg_before": base_load, **ray_efficiency(work / "a-ray-base", cores)}}
    parents, children = runs_of(work / "a-ray")
    tags = parents[0].data.tags
    startup = float(tags["harness.sweep.ray_startup_s"])
    jobs_wall = float(tags["harness.sweep.jobs_wall_s"]) + float(tags.get("harness.sweep.write_wait_s", 0.0))
    shutdown = float(tags["harness.sweep.ray_shutdown_s"])
    cpu = sum(r.data.metrics["spin/cpu_s"] for r in children)
    job_wall = sum(float(r.data.tags["harness.duration_s"]) for r in children)
    basic_cpu = sum(r.data.metrics["spin/cpu_s"] for r in basic_children)
    basic_span = job_span(basic_children)
    return {
        "jobs": jobs,
        "iterations_millions": iterations,
        "job_cpu_s_mean_basic": basic_cpu / jobs,
        "job_cpu_s_mean_ray": cpu / jobs,
        "basic_wall_s": basic_wall,
        "basic_jobs_span_s": basic_span,
        "ray_wall_s": ray_wall,
        "ray_startup_s": startup,
        "ray_jobs_wall_s": jobs_wall,
        "wall_ratio_basic_over_ray": basic_wall / ray_wall,
        "jobs_ratio_basic_over_ray_after_startup": basic_span / jobs_wall,
        "ray_shutdown_s": shutdown,
        "cpu_efficiency_after_startup": (cpu / cores) / jobs_wall,
        "cpu_efficiency_after_startup_with_shutdown": (cpu / cores) / (jobs_wall + shutdown),
        "slot_utilization_after_startup": (job_wall / cores) / jobs_wall,
        "ideal_speedup": float(cores),
        "load_avg_before_ray": load,
        **base,
    }


def trivial_marginal(work: Path, name: str, count: int, cache: Path, base: bool = False) -> dict:
    """Per-job cost end to end: the slope of the command's wall time between a small
    sweep and a ``count``-job one, each minus its Ray start-up: what one more job costs
    a user, with process start-up and the sweep's fixed costs cancelled out."""
    args = ["workload=spin", "workload.iterations=0"]
    small = max(2, count // 10)
    load = os.getloadavg()
    wall, _ = sweep(work / f"{name}", *args, f"seed=range(0,{count})", numba_cache=cache, base=base)
    small_wall, _ = sweep(work / f"{name}-small", *args, f"seed=range(0,{small})", numba_cache=cache, base=base)
    tags = runs_of(work / name)[0][0].data.tags
    startup = float(tags["harness.sweep.ray_startup_s"])
    small_startup = float(runs_of(work / f"{name}-small")[0][0].data.tags["harness.sweep.ray_startup_s"])
    marginal = ((wall - startup) - (small_wall - small_startup)) / (count - small)
    _, children = runs_of(work / name)
    return {
        "end_to_end_marginal_ms_per_job": 1000 * marginal,
        "jobs": count,
        "ray_wall_s": wall,
        "ray_startup_s": startup,
        "small_sweep_jobs": small,
        "small_sweep_wall_s": small_wall,
        "compose_and_hash_ms_per_job": 1000 * float(tags["harness.sweep.compose_s"]) / count,
        "job_runner_time_ms_mean": 1000 * sum(float(r.data.tags["harness.duration_s"]) for r in children) / count,
        "load_avg_before": load,
    }


def bench_trivial(work: Path, count: int, cache: Path) -> dict:
    # The first sweep on an empty numba cache compiles the kernel (~1 s): do that here,
    # not in the first measured pair, whose slope it would inflate by ~10 ms per job.
    sweep(work / "b-warmup", "workload=spin", "workload.iterations=0", "seed=0", numba_cache=cache)
    out = {"ray": trivial_marginal(work, "b-ray", count, cache)}
    if BASE_PATH:
        out["base"] = trivial_marginal(work, "b-ray-base", count, cache, base=True)
        out["ray_again"] = trivial_marginal(work, "b-ray-again", count, cache)  # after: load may have moved
    basic_wall, _ = sweep(work / "b-basic", "workload=spin", "workload.iterations=0", f"seed=range(0,{count})",
                          "hydra/launcher=basic", numba_cache=cache)
    _, basic_children = runs_of(work / "b-basic")
    out["basic_ms_per_job"] = 1000 * job_span(basic_children) / count
    return out


def bench_compose(count: int = 40) -> dict:
    """Milliseconds Hydra takes to compose one sweep job of the harness config."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from harness.config import conf_dir, register_configs

    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir()), job_name="bench"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", ["workload.count=64"], run_mode=RunMode.MULTIRUN)
        loader.load_sweep_config(master, ["seed=0"])  # warm caches
        t0 = time.perf_counter()
        for seed in range(count):
            loader.load_sweep_config(master, [f"seed={seed}", "workload.count=64"])
        per_job = (time.perf_counter() - t0) / count
        from harness.launcher.compose import SweepComposer

        composer = SweepComposer(loader, master)
        t0 = time.perf_counter()
        for seed in range(count):  # the launcher's way: the defaults composed once, values per job
            composer.compose([f"seed={seed}", "workload.count=64"])
        fast = (time.perf_counter() - t0) / count
    return {"jobs": count, "hydra_compose_ms_per_job": 1000 * per_job, "launcher_compose_ms_per_job": 1000 * fast,
            "load_avg": os.getloadavg()}


def bench_worker(count: int = 60) -> dict:
    """Milliseconds a worker spends in ``run_job`` for one trivial job, Hydra's own against
    the launcher's lean one, in process, alternating job by job (median)."""
    import copy
    import statistics

    from hydra import initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import run_job, setup_globals
    from hydra.types import HydraContext, RunMode
    from omegaconf import open_dict

    from harness.app import record_task
    from harness.config import conf_dir, register_configs
    from harness.launcher.compose import SweepComposer
    from harness.launcher.remote import run_job_lean

    register_configs()
    times: dict = {"hydra": [], "lean": []}
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(
        version_base="1.3", config_dir=str(conf_dir()), job_name="bench"
    ):
        loader = GlobalHydra.instance().config_loader()
        common = ["workload=spin", "workload.iterations=0", f"cache_dir={tmp}/cache"]
        master = loader.load_configuration("config", [*common, f"hydra.sweep.dir={tmp}/multirun"], run_mode=RunMode.MULTIRUN)
        composer = SweepComposer(loader, master)
        setup_globals()
        context = HydraContext(config_loader=loader, callbacks=Callbacks(master))
        for n in range(count + 10):
            config = composer.compose([*common, f"seed={n}"])
            with open_dict(config):
                config.hydra.job.num, config.hydra.job.id = n, f"bench_{n}"
            for name, runner in (("hydra", run_job), ("lean", run_job_lean))[:: 1 if n % 2 else -1]:
                t0 = time.perf_counter()
                runner(hydra_context=context, task_function=record_task, config=copy.deepcopy(config),
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
                if n >= 10:  # the first jobs load the plugins
                    times[name].append(time.perf_counter() - t0)
    hydra_ms, lean_ms = (1000 * statistics.median(times[k]) for k in ("hydra", "lean"))
    return {"jobs": count, "hydra_run_job_ms": hydra_ms, "lean_run_job_ms": lean_ms, "load_avg": os.getloadavg()}


def bench_warm(work: Path) -> dict:
    cache = work / "c-numba"  # empty: the first job compiles
    args = ["workload=spin", "workload.iterations=1", "seed=0,1,2,3", "hydra.launcher.max_concurrent=1"]
    out = {}
    for name, extra in (("first_sweep", []), ("second_sweep_new_workers", ["hydra.launcher.resume=false"])):
        sweep(work / "c-ray", *args, *extra, numba_cache=cache)
        _, children = runs_of(work / "c-ray")
        children = sorted(children, key=lambda r: r.info.start_time)[-4:]
        out[name] = [
            {
                "seed": int(r.data.params["seed"]),
                "kernel": {0: "in memory", 1: "disk cache", 2: "compiled"}[int(r.data.metrics["spin/kernel_source"])],
                "first_call_ms": 1000 * r.data.metrics["spin/kernel_first_call_s"],
            }
            for r in children
        ]
    return out


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # exited
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list:
    children: dict = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def bench_ray_idle(seconds: float = 20.0) -> dict:
    """CPU Ray's own processes take while no job runs: the launcher's private Ray
    (harness.launcher.cluster, default options), left idle for ``seconds`` after a
    settling pause. On a 2-core machine this is CPU a sweep's jobs cannot have."""
    from harness.launcher.cluster import Cluster
    from harness.launcher.config import HarnessRayLauncherConf

    cluster = Cluster(HarnessRayLauncherConf())
    cluster.start({})
    try:
        time.sleep(5.0)  # the workers finish starting
        pids = _descendants(os.getpid())
        before = {p: _cpu_seconds(p) for p in pids}
        t0 = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        used = sum(max(0.0, _cpu_seconds(p) - before[p]) for p in pids)
    finally:
        cluster.stop()
    cores = os.cpu_count() or 1
    return {"processes": len(pids), "seconds": elapsed, "cpu_percent_of_one_core": 100 * used / elapsed,
            "cpu_fraction_of_machine": used / elapsed / cores}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--trivial", type=int, default=100)
    parser.add_argument("--base", help="another checkout (git worktree) to measure side by side")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: parallel,trivial,compose,worker,warm,idle")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "launcher.json"))
    ns = parser.parse_args()
    skip = {x.strip() for x in ns.skip.split(",") if x.strip()}
    # The test-only `spin` workload's entry point, for the sections that compose or run jobs
    # in this process: on the path before any of them creates the plugin host.
    sys.path.insert(0, str(PLUGIN_PATH))
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-launcher-"))
    try:
        cache = work / "numba"
        t0 = time.perf_counter()
        result = {
            "command": "python benchmarks/bench_launcher.py " + " ".join(sys.argv[1:]),
            "machine": {"cores": cores, "python": platform.python_version(), "load_avg_before": load_before},
        }
        if ns.base:
            from harness.commits import dist_info_for

            tree = Path(ns.base).resolve()
            site = work / "base-site"
            dist_info_for(tree, site)
            BASE_PATH[:] = [str(site), str(tree)]
            commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
            result["base"] = {"path": str(tree), "commit": commit.stdout.strip()}
        sections = {"parallel": lambda: bench_parallel(work, ns.jobs, ns.seconds, cores, cache),
                    "trivial": lambda: bench_trivial(work, ns.trivial, cache),
                    "compose": bench_compose, "worker": bench_worker, "warm_kernels": lambda: bench_warm(work),
                    "idle_ray": bench_ray_idle}
        out = Path(ns.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        for name, run in sections.items():
            if name.split("_")[0] not in skip:
                result[name] = run()
                # Each section's figures are kept as soon as it ends (a later one may fail),
                # beside the results file, which only a complete run replaces.
                partial.write_text(json.dumps(result, indent=2) + "\n")
        result["machine"]["load_avg_after"] = os.getloadavg()
        result["bench_wall_s"] = time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    partial.unlink(missing_ok=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
