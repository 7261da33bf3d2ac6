"""Measured training speed of approximate random dropout vs Bernoulli dropout.

Trains the wide MLP (``mnist_mlp``, 784-2048-2048-10 by default) with Bernoulli
dropout and the row and tile patterns at each dropout rate, every method in this
one process, one BLAS thread, epochs alternating between the methods (the order
rotating each epoch) so machine load hits them alike. Per (p, seed) it prints the
median epoch wall-clock and CPU (training thread) seconds per method, the measured
speed-ups over Bernoulli, the speed-up modelled from GEMM MACs, test accuracies,
the searched pi's KL, and the 1-minute load average over the run.

    nice -n 10 .venv/bin/python benchmarks/bench_approx_dropout.py                   # p=0.3,0.5,0.7, 1 seed
    nice -n 10 .venv/bin/python benchmarks/bench_approx_dropout.py --p 0.5 --seeds 0,1,2
    .venv/bin/python benchmarks/bench_approx_dropout.py --json out.json            # also write the rows

The technique is the plugin's own (``ApproxDropoutTechnique.apply``); only the
run context is a stand-in that keeps the metrics in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np


class _Ctx:
    def __init__(self, seed):
        self.seed, self.metrics, self.series, self.tables = seed, {}, {}, {}

    def child_seed(self, *keys):
        entropy = [self.seed] + [int.from_bytes(str(k).encode(), "little") % (2**63) for k in keys]
        return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)

    def log_metric(self, name, value):
        self.metrics[name] = float(value)

    def append_series(self, name, value, step=None):
        self.series.setdefault(name, []).append(float(value))

    def log_table(self, name, rows):
        self.tables[name] = list(rows)

    def progress(self, msg):
        print("  ..", msg, file=sys.stderr, flush=True)


def run(p: float, seed: int, hidden: str, epochs: int, methods: str, train_samples: int, **technique) -> dict:
    from harness.nn import ModelSubject
    from harness_plugins.approx_dropout import ApproxDropoutConfig
    from harness_plugins.approx_dropout.technique import ApproxDropoutTechnique
    from harness_plugins.mnist_mlp import MnistMlp, MnistMlpConfig

    wl = MnistMlp(MnistMlpConfig(hidden=hidden, epochs=epochs, train_samples=train_samples))
    ctx = _Ctx(seed)
    data = wl.load_data(ctx.child_seed("mnist_mlp", "split"))
    subject = ModelSubject("mnist_mlp", wl.make_model(np.random.default_rng(0)), data, wl.train_config(), seed=seed)
    first, *rest = methods.split(",")
    technique = {"epochs": epochs, **technique}  # every method trains `epochs` (the technique's mlp_epochs: 30)
    tech = ApproxDropoutTechnique(ApproxDropoutConfig(method=first, p=p, baselines=",".join(rest), **technique))
    t0 = time.perf_counter()
    tech.apply(subject, wl, ctx)
    m = ctx.metrics
    out = {"p": p, "seed": seed, "hidden": hidden, "epochs": epochs, "seconds": time.perf_counter() - t0,
           "load_avg": m["perf/load_avg"], "pi_kl": m.get("technique/pi_kl")}
    ref = "bernoulli"
    for meth in methods.split(","):
        out[f"{meth}_wall"] = m[f"perf/{meth}_epoch_seconds"]
        out[f"{meth}_cpu"] = m[f"perf/{meth}_epoch_cpu_seconds"]
        out[f"{meth}_acc"] = m[f"technique/{meth}/accuracy"]
        out[f"{meth}_val"] = m[f"technique/{meth}/val_accuracy"]
        out[f"{meth}_macs"] = m[f"technique/{meth}/epoch_gemm_macs"]
    for meth in methods.split(","):
        if meth != ref and f"{ref}_wall" in out:
            out[f"{meth}_speedup_wall"] = out[f"{ref}_wall"] / out[f"{meth}_wall"]
            out[f"{meth}_speedup_cpu"] = out[f"{ref}_cpu"] / out[f"{meth}_cpu"]
            out[f"{meth}_speedup_modelled"] = out[f"{ref}_macs"] / out[f"{meth}_macs"]
            out[f"{meth}_acc_drop_points"] = 100 * (out[f"{ref}_acc"] - out[f"{meth}_acc"])
    return out


def kernels(repeats: int = 15) -> None:
    """The two numba kernels against their numpy references and the BLAS GEMM they
    feed, at the wide MLP's middle layer (2048x2048, batch 128, p=0.5 row pattern)."""
    from harness.nn.runtime import blas_threads
    from harness.nn.kernels import sgd_momentum_step
    from harness_plugins.approx_dropout.kernels import (gather_block, gather_block_reference, positions,
                                                        sgd_block_step, sgd_block_step_reference)
    from harness_plugins.approx_dropout.patterns import keep_indices

    g = np.random.default_rng(0)
    n, b = 2048, 128
    w = g.standard_normal((n, n)).astype(np.float32)
    v = np.zeros_like(w)
    r, c = keep_indices(n, 2, 1, 0), keep_indices(n, 2, 1, 1)
    gc = g.standard_normal((r.size, c.size)).astype(np.float32)
    h = g.standard_normal((b, r.size)).astype(np.float32)
    rp, cp = positions(n, r), positions(n, c)
    full_g = np.zeros_like(w)

    def t(fn):
        fn()
        times = []
        for _ in range(repeats):
            c0 = time.thread_time()
            fn()
            times.append(time.thread_time() - c0)
        return statistics.median(times) * 1e3

    with blas_threads(1):
        wc = gather_block(w, r, c)
        rows = [
            ("gather_block 1024x1024 of 2048x2048", t(lambda: gather_block(w, r, c)),
             t(lambda: gather_block_reference(w, r, c))),
            ("sgd_block_step 2048x2048 (compact grad)", t(lambda: sgd_block_step(w, gc, v, rp, cp, 1e-3, 0.9, 5e-4)),
             t(lambda: sgd_block_step_reference(w, gc, v, rp, cp, 1e-3, 0.9, 5e-4))),
            ("dense SGD step 2048x2048 (harness kernel, full grad)", t(lambda: sgd_momentum_step(w, full_g, v, 1e-3, 0.9, 5e-4)), float("nan")),
            ("compact GEMM 128x1024 @ 1024x1024 (BLAS)", t(lambda: h @ wc), float("nan")),
            ("dense GEMM 128x2048 @ 2048x2048 (BLAS)", t(lambda: np.concatenate([h, h], 1) @ w), float("nan")),
        ]
    print("\n| kernel (CPU ms, median of %d, 1 thread) | numba | numpy reference |" % repeats)
    print("|---|---|---|")
    for name, a, ref in rows:
        print(f"| {name} | {a:.2f} | {ref:.2f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--p", default="0.3,0.5,0.7")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--hidden", default="2048,2048")
    ap.add_argument("--epochs", type=int, default=30,
                    help="epochs of every method (default: the technique's mlp_epochs, chosen on validation)")
    ap.add_argument("--train-samples", type=int, default=0)
    ap.add_argument("--methods", default="row,bernoulli,tile", help="first is the technique's method")
    ap.add_argument("--json", default="")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="an ApproxDropoutConfig field, e.g. --set lr_scale=0.25")
    ap.add_argument("--kernels", action="store_true", help="only time the kernels against their references")
    a = ap.parse_args(argv)
    if a.kernels:
        kernels()
        return 0
    print(f"# bench_approx_dropout: MLP 784-{a.hidden.replace(',', '-')}-10, {a.epochs} epochs, {' '.join(a.set)} "
          f"load at start {os.getloadavg()[0]:.2f}, cpus {os.cpu_count()}")
    from dataclasses import fields

    from harness_plugins.approx_dropout import ApproxDropoutConfig

    types = {f.name: type(getattr(ApproxDropoutConfig(), f.name)) for f in fields(ApproxDropoutConfig)}
    overrides = {k: types[k](v) for k, v in (kv.split("=", 1) for kv in a.set)}
    rows = []
    for p in [float(v) for v in a.p.split(",")]:
        for seed in [int(s) for s in a.seeds.split(",")]:
            r = run(p, seed, a.hidden, a.epochs, a.methods, a.train_samples, **overrides)
            rows.append(r)
            meths = a.methods.split(",")
            print(f"p={p} seed={seed} load={r['load_avg']:.2f} KL={r['pi_kl']:.4f} "
                  + " ".join(f"{m}: wall {r[m + '_wall']:.3f}s cpu {r[m + '_cpu']:.3f}s acc {r[m + '_acc']:.4f}" for m in meths))
            for m in meths:
                if f"{m}_speedup_wall" in r:
                    print(f"    {m}/bernoulli: wall x{r[m + '_speedup_wall']:.2f} cpu x{r[m + '_speedup_cpu']:.2f} "
                          f"modelled x{r[m + '_speedup_modelled']:.2f} acc drop {r[m + '_acc_drop_points']:+.2f} points",
                          flush=True)
    meths = a.methods.split(",")
    print("\n| p | method | seeds | wall speed-up (median) | CPU speed-up (median) | modelled (MACs) | acc drop vs Bernoulli (mean, points) | load |")
    print("|---|---|---|---|---|---|---|---|")
    for p in sorted({r["p"] for r in rows}):
        rs = [r for r in rows if r["p"] == p]
        for m in meths:
            if f"{m}_speedup_wall" not in rs[0]:
                continue
            print(f"| {p} | {m} | {len(rs)} | {statistics.median(r[m + '_speedup_wall'] for r in rs):.2f} "
                  f"| {statistics.median(r[m + '_speedup_cpu'] for r in rs):.2f} "
                  f"| {statistics.median(r[m + '_speedup_modelled'] for r in rs):.2f} "
                  f"| {statistics.mean(r[m + '_acc_drop_points'] for r in rs):+.2f} "
                  f"| {statistics.mean(r['load_avg'] for r in rs):.1f} |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
