"""Speed of the DS-CIM simulator: numba kernel vs numpy reference vs exact float32 GEMM.

One run, same operands, side by side: simulated MACs per second of

* the bit-parallel numba kernel (``harness_plugins.ds_cim.kernels.mvm_counts``), with all
  numba threads and with one;
* the plain numpy reference (``harness_plugins.ds_cim.reference``) on a slice of the
  input vectors (it is slow, and its rate does not depend on how many);
* exact float32 BLAS GEMM of the same shape (``a @ b``).

The kernel and the reference are also checked to agree bit for bit on the slice.
Results go to ``benchmarks/results/ds_cim.json``. Run from the project root::

    .venv/bin/python benchmarks/bench_ds_cim.py [--quick]
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

from harness_plugins.ds_cim import encode
from harness_plugins.ds_cim.kernels import PARTITIONS, REMAPS, SCHEMES, mvm_counts
from harness_plugins.ds_cim.reference import mvm_counts_reference

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
    a = rng.integers(-128, 128, (m, k))
    b = np.clip(np.rint(rng.normal(0, 32, (k, n))), -128, 127).astype(np.int64)
    return a, b


def blas_rate(m, k, n, repeats=200) -> dict[str, float]:
    """Exact float32 GEMM of the same shape. Measured before any numba parallel
    region runs: numba's OpenMP threads spin after a region and, on 2 cores,
    starve OpenBLAS's threads (that made BLAS look 100x slower in a first draft)."""
    a, b = operands(m, k, n)
    af = a.astype(np.float32)
    bf = b.astype(np.float32)
    af @ bf
    rates = {"all_threads": m * k * n / best_of(lambda: af @ bf, repeats)}
    try:  # installed with mlflow's scikit-learn; optional here
        from threadpoolctl import threadpool_limits
    except ImportError:
        return rates
    with threadpool_limits(1):
        rates["1_thread"] = m * k * n / best_of(lambda: af @ bf, repeats)
    return rates


def bench_case(m, k, n, length, encoding, scheme, ref_rows, repeats, blas, remap="none", partition="slot"):
    a, b = operands(m, k, n)
    xm, xn, wm, wn, bits = encode(a, b, encoding)
    key = np.uint64(12345)
    args = lambda rows: (xm[:rows], xn[:rows], wm, wn, key, SCHEMES[scheme], length, bits, 16, 1,  # noqa: E731
                         REMAPS[remap], PARTITIONS[partition])
    mvm_counts(*args(2))  # compile / load from cache
    threads = numba.get_num_threads()
    t_kernel = best_of(lambda: mvm_counts(*args(m)), repeats)
    numba.set_num_threads(1)
    t_kernel_1 = best_of(lambda: mvm_counts(*args(m)), repeats)
    numba.set_num_threads(threads)
    t_ref = best_of(lambda: mvm_counts_reference(*args(ref_rows)), 1)
    same = bool(np.array_equal(mvm_counts(*args(ref_rows)), mvm_counts_reference(*args(ref_rows))))
    macs = m * k * n
    rate = {
        "kernel": macs / t_kernel,
        "kernel_1_thread": macs / t_kernel_1,
        "reference": ref_rows * k * n / t_ref,
        "blas_float32": blas["all_threads"],
        "blas_float32_1_thread": blas.get("1_thread", float("nan")),
    }
    return {
        "shape": {"m": m, "k": k, "n": n},
        "stream_length": length,
        "encoding": encoding,
        "scheme": scheme,
        "remap": remap,
        "partition": partition,
        "reference_rows": ref_rows,
        "numba_threads": threads,
        "bit_for_bit_equal": same,
        "macs_per_s": rate,
        "sample_macs_per_s_kernel": rate["kernel"] * length,
        "kernel_over_reference": rate["kernel"] / rate["reference"],
        "kernel_1_thread_over_reference": rate["kernel_1_thread"] / rate["reference"],
        "blas_over_kernel": rate["blas_float32"] / rate["kernel"],
        "blas_1_thread_over_kernel_1_thread": rate["blas_float32_1_thread"] / rate["kernel_1_thread"],
    }


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller shapes, one repeat (a smoke check)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ds_cim.json"))
    args = parser.parse_args()
    m, ref_rows, repeats = (256, 8, 1) if args.quick else (2048, 32, 3)
    blas = blas_rate(m, 128, 32)
    cases = [
        # DS-CIM1 operating point (defaults: pow2 remapping, weight-sized slices)
        bench_case(m, 128, 32, 256, "sign_split", "exclusive", ref_rows, repeats, blas, "pow2", "weight"),
        bench_case(m, 128, 32, 256, "sign_split", "exclusive", ref_rows, repeats, blas, "pow2", "slot"),
        bench_case(m, 128, 32, 256, "sign_split", "exclusive", ref_rows, repeats, blas),  # no remapping
        bench_case(m, 128, 32, 256, "offset_binary", "exclusive", ref_rows, repeats, blas),  # DS-CIM2
        bench_case(m, 128, 32, 64, "sign_split", "independent", ref_rows, repeats, blas),
    ]
    result = {
        "benchmark": "ds_cim",
        "command": "python benchmarks/bench_ds_cim.py" + (" --quick" if args.quick else ""),
        "commit": git_commit(),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "numba": numba.__version__,
            "numpy": np.__version__,
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_at_end": os.getloadavg(),
        "cases": cases,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'case':58s} {'kernel MAC/s':>13s} {'1-thr MAC/s':>12s} {'ref MAC/s':>11s} {'BLAS MAC/s':>11s} "
          f"{'kern/ref':>9s} {'BLAS/kern':>9s} {'1thr BLAS/kern':>14s} equal")
    for c in cases:
        r = c["macs_per_s"]
        label = (f"{c['encoding']} {c['scheme']} {c['remap']}/{c['partition']} L={c['stream_length']} "
                 f"{c['shape']['m']}x128x32")
        print(f"{label:58s} {r['kernel']:13.3e} {r['kernel_1_thread']:12.3e} {r['reference']:11.3e} "
              f"{r['blas_float32']:11.3e} {c['kernel_over_reference']:9.1f} {c['blas_over_kernel']:9.1f} "
              f"{c['blas_1_thread_over_kernel_1_thread']:14.1f} {c['bit_for_bit_equal']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
