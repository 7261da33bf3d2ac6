"""The technique: search pi, train every method side by side, report speed and accuracy.

Timing is fair by construction: every method trains in this process with the
same trainer class (:class:`~harness_plugins.approx_dropout.mlp.CompactMlp`),
one BLAS thread, the same initialization, data order source and epoch budget,
and the methods alternate epoch by epoch (the order rotating each epoch), so a
change in machine load during the run hits them alike. Epoch times are wall
clock (``perf_counter``) and CPU time of the training thread (``thread_time``):
on a shared, loaded machine the CPU time is the steadier of the two.
"""

from __future__ import annotations

import dataclasses
import os
import statistics

import numpy as np

from harness.api import IncompatibleError
from harness.nn import ModelSubject
from harness.nn.runtime import blas_threads
from harness.nn.train import _lr_at, accuracy

from harness_plugins.approx_dropout.mlp import CompactMlp, PatternDraw, dense_layers, run_epoch
from harness_plugins.approx_dropout.patterns import Pattern, sampler, search_pi

__all__ = ["ApproxDropoutTechnique"]


class ApproxDropoutTechnique:
    def __init__(self, config):
        from harness_plugins.approx_dropout import validate_config

        validate_config(config)
        self.config = config

    def apply(self, subject, workload, ctx):
        cfg = self.config
        name = getattr(workload, "name", "?")
        if not isinstance(subject, ModelSubject):
            raise IncompatibleError(
                f"approx_dropout retrains a model workload's MLP (mnist_mlp, digits_mlp); workload {name!r} "
                f"built a {type(subject).__name__}")
        if cfg.method == "sensitivity":
            return self._apply_cnn(subject, workload, ctx)
        try:
            dense_layers(subject.model)
        except ValueError as exc:
            raise IncompatibleError(f"approx_dropout on workload {name!r}: {exc}") from None
        if not hasattr(workload, "make_model"):  # a fresh model with the workload's own initialization
            raise IncompatibleError(f"approx_dropout needs a ModelWorkload (make_model); {name!r} has none")
        methods = cfg.methods()
        draws = self._search(ctx) if any(m in ("row", "tile") for m in methods) else None

        tc = subject.train_config
        epochs = cfg.epochs or cfg.mlp_epochs or tc.epochs
        batch = cfg.batch_size or tc.batch_size
        tc = dataclasses.replace(tc, epochs=epochs, batch_size=batch, lr=tc.lr * cfg.lr_scale,
                                 warmup_epochs=cfg.warmup_epochs, schedule="cosine")
        if tc.optimizer != "sgd":
            raise IncompatibleError(f"approx_dropout trains with SGD + momentum; workload {name!r} uses {tc.optimizer!r}")
        x, y = subject.data.train
        x = np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float32)
        init_seed = ctx.child_seed("approx_dropout", "init")
        models, trainers, rngs, pattern_draws, rows = {}, {}, {}, {}, {m: [] for m in methods}
        for m in methods:
            models[m] = workload.make_model(np.random.default_rng(init_seed))
            fixed = 1.0 / (1.0 - cfg.p) if cfg.scale == "rate" else None
            trainers[m] = CompactMlp(models[m], tc.momentum, tc.weight_decay, fixed)
            rngs[m] = np.random.default_rng(ctx.child_seed("approx_dropout", "data"))  # same batches for all
            if m in ("row", "tile"):
                pats, cum = draws
                pattern_draws[m] = PatternDraw(pats, cum, cfg.tile if m == "tile" else 1,
                                               np.random.default_rng(ctx.child_seed("approx_dropout", m)))
        loads = []
        ctx.progress(f"approx_dropout: {', '.join(methods)} at p={cfg.p}, {epochs} epochs side by side")
        with blas_threads(1):
            for e in range(epochs):
                shift = e % len(methods)
                for m in methods[shift:] + methods[:shift]:
                    lr_mult = min(1.0, (1.0 - cfg.p) / 0.5) ** cfg.pattern_lr_power if m in ("row", "tile") else 1.0
                    row = run_epoch(trainers[m], x, y, batch, lambda f, e=e, k=lr_mult: k * _lr_at(tc, e + f), rngs[m], m,
                                    cfg.p, pattern_draws.get(m), cfg.shuffle_every)
                    row["epoch"] = e
                    row["val_accuracy"] = accuracy(models[m], *subject.data.val)
                    rows[m].append(row)
                    for key in ("loss", "val_accuracy", "kept_fraction"):
                        ctx.append_series(f"technique/{m}/{key}", float(row[key]), e)
                    # wall-clock figures live under perf/: the seed does not determine them
                    ctx.append_series(f"perf/{m}_seconds_per_epoch", float(row["seconds"]), e)
                    ctx.append_series(f"perf/{m}_cpu_seconds_per_epoch", float(row["cpu_seconds"]), e)
                loads.append(os.getloadavg()[0])
        self._report(ctx, methods, models, rows, subject, loads)
        return dataclasses.replace(subject, model=models[cfg.method],
                                   history=subject.history + [dict(r, method=cfg.method) for r in rows[cfg.method]])

    def _apply_cnn(self, subject, workload, ctx):
        """Sensitivity-aware feature-map dropout vs dense training, same epochs (sequential)."""
        import time

        from harness.nn.layers import Conv2d
        from harness.nn.train import fit

        from harness_plugins.approx_dropout.cnn import SensitivityDropoutGemm

        cfg = self.config
        name = getattr(workload, "name", "?")
        if not any(isinstance(l, Conv2d) and l.in_channels > 1 for l in subject.model.layers()):
            raise IncompatibleError(f"approx_dropout method=sensitivity drops a CNN's input feature maps; workload "
                                    f"{name!r} has no convolution with more than one input channel")
        tc = subject.train_config
        tc = dataclasses.replace(tc, epochs=cfg.epochs or tc.epochs, batch_size=cfg.batch_size or tc.batch_size)
        init_seed = ctx.child_seed("approx_dropout", "init")
        seed = ctx.child_seed("approx_dropout", "data")
        out = {}
        for m in ("sensitivity", "none"):
            model = workload.make_model(np.random.default_rng(init_seed))
            hook = SensitivityDropoutGemm(model, cfg.p, cfg.rescore_every) if m == "sensitivity" else None
            t0, c0 = time.perf_counter(), time.thread_time()
            rows = fit(model, subject.data.train, subject.data.val, tc, seed, ctx=ctx, prefix=f"technique/{m}/", gemm=hook)
            ctx.log_metric(f"perf/{m}_train_seconds", time.perf_counter() - t0)
            ctx.log_metric(f"perf/{m}_train_cpu_seconds", time.thread_time() - c0)
            out[m] = (model, rows, hook, accuracy(model, *subject.data.test))
            ctx.log_metric(f"technique/{m}/accuracy", out[m][3])
        hook = out["sensitivity"][2]
        # every training GEMM goes through the hook; only the thinned convolutions save
        ctx.log_metric("technique/macs_saved", 1.0 - hook.macs / hook.dense_macs)
        ctx.log_metric("technique/accuracy", out["sensitivity"][3])
        ctx.log_metric("technique/accuracy_drop_points", 100.0 * (out["none"][3] - out["sensitivity"][3]))
        ctx.log_table("feature_map_scores", [{"layer": op, "channel": c, "score": float(s),
                                              "kept": int(c in set(hook.keep[op].tolist()))}
                                             for op, sc in hook.scores.items() for c, s in enumerate(sc)])
        model, rows = out["sensitivity"][:2]
        return dataclasses.replace(subject, model=model, history=subject.history + rows)

    def _search(self, ctx):
        cfg = self.config
        res = search_pi(cfg.p, cfg.max_period, cfg.kl_window, cfg.search_steps)
        ctx.log_metric("technique/pi_kl", res["kl"])
        ctx.log_metric("technique/pi_kl_single_pattern", res["kl_single_pattern"])
        ctx.log_metric("technique/pi_kl_threshold", cfg.kl_threshold)
        ctx.log_metric("technique/pi_kl_ok", float(res["kl"] < cfg.kl_threshold))
        ctx.log_metric("technique/pi_drop_rate", res["drop_rate"])
        ctx.log_table("pi", [{"dp": pt.dp, "k": pt.k, "drop_rate": pt.drop_rate, "pi": float(w)}
                             for pt, w in zip(res["patterns"], res["pi"])])
        ctx.log_table("dropped_count_distribution",
                      [{"dropped": c, "searched": float(q), "binomial": float(t)}
                       for c, (q, t) in enumerate(zip(res["q"], res["target"]))])
        ctx.progress(f"approx_dropout: pi searched, drop rate {res['drop_rate']:.4f}, KL {res['kl']:.4f} nats "
                     f"(best single pattern {res['kl_single_pattern']:.3f})")
        if cfg.p == 0:
            return [Pattern(1, 1)], np.array([1.0])
        return sampler(res)

    def _report(self, ctx, methods, models, rows, subject, loads):
        cfg = self.config
        # thread_time ticks coarsely: a tiny epoch can measure 0 s
        med = {m: {k: max(statistics.median(r[k] for r in rows[m]), 1e-6) for k in ("seconds", "cpu_seconds")}
               for m in methods}
        macs = {m: sum(r["macs"] for r in rows[m]) / len(rows[m]) for m in methods}
        test = {m: accuracy(models[m], *subject.data.test) for m in methods}
        dense_macs = max(macs[m] for m in methods if m in ("bernoulli", "none")) if \
            any(m in ("bernoulli", "none") for m in methods) else None
        table = []
        for m in methods:
            ctx.log_metric(f"technique/{m}/accuracy", test[m])
            ctx.log_metric(f"technique/{m}/val_accuracy", rows[m][-1]["val_accuracy"])
            ctx.log_metric(f"perf/{m}_epoch_seconds", med[m]["seconds"])
            ctx.log_metric(f"perf/{m}_epoch_cpu_seconds", med[m]["cpu_seconds"])
            ctx.log_metric(f"technique/{m}/epoch_gemm_macs", macs[m])
            table.append({"method": m, "test_accuracy": test[m], "val_accuracy": rows[m][-1]["val_accuracy"],
                          "epoch_seconds_median": med[m]["seconds"], "epoch_cpu_seconds_median": med[m]["cpu_seconds"],
                          "epoch_gemm_macs": macs[m]})
        # the table holds wall-clock columns: it is an artifact, not a seed-determined metric
        ctx.log_table("methods", table)
        ctx.log_metric("technique/accuracy", test[cfg.method])
        ctx.log_metric("perf/load_avg", float(np.mean(loads)) if loads else 0.0)
        if dense_macs:
            ctx.log_metric("technique/macs_saved", 1.0 - macs[cfg.method] / dense_macs)
        ref = "bernoulli" if "bernoulli" in methods else ("none" if "none" in methods else None)
        for m in methods:  # every compared method against the reference, e.g. perf/tile_speedup_wall
            if ref is not None and m != ref:
                ctx.log_metric(f"perf/{m}_speedup_wall", med[ref]["seconds"] / med[m]["seconds"])
                ctx.log_metric(f"perf/{m}_speedup_cpu", med[ref]["cpu_seconds"] / med[m]["cpu_seconds"])
                ctx.log_metric(f"technique/{m}/speedup_modelled", macs[ref] / macs[m])
                ctx.log_metric(f"technique/{m}/accuracy_drop_points", 100.0 * (test[ref] - test[m]))
        if ref is not None and ref != cfg.method:
            ctx.log_metric("perf/speedup_wall", med[ref]["seconds"] / med[cfg.method]["seconds"])
            ctx.log_metric("perf/speedup_cpu", med[ref]["cpu_seconds"] / med[cfg.method]["cpu_seconds"])
            ctx.log_metric("technique/speedup_modelled", macs[ref] / macs[cfg.method])
            ctx.log_metric("technique/accuracy_drop_points", 100.0 * (test[ref] - test[cfg.method]))
            ctx.progress(f"approx_dropout: {cfg.method} vs {ref}: wall x{med[ref]['seconds'] / med[cfg.method]['seconds']:.2f}, "
                         f"cpu x{med[ref]['cpu_seconds'] / med[cfg.method]['cpu_seconds']:.2f}, "
                         f"MACs x{macs[ref] / macs[cfg.method]:.2f}, test {test[cfg.method]:.4f} vs {test[ref]:.4f}")
