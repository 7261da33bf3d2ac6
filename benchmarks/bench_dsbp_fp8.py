"""Speed of the FP8 DCIM simulator: numba kernel vs numpy reference vs float32 BLAS.

One run, same operands, side by side: simulated MACs per second of

* the numba kernel (``harness_plugins.dsbp_fp8.kernels.dsbp_gemm``), all numba threads and one;
* the plain numpy bit-serial reference (``harness_plugins.dsbp_fp8.reference``) on a
  slice of the input rows (it is slow; its rate does not depend on how many);
* float32 BLAS GEMM of the same shape (``a @ b``), measured first, before numba's
  OpenMP threads exist (they spin after a region and starve BLAS on 2 cores).

Operands: transformer-like activations (heavy tails, outlier channels, 10% zeros)
against Gaussian weights, a ViT-MLP-like shape. The simulator's work per call
(FP8 encoding of the inputs, the kernel) is timed; weight preparation is offline
and is not. The kernel and the reference are checked to agree bit for bit on the
slice. Results go to ``benchmarks/results/dsbp_fp8.json``. From the project root::

    NUMBA_CACHE_DIR=/tmp/numba .venv/bin/python benchmarks/bench_dsbp_fp8.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numba
import numpy as np

from harness_plugins.dsbp_fp8 import DsbpFp8Backend, DsbpFp8Config

ROOT = Path(__file__).resolve().parent.parent


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def operands(m, k, n):
    rng = np.random.default_rng(0)
    a = rng.standard_t(4, (m, k)) * np.exp(0.5 * rng.standard_normal((1, k)))
    a[:, rng.choice(k, 4, replace=False)] *= 30
    a[rng.random((m, k)) < 0.1] = 0.0
    b = rng.standard_normal((k, n)) / np.sqrt(k)
    return a.astype(np.float32), b.astype(np.float32)


def blas_rate(m, k, n, repeats=50) -> dict[str, float]:
    a, b = operands(m, k, n)
    a @ b
    rates = {"all_threads": m * k * n / best_of(lambda: a @ b, repeats)}
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return rates
    with threadpool_limits(1):
        rates["1_thread"] = m * k * n / best_of(lambda: a @ b, repeats)
    return rates


def bench_case(label, overrides, m, k, n, ref_rows, repeats, blas):
    backend = DsbpFp8Backend(DsbpFp8Config(compare_rows=0, **overrides))
    a, b = operands(m, k, n)
    weight = backend.prepare_weight(b)
    c = backend.config

    def run(rows, reference=False):
        fields, _, _ = backend.inputs(a[:rows])
        row_bits = np.full(rows, c.input_bits if c.mode == "fixed" else 0, dtype=np.int64)
        return backend._run(fields, row_bits, weight, reference)

    run(2)  # compile / load from the cache
    threads = numba.get_num_threads()
    t_kernel = best_of(lambda: run(m), repeats)
    numba.set_num_threads(1)
    t_kernel_1 = best_of(lambda: run(m), repeats)
    numba.set_num_threads(threads)
    t_ref = best_of(lambda: run(ref_rows, reference=True), 1)
    (ko, kb), (ro, rb) = run(ref_rows), run(ref_rows, reference=True)
    same = bool(np.array_equal(ko.view(np.uint32), ro.view(np.uint32)) and np.array_equal(kb, rb))
    _, bits = run(m)
    rate = {
        "kernel": m * k * n / t_kernel,
        "kernel_1_thread": m * k * n / t_kernel_1,
        "reference": ref_rows * k * n / t_ref,
        "blas_float32": blas["all_threads"],
        "blas_float32_1_thread": blas.get("1_thread", float("nan")),
    }
    return {
        "case": label,
        "config": overrides,
        "shape": {"m": m, "k": k, "n": n},
        "average_input_bits": float(bits.mean()),
        "reference_rows": ref_rows,
        "numba_threads": threads,
        "bit_for_bit_equal": same,
        "macs_per_s": rate,
        "kernel_over_reference": rate["kernel"] / rate["reference"],
        "kernel_1_thread_over_reference": rate["kernel_1_thread"] / rate["reference"],
        "blas_over_kernel": rate["blas_float32"] / rate["kernel"],
        "blas_1_thread_over_kernel_1_thread": rate["blas_float32_1_thread"] / rate["kernel_1_thread"],
    }


def git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller shapes, one repeat (a smoke check)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dsbp_fp8.json"))
    args = parser.parse_args()
    (m, k, n), ref_rows, repeats = ((256, 256, 64), 16, 1) if args.quick else ((2048, 512, 128), 64, 3)
    load_before = os.getloadavg()
    blas = blas_rate(m, k, n)
    cases = [
        bench_case("DSBP, budget 1e-3", {"threshold": 1e-3}, m, k, n, ref_rows, repeats, blas),
        bench_case("fixed E5M7 (B_x = B_w = 8)", {"mode": "fixed", "input_bits": 8}, m, k, n, ref_rows, repeats, blas),
        bench_case("fixed B_x = 12", {"mode": "fixed", "input_bits": 12}, m, k, n, ref_rows, repeats, blas),
    ]
    result = {
        "benchmark": "dsbp_fp8",
        "command": "python benchmarks/bench_dsbp_fp8.py" + (" --quick" if args.quick else ""),
        "commit": git_commit(),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "numba": numba.__version__, "numpy": np.__version__},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_at_start": load_before,
        "load_average_at_end": os.getloadavg(),
        "cases": cases,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'case':32s} {'avg B_x':>7s} {'kernel MAC/s':>13s} {'1-thr MAC/s':>12s} {'ref MAC/s':>11s} "
          f"{'BLAS MAC/s':>11s} {'kern/ref':>9s} {'BLAS/kern':>9s} {'1thr BLAS/kern':>14s} equal")
    for c in cases:
        r = c["macs_per_s"]
        print(f"{c['case']:32s} {c['average_input_bits']:7.2f} {r['kernel']:13.3e} {r['kernel_1_thread']:12.3e} "
              f"{r['reference']:11.3e} {r['blas_float32']:11.3e} {c['kernel_over_reference']:9.1f} "
              f"{c['blas_over_kernel']:9.1f} {c['blas_1_thread_over_kernel_1_thread']:14.1f} {c['bit_for_bit_equal']}")
    print(f"load average: {load_before} at start, {result['load_average_at_end']} at end; wrote {args.out}")


if __name__ == "__main__":
    main()
