"""Mini-batch training and evaluation of a :class:`~harness.nn.models.Model`.

Training runs in exact float32 (the backend is for evaluation) unless a
technique passes a training GEMM (``fit(..., gemm=...)``). It is seeded and
single-threaded in its reductions, so the same model, data, config, seed (and a
training GEMM that draws from ``call.seed``) give bit-identical weights on the
same machine.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from harness.nn.losses import softmax_cross_entropy
from harness.nn.models import Model
from harness.nn.optim import OPTIMIZERS, make_optimizer
from harness.nn.runtime import Runtime, blas_threads
from harness.nn.train_gemm import BoundTrainGemm
from harness.numerics.backend import EXACT, MatmulBackend, derive_seed
from harness.validation import valid, validate_config

__all__ = ["GradHook", "TrainConfig", "accuracy", "fit", "predict", "random_shift"]

#: ``grad_hook(name, W) -> extra gradient (W-shaped) or None``, called for every
#: prunable weight (``Model.weights()``) at every step, before masks are applied.
GradHook = Callable[[str, np.ndarray], "np.ndarray | None"]

SCHEDULES = ("cosine", "constant")


#: Ceilings of the training sizes: typo guards, not limits of the method (10,000
#: epochs of the smallest workload take hours; a batch beyond 2**16 is the whole
#: training set of every workload here); a shift beyond 14 moves a 28-pixel digit
#: out of its frame.
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 2**16
MAX_SHIFT = 14

#: Valid values of the training settings, as field metadata (:mod:`harness.validation`):
#: the model workloads' configs use them on their own fields, so a bad ``workload.lr``
#: is refused on the driver, before anything trains.
VALID_EPOCHS = valid(ge=1, le=MAX_EPOCHS)
VALID_BATCH_SIZE = valid(ge=1, le=MAX_BATCH_SIZE)
VALID_LR = valid(gt=0)
VALID_MOMENTUM = valid(ge=0, lt=1)
VALID_WEIGHT_DECAY = valid(ge=0)
VALID_OPTIMIZER = valid(one_of=OPTIMIZERS)
VALID_WARMUP_EPOCHS = valid(ge=0, le=MAX_EPOCHS)
VALID_SHIFT = valid(ge=0, le=MAX_SHIFT, why="pixels of random translation")
#: 0 runs evaluation in float; 2..16 quantizes every GEMM's operands to integer codes.
VALID_QUANT_BITS = valid(ge=2, le=16, also=(0,), why="0 = float, 2..16 = signed integer codes")
#: A prefix of the (shuffled) training split; 0 keeps all of it.
VALID_TRAIN_SAMPLES = valid(ge=0, why="0 = all")


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (see the workloads for operating points)."""

    #: 0 is valid here (a technique's empty phase); workloads train at least one epoch.
    epochs: int = field(default=10, metadata=valid(ge=0, le=MAX_EPOCHS))
    batch_size: int = field(default=64, metadata=VALID_BATCH_SIZE)
    optimizer: str = field(default="sgd", metadata=VALID_OPTIMIZER)
    lr: float = field(default=0.05, metadata=VALID_LR)
    momentum: float = field(default=0.9, metadata=VALID_MOMENTUM)
    weight_decay: float = field(default=5e-4, metadata=VALID_WEIGHT_DECAY)
    schedule: str = field(default="cosine", metadata=valid(one_of=SCHEDULES))
    warmup_epochs: float = field(default=0.0, metadata=VALID_WARMUP_EPOCHS)
    shift: int = field(default=0, metadata=VALID_SHIFT)

    def validate(self) -> None:
        """Raise ConfigError (a ValueError) naming every invalid setting; techniques
        derive settings (``lr * lr_scale``), so this guards what the driver did not see."""
        validate_config(self, name="train config")


def random_shift(x: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
    """Translate each NHWC image by up to ``max_shift`` pixels (zero fill)."""
    if max_shift <= 0:
        return x
    b, h, w, _ = x.shape
    p = max_shift
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    dy = rng.integers(0, 2 * p + 1, b)
    dx = rng.integers(0, 2 * p + 1, b)
    out = np.empty_like(x)
    for i in range(b):
        out[i] = padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
    return out


def predict(model: Model, x: np.ndarray, backend: MatmulBackend = EXACT, quant_bits: int = 0,
            batch_size: int = 500, precision=None) -> np.ndarray:
    """Logits of ``x`` with every GEMM through ``backend`` (optionally on integer codes,
    with per-layer bit widths from ``precision``: layer name -> ``Precision``)."""
    rt = Runtime(backend=backend, quant_bits=quant_bits, precision=precision)
    with blas_threads(1):
        outs = [model.forward(x[i : i + batch_size], rt) for i in range(0, len(x), batch_size)]
    return np.concatenate(outs, axis=0)


def accuracy(model: Model, x: np.ndarray, y: np.ndarray, backend: MatmulBackend = EXACT,
             quant_bits: int = 0, precision=None) -> float:
    return float(np.mean(predict(model, x, backend, quant_bits, precision=precision).argmax(axis=1) == y))


def _lr_at(cfg: TrainConfig, progress: float) -> float:
    """Learning rate at ``progress`` epochs into a run of ``cfg.epochs``."""
    if cfg.warmup_epochs and progress < cfg.warmup_epochs:
        return cfg.lr * (progress + 1e-3) / cfg.warmup_epochs
    if cfg.schedule == "constant" or cfg.epochs == 0:
        return cfg.lr
    t = (progress - cfg.warmup_epochs) / max(cfg.epochs - cfg.warmup_epochs, 1e-9)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def fit(model: Model, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray] | None,
        cfg: TrainConfig, seed: int, ctx=None, grad_hook: GradHook | None = None,
        prefix: str = "train/", first_epoch: int = 0,
        on_epoch_end: Callable[[int, dict], None] | None = None, gemm: Any = None) -> list[dict]:
    """Train ``model`` in place for ``cfg.epochs`` epochs; return one dict per epoch.

    Per epoch, ``ctx.append_series`` receives ``<prefix>loss``, ``<prefix>accuracy``
    (on the training batches, as seen during the epoch) and ``<prefix>val_accuracy``,
    at step ``first_epoch + epoch`` so repeated calls continue one curve.
    ``grad_hook`` adds a term to each prunable weight's gradient (ADMM's
    ``rho * (W - Z + U)``); masks are applied after it, so masked weights stay put.
    ``gemm`` (``matmul(a, b, call)``) computes every forward and backward GEMM
    (:mod:`harness.nn.train_gemm`); its ``call.seed`` comes from ``seed``, the op
    and the global step ``(first_epoch + epoch) * steps_per_epoch + step``.
    Validation accuracy is always exact.
    """
    cfg.validate()
    with blas_threads(1):
        return _fit(model, train, val, cfg, seed, ctx, grad_hook, prefix, first_epoch, on_epoch_end, gemm)


def _fit(model, train, val, cfg, seed, ctx, grad_hook, prefix, first_epoch, on_epoch_end, gemm=None):
    x, y = train
    rng = np.random.default_rng(seed)
    opt = make_optimizer(cfg.optimizer, cfg.momentum, cfg.weight_decay)
    bound = None if gemm is None else BoundTrainGemm(gemm, derive_seed(seed, "train_gemm"))
    rt = Runtime(training=True, train_gemm=bound)
    params = model.parameters()
    weight_names = sorted(model.weights())
    refs = list(model.param_refs())
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    history = []
    for epoch in range(cfg.epochs):
        start = time.perf_counter()
        order = rng.permutation(len(x))
        loss_sum, correct = 0.0, 0
        for step in range(steps_per_epoch):
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            xb, yb = x[idx], y[idx]
            if cfg.shift:
                xb = random_shift(xb, rng, cfg.shift)
            if bound is not None:
                bound.step = (first_epoch + epoch) * steps_per_epoch + step
            logits = model.forward(xb, rt)
            loss, dlogits = softmax_cross_entropy(logits, yb)
            model.backward(dlogits)
            grads = model.gradients()
            masks = {n: m for n, layer, key in refs if (m := layer.param_mask(key)) is not None}
            if grad_hook is not None:
                for name in weight_names:
                    extra = grad_hook(name, params[name])
                    if extra is not None:
                        grads[name] = grads[name] + extra
            opt.step(params, grads, _lr_at(cfg, epoch + step / steps_per_epoch), masks)
            loss_sum += loss * len(idx)
            correct += int(np.sum(logits.argmax(axis=1) == yb))
        row = {
            "epoch": first_epoch + epoch,
            "loss": loss_sum / len(x),
            "accuracy": correct / len(x),
            "seconds": time.perf_counter() - start,
        }
        if val is not None:
            row["val_accuracy"] = accuracy(model, *val)
        history.append(row)
        if ctx is not None:
            log_epoch(ctx, row, prefix)
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    return history


def log_epoch(ctx, row: dict, prefix: str = "train/") -> None:
    """File one epoch's figures as series points (wall-clock time goes under ``perf/``)."""
    for key in ("loss", "accuracy", "val_accuracy"):
        if key in row:
            ctx.append_series(f"{prefix}{key}", row[key], row["epoch"])


def config_dict(cfg: TrainConfig) -> dict:
    return asdict(cfg)
