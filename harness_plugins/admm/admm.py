"""The ADMM technique: stages of ADMM-regularized training, hard masks, retraining.

One pruning stage (Ye et al., 1903.09769; Zhang et al., 1811.01907)::

    Z = Proj(W); U = 0; rho = rho_init
    repeat admm_updates times:
        train admm_epochs epochs on  CE + rho/2 ||W - Z + U||^2   (LR schedule restarts)
        Z = Proj(W + U);  U = U + W - Z;  rho = rho * rho_growth
    mask = support of Proj(W); W = W * mask; retrain under the mask

``progressive_admm`` runs ``stages`` such stages with per-layer keep fractions
ramping geometrically to the target, each starting from the last one's masked
model; ``admm`` is one stage straight at the target; ``magnitude`` replaces the
ADMM phase with plain magnitude pruning (iterative over the same stages, Han et
al. style). All three spend the same number of epochs. Quantization is the same
loop with ``Proj`` the closest ``alpha * Q`` on the surviving weights, then a hard
projection.

Everything the technique measures goes to ``ctx`` under ``technique/``; the
model is changed in place (weights, masks) and returned, so the workload's own
``evaluate`` and ``op_trace`` see the compressed model and its mask densities.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from harness.api import IncompatibleError
from harness.nn import ModelSubject
from harness.nn.train import fit

from harness_plugins.admm.projections import (
    allocate_keep,
    keep_count,
    project_prune,
    project_quant,
    prune_support,
)

__all__ = ["AdmmTechnique", "StagePlan", "admm_update", "compression_stats", "plan_stages"]

FLOAT_BITS = 32


@dataclass(frozen=True)
class StagePlan:
    """One pruning stage: keep fraction per weight, and its epoch budget."""

    index: int
    keep: dict[str, float]
    admm_updates: int
    retrain_epochs: int
    magnitude_epochs: int = 0


def plan_stages(method: str, final_keep: dict[str, float], stages: int, admm_updates: int, admm_epochs: int,
                retrain_epochs: int) -> list[StagePlan]:
    """The stages each method runs, all with the same total epoch budget.

    ``progressive_admm`` keeps ``f ** ((i+1)/stages)`` of each layer at stage ``i``
    (a geometric ramp in compression ratio, per layer) [inferred: the paper ramps
    the ratios by hand]. ``admm`` (one shot) gets all ``stages`` stages' ADMM
    updates and retraining in one stage [inferred: budget matching, so the
    comparison is about the schedule, not the epochs]. ``magnitude`` prunes on the
    same ramp and retrains for a stage's whole budget.
    """
    ramp = [{n: f ** ((i + 1) / stages) for n, f in final_keep.items()} for i in range(stages)]
    if method == "progressive_admm":
        return [StagePlan(i, ramp[i], admm_updates, retrain_epochs) for i in range(stages)]
    if method == "admm":
        return [StagePlan(0, dict(final_keep), admm_updates * stages, retrain_epochs * stages)]
    if method == "magnitude":
        return [StagePlan(i, ramp[i], 0, retrain_epochs, admm_updates * admm_epochs) for i in range(stages)]
    raise ValueError(f"method={method!r}: valid are progressive_admm, admm, magnitude")


def admm_update(w: np.ndarray, u: np.ndarray, project: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One Z/U step of scaled-form ADMM: ``Z = Proj(W + U)``, ``U' = U + W - Z``."""
    z = project(w + u)
    return z, u + w - z


def compression_stats(weights: dict[str, np.ndarray], bits: dict[str, int] | None = None,
                      scales: int = 0) -> dict[str, float]:
    """Counts over effective (masked) weights: ratio, non-zeros and storage bits.

    ``compression_ratio`` is total / non-zero prunable weights (the paper's figure:
    index storage is not counted). A stored weight costs ``bits[name]`` bits
    (``FLOAT_BITS`` if the layer is not quantized), and each of the ``scales``
    quantization scales (alpha) ``FLOAT_BITS`` more.
    """
    bits = bits or {}
    total = sum(int(w.size) for w in weights.values())
    nonzero = sum(int(np.count_nonzero(w)) for w in weights.values())
    weight_bits = sum(int(np.count_nonzero(w)) * int(bits.get(n, FLOAT_BITS)) for n, w in weights.items())
    weight_bits += FLOAT_BITS * int(scales)
    return {
        "total_weights": float(total),
        "nonzero_weights": float(nonzero),
        "compression_ratio": total / max(nonzero, 1),
        "weight_bits_total": float(weight_bits),
        "avg_weight_bits": weight_bits / max(nonzero, 1),
        "storage_ratio": FLOAT_BITS * total / max(weight_bits, 1),
    }


def _restore(model, state: dict[str, np.ndarray]) -> None:
    """Copy a ``state_dict`` back in place (parameters, BatchNorm statistics).

    Not ``Model.load_state_dict``, which rebinds new arrays: copying in place
    keeps every array handed out by ``subject.weights()`` live.
    """
    params = model.parameters()
    for name, value in state.items():
        if name in params:
            params[name][...] = value
    for layer in model.layers():
        for key in ("running_mean", "running_var"):
            full = f"{layer.name}.{key}"
            if full in state:
                setattr(layer, key, np.array(state[full], dtype=np.float32))


def _effective(subject: ModelSubject) -> dict[str, np.ndarray]:
    masks = subject.masks()
    return {n: (w if masks[n] is None else w * masks[n]) for n, w in subject.weights().items()}


class AdmmTechnique:
    """Built by the ``admm`` spec's factory from an :class:`~harness_plugins.admm.AdmmConfig`."""

    def __init__(self, config):
        from harness_plugins.admm import validate_config

        validate_config(config)
        self.config = config

    # -- entry point ---------------------------------------------------------------
    def apply(self, subject, workload, ctx):
        cfg = self.config
        if not isinstance(subject, ModelSubject):
            raise IncompatibleError(
                f"admm prunes and quantizes a model's weights (a ModelSubject, as built by digits_mlp, "
                f"mnist_lenet5, mnist_vit); workload {getattr(workload, 'name', '?')!r} built a {type(subject).__name__}"
            )
        start = time.perf_counter()
        self.alphas = {}
        weights = subject.weights()
        shapes = {n: tuple(w.shape) for n, w in weights.items()}
        overrides = self._resolve_names(dict(cfg.layer_ratios), shapes, "layer_ratios")
        layer_bits = self._resolve_names(dict(cfg.layer_bits), shapes, "layer_bits")
        projections = self._projections(list(shapes))

        dense_test = subject.evaluate(split="test")
        dense_val = subject.evaluate(split="val")
        ctx.log_metric("technique/dense_accuracy", dense_test)
        ctx.log_metric("technique/dense_val_accuracy", dense_val)
        ctx.progress(f"admm: dense accuracy test {dense_test:.4f} val {dense_val:.4f}")

        base_lr = subject.train_config.lr
        self._lr, self._retrain_lr = base_lr * cfg.lr_scale, base_lr * cfg.retrain_lr_scale
        if cfg.ratio > 1.0:
            final_keep = allocate_keep(shapes, cfg.ratio, overrides, cfg.allocation, _effective(subject))
            plans = plan_stages(cfg.method, final_keep, cfg.stages, cfg.admm_updates, cfg.admm_epochs,
                                cfg.retrain_epochs)
            for plan in plans:
                t0 = time.perf_counter()
                counts = {n: keep_count(shapes[n], plan.keep[n], projections[n]) for n in shapes}
                prefix = f"technique/stage{plan.index}/"
                if plan.admm_updates:
                    self._admm_phase(subject, ctx, prefix, plan.admm_updates,
                                     {n: (lambda x, n=n: project_prune(x, counts[n], projections[n])) for n in shapes})
                self._harden_masks(subject, counts, projections)
                epochs = plan.retrain_epochs + plan.magnitude_epochs
                self._retrain(subject, epochs, ctx, prefix)
                self._log_checkpoint(subject, ctx, prefix.rstrip("/"))
                ctx.log_metric(f"perf/technique_stage{plan.index}_seconds", time.perf_counter() - t0)

        bits = {}
        if cfg.quant_bits:
            bits = {n: int(layer_bits.get(n, cfg.quant_bits)) for n in shapes}
            self._quantize(subject, ctx, bits)
            self._log_checkpoint(subject, ctx, "technique/quant")

        self._log_final(subject, ctx, bits, projections, dense_test)
        ctx.log_metric("perf/technique_seconds", time.perf_counter() - start)
        return subject

    # -- configuration against the model ------------------------------------------
    @staticmethod
    def _resolve_names(values: dict, shapes: dict, field: str) -> dict:
        """Accept ``conv1`` or ``conv1.W``; name the valid layers for anything else."""
        out = {}
        for key, value in values.items():
            name = key if key in shapes else f"{key}.W"
            if name not in shapes:
                valid = ", ".join(n[:-2] if n.endswith(".W") else n for n in shapes)
                raise ValueError(f"admm: {field} names {key!r}, which is no prunable weight of this model; valid are {valid}")
            out[name] = value
        return out

    def _projections(self, names: list[str]) -> dict[str, str]:
        """Projection per weight. Filter pruning would delete classes from the
        classifier, so the last weight is column-pruned instead [inferred]."""
        proj = {n: self.config.projection for n in names}
        if self.config.projection == "filter" and names:
            proj[names[-1]] = "column"
        return proj

    # -- the phases ------------------------------------------------------------------
    def _train_kwargs(self, lr: float) -> dict:
        return {"lr": lr, "schedule": "cosine", "warmup_epochs": 0.0}

    def _admm_phase(self, subject, ctx, prefix, updates, project, rho_init=None, growth=None):
        """ADMM-regularized training with Z/U updates; returns the last (Z, U)."""
        cfg = self.config
        rho = [cfg.rho if rho_init is None else rho_init]
        growth = cfg.rho_growth if growth is None else growth
        eff = _effective(subject)
        z = {n: project[n](w) for n, w in eff.items()}
        u = {n: np.zeros_like(w) for n, w in eff.items()}

        def hook(name, w):
            # masked entries get their gradient masked by the trainer; Z is 0 there
            return rho[0] * (w - z[name] + u[name])

        for t in range(updates):
            # one train() call per ADMM interval: the cosine LR restarts at every
            # ADMM boundary, as in the paper's reference code
            subject.train(cfg.admm_epochs, ctx, grad_hook=hook, prefix=prefix, **self._train_kwargs(self._lr))
            eff = _effective(subject)
            num = den = 0.0
            for n, w in eff.items():
                z[n], u[n] = admm_update(w, u[n], project[n])
                num += float(np.sum((w - z[n]).astype(np.float64) ** 2))
                den += float(np.sum(w.astype(np.float64) ** 2))
            ctx.append_series(f"{prefix}admm_residual", float(np.sqrt(num / max(den, 1e-30))), t)
            ctx.append_series(f"{prefix}rho", rho[0], t)
            rho[0] *= growth
        return z, u

    @staticmethod
    def _harden_masks(subject, counts, projections) -> None:
        """Mask = support of Proj(W) within the previous mask; stored weights zeroed."""
        weights, masks = subject.weights(), subject.masks()
        for n, w in weights.items():
            old = masks[n]
            eff = w if old is None else w * old
            mask = prune_support(eff, counts[n], projections[n])
            if old is not None:
                mask = mask * old
            subject.set_mask(n, mask)
            w *= mask

    def _retrain(self, subject, epochs, ctx, prefix, grad_hook=None, **overrides) -> None:
        """Masked retraining; keeps the epoch with the best validation accuracy.

        ``ModelSubject.train`` has no per-epoch callback, so this calls
        :func:`harness.nn.train.fit` as ``train`` does (same seed derivation, history
        extended) and snapshots the best state on the validation split.
        """
        if epochs <= 0:
            return
        kwargs = {**self._train_kwargs(self._retrain_lr), **overrides}
        cfg = dataclasses.replace(subject.train_config, epochs=int(epochs), **kwargs)
        seed = int(np.random.SeedSequence([subject.seed, subject.epochs_trained, 7]).generate_state(1)[0])
        best = {"acc": -1.0, "state": None}

        def on_epoch_end(epoch, row):
            if self.config.select_on_val and row.get("val_accuracy", 0.0) >= best["acc"]:
                best["acc"], best["state"] = row["val_accuracy"], subject.model.state_dict()

        rows = fit(subject.model, subject.data.train, subject.data.val, cfg, seed, ctx=ctx, prefix=prefix,
                   first_epoch=subject.epochs_trained, on_epoch_end=on_epoch_end, grad_hook=grad_hook)
        subject.history.extend(rows)
        if best["state"] is not None:
            _restore(subject.model, best["state"])

    def _quantize(self, subject, ctx, bits) -> None:
        """ADMM toward ``alpha * Q`` on the surviving weights, then project hard."""
        cfg = self.config
        masks = subject.masks()
        support = {n: masks[n] for n in bits}  # None: unpruned, every weight is quantized
        per_channel = cfg.quant_scale == "channel"
        project = {n: (lambda x, n=n: project_quant(x, bits[n], support[n], per_channel=per_channel)[0]) for n in bits}
        if cfg.quant_updates:
            self._admm_phase(subject, ctx, "technique/quant/", cfg.quant_updates, project,
                             rho_init=cfg.quant_rho, growth=cfg.rho_growth)
        self.alphas = {}
        for n, w in subject.weights().items():
            eff = w if support[n] is None else w * support[n]
            q, alpha = project_quant(eff, bits[n], support[n], per_channel=per_channel)
            w[...] = q
            self.alphas[n] = alpha
            # Evaluation and the op trace run this layer at its bits, on exactly these codes.
            subject.set_precision(n, weight_bits=bits[n], weight_granularity="channel" if per_channel else "tensor",
                                  weight_scale=alpha)
        if cfg.quant_retrain_epochs:
            self._retrain_pinned(subject, ctx, cfg.quant_retrain_epochs)
        if subject.recalibrate_batchnorm() and ctx is not None:
            ctx.progress("admm: BatchNorm statistics re-estimated after quantization")

    def _retrain_pinned(self, subject, ctx, epochs) -> None:
        """Retrain the float parameters (biases, norms) around the quantized weights.

        The trainer has no way to freeze a weight, so the hook adds the gradient of
        a penalty ``1/(2 lr) ||W - alpha Q||^2`` and momentum is off: one SGD step
        then lands on ``alpha Q - lr * (grad + decay)``, a drift far below one
        quantization step, and the weights are snapped back exactly afterwards
        [inferred: the paper's quantized models are not retrained after the
        projection; this only adapts what stays in float].
        """
        targets = {n: w.copy() for n, w in subject.weights().items()}
        pin = 1.0 / self._retrain_lr

        def hook(name, w):
            return pin * (w - targets[name])

        self._retrain(subject, epochs, ctx, "technique/quant_retrain/", grad_hook=hook, momentum=0.0,
                      schedule="constant")
        for n, w in subject.weights().items():
            w[...] = targets[n]

    # -- reporting ---------------------------------------------------------------------
    @staticmethod
    def _log_checkpoint(subject, ctx, name) -> None:
        stats = compression_stats(_effective(subject))
        val = subject.evaluate(split="val")
        test = subject.evaluate(split="test")
        ctx.log_metric(f"{name}/compression_ratio", stats["compression_ratio"])
        ctx.log_metric(f"{name}/val_accuracy", val)
        ctx.log_metric(f"{name}/accuracy", test)
        ctx.progress(f"admm: {name}: {stats['compression_ratio']:.1f}x, val {val:.4f}, test {test:.4f}")

    def _log_final(self, subject, ctx, bits, projections, dense_test) -> None:
        eff = _effective(subject)
        alphas = self.alphas
        stats = compression_stats(eff, bits, sum(int(np.size(a)) for a in alphas.values()))
        for key, value in stats.items():
            ctx.log_metric(f"technique/{key}", value)
        final_test = subject.evaluate(split="test")
        ctx.log_metric("technique/final_val_accuracy", subject.evaluate(split="val"))
        # points of accuracy lost to compression, on the split the workload reports
        ctx.log_metric("technique/accuracy_drop_points", 100.0 * (dense_test - final_test))
        rows = []
        for n, w in eff.items():
            nnz = int(np.count_nonzero(w))
            rows.append({
                "layer": n,
                "shape": "x".join(str(d) for d in w.shape),
                "weights": int(w.size),
                "nonzero": nnz,
                "density": nnz / w.size,
                "sparsity": 1.0 - nnz / w.size,
                "compression_ratio": w.size / max(nnz, 1),
                "projection": projections[n],
                "bits": int(bits.get(n, FLOAT_BITS)),
                "alpha": float(np.mean(alphas.get(n, 0.0))),
                "scales": int(np.size(alphas[n])) if n in alphas else 0,
            })
        ctx.log_table("layer_sparsity", rows)
