"""The co-design sweep with the technique cache off and on, side by side in one run.

``harness run -m workload=mnist_lenet5 technique=admm technique.ratio=10,30,100
accelerator=exact,ds_cim`` needs each ADMM result once, not once per
accelerator. This runs the sweep twice from the same pre-trained base model
(copied into two fresh cache folders), first with ``technique_cache=false`` then
with ``technique_cache=true``, each into its own MLflow store, and compares wall
times and every non-``perf/`` metric of the six runs, matched by config hash.
It also sums the jobs' own wall times (``harness.duration_s``) and CPU times
(``harness.cpu_s``): the CPU time is the work done, whatever the schedule, and a job
waiting on another's technique result spends wall time but almost no CPU. The base's numba kernels (both accelerators') are compiled
before the pairs, as after a user's first sweep: cold, each worker's first ds_cim job
compiles for ~20 s in both sweeps alike, which hides the cache's effect. On a machine with ``s`` job slots, the cached sweep cannot
finish before ``ceil(k / s)`` technique results are computed one after another (``k``
distinct results, here 3): on 2 cores that is 2 of the uncached sweep's 3 rounds of
training, so its jobs' span stays near two thirds of the uncached one however little
the rest costs (a pair lands a few points lower when the uncached sweep's two-at-a-time
trainings slow each other more than usual). ``--serial`` (``hydra.launcher.max_concurrent=1``) runs both
sweeps one job at a time, where the bound is 3 of 6. Results go to
``benchmarks/results/technique_cache.json`` (``--serial``: ``technique_cache_serial.json``)::

    .venv/bin/python benchmarks/bench_technique_cache.py [--serial] [--repeats N]

On a shared machine one pair can mislead (a neighbour's load lands on one sweep):
``--repeats`` runs pairs in alternating order and reports the median ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HARNESS = str(Path(sys.executable).parent / "harness")
SWEEP = ["workload=mnist_lenet5", "technique=admm", "technique.ratio=10,30,100", "accelerator=exact,ds_cim"]


def env_for(folder: Path) -> dict:
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", RAY_USAGE_STATS_ENABLED="0")
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    return env


def runs_of(folder: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name("harness")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    return [r for r in runs if r.info.status == "FINISHED" and r.data.tags.get("harness.sweep_parent") != "true"]


def metrics_by_hash(folder: Path) -> dict:
    return {
        r.data.tags["harness.config_hash"]: {k: v for k, v in r.data.metrics.items() if not k.startswith("perf/")}
        for r in runs_of(folder)
    }


def job_rows(folder: Path) -> list:
    """Per run: overrides, technique cache hit or miss, its own wall time, start (s after the first), CPU time."""
    runs = sorted(runs_of(folder), key=lambda r: r.info.start_time)
    t0 = runs[0].info.start_time if runs else 0
    return [[r.data.tags.get("harness.job_overrides", ""), r.data.tags.get("harness.technique_cache", ""),
             round(float(r.data.tags["harness.duration_s"]), 1), round((r.info.start_time - t0) / 1000, 1),
             round(float(r.data.tags["harness.cpu_s"]), 1)] for r in runs]


def job_seconds(folder: Path) -> float:
    """The jobs' own wall times, summed (waiting included)."""
    return sum(float(r.data.tags["harness.duration_s"]) for r in runs_of(folder))


def cpu_seconds(folder: Path) -> float:
    """The jobs' own CPU times, summed (all threads of each job's process)."""
    return sum(float(r.data.tags["harness.cpu_s"]) for r in runs_of(folder))


def run_pair(tmp: Path, base: Path, sweep: list, order: tuple, n: int) -> dict:
    """Both sweeps once, in ``order``, each from a fresh copy of the base model's cache."""
    out = {}
    for mode in order:
        folder = tmp / f"r{n}_cache_{mode}"
        shutil.copytree(base / "cache", folder / "cache")
        start = time.perf_counter()
        done = subprocess.run([HARNESS, "run", "-m", *sweep, f"technique_cache={mode}", f"cache_dir={folder / 'cache'}"],
                              cwd=folder, env=env_for(folder), capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"sweep with technique_cache={mode} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        out[mode] = {"seconds": seconds, "metrics": metrics_by_hash(folder), "job_seconds": job_seconds(folder),
                     "cpu_seconds": cpu_seconds(folder),
                     "jobs": job_rows(folder), "load_average_after": os.getloadavg()}
        shutil.rmtree(folder, ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serial", action="store_true", help="one job at a time (hydra.launcher.max_concurrent=1)")
    parser.add_argument("--repeats", type=int, default=1, help="pairs of sweeps, in alternating order (default 1)")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/technique_cache[_serial].json")
    args = parser.parse_args()
    args.out = args.out or str(ROOT / "benchmarks" / "results" / f"technique_cache{'_serial' if args.serial else ''}.json")
    sweep = SWEEP + (["hydra.launcher.max_concurrent=1"] if args.serial else [])
    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        base.mkdir()
        # Train the base LeNet-5 once (a single run), so every sweep starts from the same cached
        # model, and compile both accelerators' numba kernels into the cache the sweeps copy
        # (their workers use cache_dir/numba): as after a user's first sweep, the pair compares
        # the technique cache, not numba compiling ds_cim's kernels (~20 s per worker when cold).
        base_env = dict(env_for(base), NUMBA_CACHE_DIR=str(base / "cache" / "numba"))
        for accelerator in ("exact", "ds_cim"):
            subprocess.run([HARNESS, "run", "workload=mnist_lenet5", f"accelerator={accelerator}",
                            f"cache_dir={base / 'cache'}"], cwd=base, env=base_env, check=True, capture_output=True,
                           text=True)
        for n in range(args.repeats):
            order = ("false", "true") if n % 2 == 0 else ("true", "false")
            pairs.append(run_pair(tmp, base, sweep, order, n))
            p = pairs[-1]
            print(f"pair {n + 1} ({' then '.join('on' if m == 'true' else 'off' for m in order)}): cache off "
                  f"{p['false']['seconds']:.0f} s, on {p['true']['seconds']:.0f} s "
                  f"({100 * p['true']['seconds'] / p['false']['seconds']:.0f}%)", flush=True)
    metrics = {mode: pairs[0][mode]["metrics"] for mode in ("false", "true")}
    same_runs = all(set(p["false"]["metrics"]) == set(p["true"]["metrics"]) == set(metrics["true"])
                    for p in pairs) and len(metrics["true"]) == 6
    differences = {}
    for p in pairs:
        for h, values in p["true"]["metrics"].items():
            for k, v in values.items():
                for other in (p["false"]["metrics"], metrics["false"]):
                    if other.get(h, {}).get(k) != v:
                        differences.setdefault(h, {})[k] = [other.get(h, {}).get(k), v]
    identical = same_runs and not differences
    ratios = sorted(p["true"]["seconds"] / p["false"]["seconds"] for p in pairs)
    work_ratios = sorted(p["true"]["job_seconds"] / p["false"]["job_seconds"] for p in pairs)
    cpu_ratios = sorted(p["true"]["cpu_seconds"] / p["false"]["cpu_seconds"] for p in pairs)
    median = ratios[len(ratios) // 2]
    result = {
        "benchmark": "technique_cache",
        "command": "python benchmarks/bench_technique_cache.py" + (" --serial" if args.serial else "")
                   + (f" --repeats {args.repeats}" if args.repeats != 1 else ""),
        "sweep": "harness run -m " + " ".join(sweep),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_at_end": os.getloadavg(),
        "fraction_of_uncached_wall_time": median,
        "fraction_of_uncached_wall_time_per_pair": ratios,
        "fraction_of_uncached_job_seconds_per_pair": work_ratios,
        "fraction_of_uncached_job_cpu_seconds_per_pair": cpu_ratios,
        "pairs": [{mode: {k: v for k, v in p[mode].items() if k != "metrics"} for mode in ("false", "true")} for p in pairs],
        "runs": len(metrics["true"]),
        "identical_metrics": identical,
        "same_config_hashes": same_runs,
        "differences": differences,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"co-design sweep, 6 jobs, {len(pairs)} pair(s): cache on at {100 * median:.0f}% of the uncached wall time "
          f"(median; pairs {', '.join(f'{100 * r:.0f}%' for r in ratios)}); jobs' own time "
          f"{', '.join(f'{100 * r:.0f}%' for r in work_ratios)}, their CPU time "
          f"{', '.join(f'{100 * r:.0f}%' for r in cpu_ratios)}; identical metrics: {identical}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
