"""The co-design sweep with the technique cache off and on, side by side in one run.

``harness run -m workload=mnist_lenet5 technique=admm technique.ratio=10,30,100
accelerator=exact,ds_cim`` needs each ADMM result once, not once per
accelerator. This runs the sweep twice from the same pre-trained base model
(copied into two fresh cache folders), first with ``technique_cache=false`` then
with ``technique_cache=true``, each into its own MLflow store, and compares wall
times and every non-``perf/`` metric of the six runs, matched by config hash.
It also sums the jobs' own wall times (``harness.duration_s``): the work done,
whatever the schedule. On a machine with ``s`` job slots, the cached sweep cannot
finish before ``ceil(k / s)`` technique results are computed one after another (``k``
distinct results, here 3): on 2 cores that is 2 of the uncached sweep's 3 rounds of
training, so its wall time cannot fall below about 67% of the uncached one however
little the rest costs. ``--serial`` (``hydra.launcher.max_concurrent=1``) runs both
sweeps one job at a time, where the bound is 3 of 6. Results go to
``benchmarks/results/technique_cache.json`` (``--serial``: ``technique_cache_serial.json``)::

    .venv/bin/python benchmarks/bench_technique_cache.py [--serial]
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


def job_seconds(folder: Path) -> float:
    """The jobs' own wall times, summed: the work done, whatever the schedule."""
    return sum(float(r.data.tags["harness.duration_s"]) for r in runs_of(folder))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serial", action="store_true", help="one job at a time (hydra.launcher.max_concurrent=1)")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/technique_cache[_serial].json")
    args = parser.parse_args()
    args.out = args.out or str(ROOT / "benchmarks" / "results" / f"technique_cache{'_serial' if args.serial else ''}.json")
    sweep = SWEEP + (["hydra.launcher.max_concurrent=1"] if args.serial else [])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        base.mkdir()
        # Train the base LeNet-5 once (a single run), so both sweeps start from the same cached model.
        subprocess.run([HARNESS, "run", "workload=mnist_lenet5", f"cache_dir={base / 'cache'}"], cwd=base,
                       env=env_for(base), check=True, capture_output=True, text=True)
        seconds, metrics, work = {}, {}, {}
        for mode in ("false", "true"):
            folder = tmp / f"cache_{mode}"
            shutil.copytree(base / "cache", folder / "cache")
            start = time.perf_counter()
            done = subprocess.run([HARNESS, "run", "-m", *sweep, f"technique_cache={mode}", f"cache_dir={folder / 'cache'}"],
                                  cwd=folder, env=env_for(folder), capture_output=True, text=True)
            seconds[mode] = time.perf_counter() - start
            if done.returncode != 0:
                raise SystemExit(f"sweep with technique_cache={mode} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
            metrics[mode] = metrics_by_hash(folder)
            work[mode] = job_seconds(folder)
    same_runs = set(metrics["false"]) == set(metrics["true"]) and len(metrics["true"]) == 6
    differences = {
        h: {k: [metrics["false"][h].get(k), v] for k, v in metrics["true"][h].items() if metrics["false"][h].get(k) != v}
        for h in metrics["true"] if h in metrics["false"]
    }
    differences = {h: d for h, d in differences.items() if d}
    identical = same_runs and not differences
    result = {
        "benchmark": "technique_cache",
        "command": "python benchmarks/bench_technique_cache.py" + (" --serial" if args.serial else ""),
        "sweep": "harness run -m " + " ".join(sweep),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_at_end": os.getloadavg(),
        "seconds_cache_off": seconds["false"],
        "seconds_cache_on": seconds["true"],
        "fraction_of_uncached_wall_time": seconds["true"] / seconds["false"],
        "job_seconds_cache_off": work["false"],
        "job_seconds_cache_on": work["true"],
        "fraction_of_uncached_job_seconds": work["true"] / work["false"],
        "runs": len(metrics["true"]),
        "identical_metrics": identical,
        "same_config_hashes": same_runs,
        "differences": differences,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"co-design sweep, 6 jobs: cache off {seconds['false']:.0f} s, cache on {seconds['true']:.0f} s "
          f"({100 * result['fraction_of_uncached_wall_time']:.0f}% of the uncached time); jobs' own time "
          f"{work['false']:.0f} vs {work['true']:.0f} s ({100 * result['fraction_of_uncached_job_seconds']:.0f}%); "
          f"identical metrics: {identical}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
