"""Render a dashboard over 1,000 runs of one sweep; target: under 10 s.

    .venv/bin/python benchmarks/bench_dashboard.py [--runs 1000] [--json PATH]

Builds a temporary sqlite store (a sweep parent plus N child runs with the params,
metrics and a 10-step training curve a co-design sweep logs, written with
``MlflowClient.log_batch``), then times ``render_dashboard`` end to end the way
``harness dashboard`` runs it: open the store, read the runs in pages, read the
curves in bulk, judge the claims, draw the HTML and a PNG of every panel, and file
them with the parent run, in a process that already opened the store (as the
launcher's end-of-sweep call does). ``cli_fresh_process_s`` times the whole
``harness dashboard`` command in a new process (importing mlflow, opening the
store: seconds of fixed cost, see shared/STACK.md). Store creation is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = """
title: "Benchmark: 1,000-run co-design sweep"
select: {experiment: bench, sweep: latest}
panels:
  - {kind: scatter, x: accelerator/energy_pj, y: eval/accuracy, color: technique.ratio, pareto: true, log_x: true}
  - {kind: scatter, x: technique/accuracy_drop_points, y: technique/compression_ratio, color: accelerator, facet: accelerator.variant}
  - {kind: line, x: accelerator.stream_length, y: eval/accuracy, color: accelerator.variant, reference: eval/accuracy_exact}
  - {kind: curves, metric: train/loss, color: technique.ratio, max_runs: 40}
  - {kind: claims}
  - {kind: table, columns: [run, technique.ratio, accelerator.variant, accelerator.stream_length, eval/accuracy, accelerator/energy_pj], sort: -eval/accuracy}
"""


def make_store(root: Path, n: int) -> str:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("bench", artifact_location=str(root / "artifacts"))
    sweep = "feedfacecafebeef"
    parent = client.create_run(exp, tags={"harness.sweep_id": sweep, "harness.sweep_parent": "true"}, run_name="sweep").info.run_id
    rng = random.Random(0)
    now = int(time.time() * 1000)
    for i in range(n):
        ratio = rng.choice([1, 3, 10, 30, 100])
        variant = rng.choice(["ds_cim1", "ds_cim2"])
        length = rng.choice([64, 128, 256])
        acc = 0.98 - 0.01 * (ratio ** 0.5) * rng.random() - (64 / length) * 0.02
        params = {"workload": "mnist_lenet5", "technique": "admm", "accelerator": "ds_cim", "seed": str(i % 5),
                  "technique.ratio": str(ratio), "technique.method": "progressive_admm", "technique.quant_bits": "0",
                  "technique.projection": "irregular", "accelerator.variant": variant,
                  "accelerator.stream_length": str(length), "accelerator.scheme": "exclusive"}
        metrics = {"eval/accuracy": acc, "eval/accuracy_exact": 0.98, "accelerator/energy_pj": 5e5 * length / ratio,
                   "accelerator/tops_per_w": 3000 + 10 * rng.random(), "technique/compression_ratio": ratio * 0.98,
                   "technique/accuracy_drop_points": 100 * (0.98 - acc), "technique/dense_accuracy": 0.98}
        run = client.create_run(exp, start_time=now + i, run_name=f"job-{i}",
                                tags={"harness.sweep_id": sweep, "mlflow.parentRunId": parent})
        batch = [Metric(k, v, now, 0) for k, v in metrics.items()]
        batch += [Metric("train/loss", 2.0 / (s + 1) + 0.01 * rng.random(), now, s) for s in range(10)]
        client.log_batch(run.info.run_id, metrics=batch, params=[Param(k, v) for k, v in params.items()])
        client.set_terminated(run.info.run_id, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return uri


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--json", default="", help="write the result here too")
    ap.add_argument("--store", default="", help="keep the store in this folder and reuse it when it exists")
    ns = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        root = Path(ns.store or tmp)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        if (root / "mlflow.db").exists():
            uri = f"sqlite:///{root / 'mlflow.db'}"
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
            from mlflow.tracking import MlflowClient

            MlflowClient(uri).get_experiment_by_name("bench")  # open the store, as creating it would
        else:
            uri = make_store(root, ns.runs)
        t_store = time.perf_counter() - t0
        (root / "bench.yaml").write_text(SPEC)
        from harness.dashboard import render_dashboard

        t0 = time.perf_counter()
        result = render_dashboard(str(root / "bench.yaml"), uri, out=root / "bench.html", progress=False)
        t_render = time.perf_counter() - t0
        t0 = time.perf_counter()
        render_dashboard(str(root / "bench.yaml"), uri, out=root / "bench2.html", png=False, log_to_parent=False, progress=False)
        t_html = time.perf_counter() - t0
        # The whole command in a fresh process: imports mlflow and matplotlib, opens the store.
        t0 = time.perf_counter()
        cli = subprocess.run([sys.executable, "-m", "harness", "dashboard", str(root / "bench.yaml"), "--tracking-uri", uri,
                              "--out", str(root / "bench3.html"), "--quiet", "--no-log"], capture_output=True, text=True)
        t_cli = time.perf_counter() - t0
        if cli.returncode:
            raise SystemExit(cli.stderr)
        out = {
            "runs": result.runs,
            "render_s": round(t_render, 2),
            "render_html_only_s": round(t_html, 2),
            "cli_fresh_process_s": round(t_cli, 2),
            "store_creation_s": round(t_store, 1),
            "html_bytes": len(result.html),
            "pngs": len(result.pngs),
            "logged_to_parent": result.logged,
            "target_s": 10.0,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        }
    print(json.dumps(out, indent=2))
    if ns.json:
        Path(ns.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0 if out["render_s"] < 10.0 else 1


if __name__ == "__main__":
    sys.exit(main())
