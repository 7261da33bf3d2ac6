"""ds_cim evaluation of the INT8 LeNet-5 test split, with and without the per-weight cache.

Contract v2 lets a backend prepare a stationary weight once (``prepare_weight``)
and reuse it on every call. Before it, ``ds_cim`` redid its weight side (int8
encoding, per-group shifts, slice tables) on every GEMM call. This benchmark
measures both in one run, alternating, on the same model and data:

* ``per_call``: ``bind(backend, cache_weights=False)``, the weight side prepared
  on every call, as before the change;
* ``cached``: ``bind(backend)``, the weight side prepared once per weight tensor.

Both give bit-identical logits (checked). Every timed evaluation starts from an empty
weight cache, so its time includes preparing the weights (``prepared_seconds`` times that
step alone). Wall time and the process's CPU time (all threads) are recorded with the load
average: on a shared machine the CPU time is the steadier figure. The model is LeNet-5 as
the ``mnist_lenet5`` workload trains it (trained once into a temporary cache), at the
DS-CIM1 default (L=256). Results go to ``benchmarks/results/ds_cim_eval.json``::

    .venv/bin/python benchmarks/bench_ds_cim_eval.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

from harness.api import RunContext
from harness.numerics import bind, weight_cache
from harness_plugins.ds_cim import DsCimAccelerator, DsCimConfig
from harness_plugins.mnist_lenet5 import MnistLenet5, MnistLenet5Config

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stream-length", type=int, default=256)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ds_cim_eval.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as cache:
        ctx = RunContext(0, cache)
        workload = MnistLenet5(MnistLenet5Config(quant_bits=8))
        subject = workload.build(ctx)
    x = subject.data.x_test
    accel = DsCimAccelerator(DsCimConfig(stream_length=args.stream_length))
    backend = accel.numerics
    layers = len(subject.weights())

    modes = {"per_call": dict(cache_weights=False), "cached": dict(cache_weights=True)}
    subject.logits(x[:16], bind(backend, seed=1))  # compile the kernels once, outside the timings
    start = time.perf_counter()
    for w in subject.weights().values():  # the offline step alone, on every weight (as (K, N))
        backend.prepare_weight(np.asarray(w).reshape(-1, np.shape(w)[-1]))
    prepare_seconds = time.perf_counter() - start
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    logits: dict[str, np.ndarray] = {}
    prepared: dict[str, int] = {}
    for _ in range(args.repeats):
        for mode, kw in modes.items():
            weight_cache(backend).clear()
            start, start_cpu = time.perf_counter(), time.process_time()
            logits[mode] = subject.logits(x, bind(backend, seed=1, **kw))
            times[mode].append(time.perf_counter() - start)
            cpu[mode].append(time.process_time() - start_cpu)
            prepared[mode] = weight_cache(backend).prepared
    identical = bool(np.array_equal(logits["per_call"], logits["cached"]))
    median = {m: float(np.median(t)) for m, t in times.items()}
    accuracy = float(np.mean(logits["cached"].argmax(1) == subject.data.y_test))
    result = {
        "benchmark": "ds_cim_eval",
        "command": f"python benchmarks/bench_ds_cim_eval.py --repeats {args.repeats}",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "load_average_at_start": load_before,
        "load_average_at_end": os.getloadavg(),
        "numba_threads": numba.get_num_threads(),
        "cpu_seconds": cpu,
        "median_cpu_seconds": {m: float(np.median(t)) for m, t in cpu.items()},
        "prepare_all_weights_seconds": prepare_seconds,
        "samples": int(len(x)),
        "weight_tensors": layers,
        "backend": backend.name,
        "seconds": times,
        "median_seconds": median,
        "speedup_cached_over_per_call": median["per_call"] / median["cached"],
        "weight_preparations_in_cached_evaluation": prepared["cached"],
        "bit_identical_logits": identical,
        "accuracy": accuracy,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"ds_cim L={args.stream_length}, INT8 LeNet-5, {len(x)} test images, median of {args.repeats}:")
    mcpu = result["median_cpu_seconds"]
    print(f"  weight side per call : {median['per_call']:.2f} s wall, {mcpu['per_call']:.2f} s CPU")
    print(f"  prepared once        : {median['cached']:.2f} s wall, {mcpu['cached']:.2f} s CPU "
          f"({prepared['cached']} preparations for {layers} weights, included; all {layers} alone: {prepare_seconds:.3f} s)")
    print(f"  load average {load_before[0]:.2f} before, {result['load_average_at_end'][0]:.2f} after; "
          f"{numba.get_num_threads()} numba threads on {os.cpu_count()} CPUs")
    print(f"  speed-up {result['speedup_cached_over_per_call']:.2f}x, identical logits: {identical}, accuracy {accuracy:.4f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
