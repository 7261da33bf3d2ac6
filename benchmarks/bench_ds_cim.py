"""Speed of the DS-CIM simulator: kernels vs their roofline, the numpy reference and float32 BLAS.

One run, same operands, side by side: simulated MACs per second of

* the kernel the backend runs (``harness_plugins.ds_cim.kernels.mvm_counts``: the
  weight-slice kernel ``mvm_counts_sliced`` for ``partition=weight``, the general
  bit-parallel kernel ``mvm_counts_prepared`` otherwise), with all numba threads and with one;
* for ``partition=weight`` also the general kernel (what ran before the sliced one), one thread;
* the roofline: a numba loop doing exactly one table lookup and one add per MAC
  (``counts[m, j] += table[w[i, j], x[m, i]]``) on the same shapes, one thread, and the
  fraction of it the kernel reaches;
* the plain numpy reference (``harness_plugins.ds_cim.reference``) on a slice of the
  input vectors (it is slow, and its rate does not depend on how many);
* exact float32 BLAS GEMM of the same shape (``a @ b``), all threads and one.

The kernels and the reference are also checked to agree bit for bit on the slice. The load
average is recorded before and after (the machine is shared: compare ratios within one run).
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
from numba import njit

from harness_plugins.ds_cim import encode
from harness_plugins.ds_cim.kernels import (PARTITIONS, REMAPS, SCHEMES, mvm_counts, mvm_counts_prepared,
                                            uses_sliced_kernel, weight_tables)
from harness_plugins.ds_cim.reference import mvm_counts_reference

ROOT = Path(__file__).resolve().parent.parent


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def best_cpu_of(fn, repeats: int) -> float:
    """Least CPU time of the calling thread: what a one-thread run costs, whatever else the
    machine runs (a loaded machine stretches wall time, much less a thread's CPU time)."""
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return min(times)


@njit(cache=False)
def roofline_lookup_add(xcodes, wcodes, table):
    """The least work per MAC a tabulated simulator can do: one table lookup and one add.

    ``table[w + 128, x + 128]`` would hold a precomputed count for a weight and an input value;
    the loop order (input vector, row, column) streams the weights like the kernel does.
    """
    m_count, k_count = xcodes.shape
    n_count = wcodes.shape[1]
    out = np.zeros((m_count, n_count), dtype=np.int64)
    for m in range(m_count):
        for i in range(k_count):
            x = xcodes[m, i] + 128
            for j in range(n_count):
                out[m, j] += table[wcodes[i, j] + 128, x]
    return out


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
        rates["1_thread"] = m * k * n / best_cpu_of(lambda: af @ bf, repeats)
    return rates


def bench_case(m, k, n, length, encoding, scheme, ref_rows, repeats, blas, remap="none", partition="slot"):
    a, b = operands(m, k, n)
    xm, xn, wm, wn, bits = encode(a, b, encoding)
    key = np.uint64(12345)
    args = lambda rows: (xm[:rows], xn[:rows], wm, wn, key, SCHEMES[scheme], length, bits, 16, 1,  # noqa: E731
                         REMAPS[remap], PARTITIONS[partition])
    sliced = uses_sliced_kernel(SCHEMES[scheme], PARTITIONS[partition], length)
    tables = weight_tables(wm, SCHEMES[scheme], bits, 16, REMAPS[remap], PARTITIONS[partition])
    general = lambda rows: mvm_counts_prepared(xm[:rows], xn[:rows], wn, tables, key, SCHEMES[scheme],  # noqa: E731
                                               length, bits, 16, 1, REMAPS[remap], PARTITIONS[partition])
    mvm_counts(*args(2))  # compile / load from cache
    general(2)
    threads = numba.get_num_threads()
    t_kernel = best_of(lambda: mvm_counts(*args(m)), repeats)
    numba.set_num_threads(1)
    # One thread: the calling thread's CPU time (see best_cpu_of), wall time for the record.
    t_kernel_1 = best_cpu_of(lambda: mvm_counts(*args(m)), repeats)
    t_kernel_1_wall = best_of(lambda: mvm_counts(*args(m)), repeats)
    t_general_1 = best_cpu_of(lambda: general(m), repeats) if sliced else t_kernel_1
    table = np.random.default_rng(1).integers(0, length, (256, 256)).astype(np.int32)
    roofline_lookup_add(a[:2], b, table)
    t_roof_1 = best_cpu_of(lambda: roofline_lookup_add(a, b, table), repeats)
    numba.set_num_threads(threads)
    t_ref = best_cpu_of(lambda: mvm_counts_reference(*args(ref_rows)), 1)
    expected = mvm_counts_reference(*args(ref_rows))
    same = bool(np.array_equal(mvm_counts(*args(ref_rows)), expected)
                and np.array_equal(general(ref_rows), expected))
    macs = m * k * n
    rate = {
        "kernel": macs / t_kernel,
        "kernel_1_thread": macs / t_kernel_1,
        "kernel_1_thread_wall": macs / t_kernel_1_wall,
        "general_kernel_1_thread": macs / t_general_1,
        "roofline_1_thread": macs / t_roof_1,
        "reference": ref_rows * k * n / t_ref,
        "blas_float32": blas["all_threads"],
        "blas_float32_1_thread": blas.get("1_thread", float("nan")),
    }
    return {
        "timing": "all threads: wall time; 1 thread and reference: CPU time of the calling thread; best of repeats",
        "shape": {"m": m, "k": k, "n": n},
        "stream_length": length,
        "encoding": encoding,
        "scheme": scheme,
        "remap": remap,
        "partition": partition,
        "kernel_name": "mvm_counts_sliced" if sliced else "mvm_counts_prepared",
        "reference_rows": ref_rows,
        "numba_threads": threads,
        "bit_for_bit_equal": same,
        "macs_per_s": rate,
        "sample_macs_per_s_kernel": rate["kernel"] * length,
        "roofline_fraction_1_thread": rate["kernel_1_thread"] / rate["roofline_1_thread"],
        "kernel_over_reference": rate["kernel"] / rate["reference"],
        "kernel_1_thread_over_reference": rate["kernel_1_thread"] / rate["reference"],
        "kernel_1_thread_over_general_1_thread": rate["kernel_1_thread"] / rate["general_kernel_1_thread"],
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
    m, ref_rows, repeats = (256, 8, 1) if args.quick else (2048, 32, 5)
    load_before = os.getloadavg()
    blas = blas_rate(m, 128, 32)
    cases = [
        # DS-CIM1 operating point (defaults: pow2 remapping, weight-sized slices)
        bench_case(m, 128, 32, 256, "sign_split", "exclusive", ref_rows, repeats, blas, "pow2", "weight"),
        bench_case(m, 128, 32, 64, "sign_split", "exclusive", ref_rows, repeats, blas, "pow2", "weight"),
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
        "load_average_at_start": load_before,
        "load_average_at_end": os.getloadavg(),
        "cases": cases,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'case':52s} {'kernel':>9s} {'1 thread':>9s} {'general':>9s} {'roofline':>9s} {'of roof':>7s} "
          f"{'reference':>9s} {'BLAS 1t':>9s} {'kern/ref':>8s} {'BLAS/kern':>9s} equal   (MAC/s, 1t = 1 thread)")
    for c in cases:
        r = c["macs_per_s"]
        label = (f"{c['encoding']} {c['scheme']} {c['remap']}/{c['partition']} L={c['stream_length']} "
                 f"{c['shape']['m']}x128x32")
        print(f"{label:52s} {r['kernel']:9.2e} {r['kernel_1_thread']:9.2e} {r['general_kernel_1_thread']:9.2e} "
              f"{r['roofline_1_thread']:9.2e} {c['roofline_fraction_1_thread']:7.1%} {r['reference']:9.2e} "
              f"{r['blas_float32_1_thread']:9.2e} {c['kernel_1_thread_over_reference']:8.0f} "
              f"{c['blas_1_thread_over_kernel_1_thread']:9.0f} {c['bit_for_bit_equal']}")
    print(f"load average: {load_before[0]:.2f} before, {result['load_average_at_end'][0]:.2f} after (2 cores: "
          "above ~2 the rates are shared with other work)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
