"""Speed of the SME crossbar MVM: numba kernel vs the numpy reference vs float32 BLAS.

One run, same operands (LeNet-5's fc1 shape, 400 x 120, Laplace weights orchestrated
with the default 3-plane window, X=128, a 6-bit ADC so the per-cell path runs), side by
side: GEMM MACs per second of

* the kernel the backend runs when the ADC can clip (``kernels.mvm_flat``, one thread);
* the plain numpy reference (``reference.mvm_reference``);
* the backend's lossless shortcut (``codes @ rounded`` in float64 BLAS);
* exact float32 BLAS (``a @ b``).

Kernel and reference are checked to agree bit for bit. The load average is recorded
(the machine is shared: compare ratios within one run). Results go to
``benchmarks/results/sme_reram.json``. Run from the project root::

    .venv/bin/python benchmarks/bench_sme_reram.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from harness_plugins.sme_reram import SmeReramConfig
from harness_plugins.sme_reram.cost import layer_map
from harness_plugins.sme_reram.kernels import flatten, mvm_flat
from harness_plugins.sme_reram.mapping import quantize_weights
from harness_plugins.sme_reram.reference import mvm_reference

ROOT = Path(__file__).resolve().parent.parent


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer input vectors and repeats")
    args = parser.parse_args()
    vectors, repeats = (64, 2) if args.quick else (512, 3)
    rng = np.random.default_rng(0)
    k, n = 400, 120
    w = rng.laplace(size=(k, n)).astype(np.float32)
    x = np.maximum(rng.standard_normal((vectors, k)), 0).astype(np.float32)
    codes, _ = quantize_weights(w)
    cfg = SmeReramConfig(adc_bits=6)
    lm, rounded, _ = layer_map(codes, cfg)
    flat = flatten(lm)
    a = np.clip(np.rint(x / (np.abs(x).max() / 127)), -127, 127).astype(np.int64)
    adc_max = (1 << cfg.adc_bits) - 1
    mvm_flat(a[:2], flat, 8, adc_max)  # compile
    np.testing.assert_array_equal(mvm_flat(a, flat, 8, adc_max), mvm_reference(a, lm, 8, adc_max))
    macs = vectors * k * n
    rounded_f = rounded.astype(np.float64)
    timings = {
        "kernel_numba_1thread": best_of(lambda: mvm_flat(a, flat, 8, adc_max), repeats),
        "reference_numpy": best_of(lambda: mvm_reference(a, lm, 8, adc_max), repeats),
        "lossless_shortcut_float64_blas": best_of(lambda: a.astype(np.float64) @ rounded_f, repeats),
        "float32_blas": best_of(lambda: x @ w, repeats),
    }
    result = {
        "shape": {"m": vectors, "k": k, "n": n, "crossbar_size": cfg.crossbar_size, "adc_bits": cfg.adc_bits,
                  "crossbars": lm.count, "crossbars_dense": lm.dense},
        "load_average": os.getloadavg()[0],
        "macs_per_s": {name: macs / t for name, t in timings.items()},
        "seconds": timings,
        "kernel_vs_reference": timings["reference_numpy"] / timings["kernel_numba_1thread"],
    }
    out = ROOT / "benchmarks" / "results" / "sme_reram.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
