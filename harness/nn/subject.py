"""The model subject techniques consume, and the base class of the model workloads.

See the :mod:`harness.nn` docstring for the protocol in prose.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.code_digest import source_digest
from harness.data import Splits
from harness.nn.cache import cache_key, cached_state
from harness.nn.models import Model, Sequential, VisionTransformer, compact_channels, recalibrate_batchnorm
from harness.nn.runtime import Precision
from harness.nn.train import GradHook, TrainConfig, accuracy, fit, log_epoch, predict
from harness.numerics.backend import EXACT, MatmulBackend
from harness.optrace import OpTrace
from harness.validation import validate_config

__all__ = ["ModelSubject", "ModelWorkload"]


@dataclass
class ModelSubject:
    """A trained classifier with its data: what model workloads build.

    ``model`` is live: techniques may edit weights (``weights()`` returns the arrays
    themselves) and masks in place, or work on ``copy()``.
    """

    workload: str
    model: Model
    data: Splits
    train_config: TrainConfig
    quant_bits: int = 0
    seed: int = 0
    history: list[dict] = field(default_factory=list)
    trace_samples: int = 32
    #: Per-layer bit widths set by a technique (layer name -> Precision).
    precision: dict[str, Precision] = field(default_factory=dict)

    # -- weights and masks -------------------------------------------------------
    def weights(self) -> dict[str, np.ndarray]:
        """Prunable GEMM weights by name (``"conv1.W"``, ``"blocks.0.attn.qkv.W"``)."""
        return self.model.weights()

    def masks(self) -> dict[str, np.ndarray | None]:
        """Elementwise weight masks by weight name (None: unmasked)."""
        return {n: self.model.weight_layer(n).weight_mask for n in self.weights()}

    def set_mask(self, name: str, mask: np.ndarray | None) -> None:
        """Set the elementwise 0/1 mask of weight ``name`` (None removes it)."""
        layer = self.model.weight_layer(name)
        if mask is not None:
            mask = np.asarray(mask, dtype=np.float32)
            if mask.shape != layer.params["W"].shape:
                raise ValueError(f"mask for {name} has shape {mask.shape}, the weight has {layer.params['W'].shape}")
        layer.weight_mask = mask

    def channel_groups(self) -> dict[str, int]:
        """Layers with maskable output channels, and their channel counts."""
        return self.model.channel_groups()

    def set_channel_mask(self, name: str, mask: np.ndarray | None) -> None:
        self.model.set_channel_mask(name, mask)

    def set_head_mask(self, block: int, mask: np.ndarray | None) -> None:
        if not isinstance(self.model, VisionTransformer):
            raise TypeError(f"{self.workload}: head masks need a transformer, the model is {type(self.model).__name__}")
        self.model.set_head_mask(block, mask)

    def set_precision(self, layer: str, weight_bits: int | None = None, act_bits: int | None = None,
                      weight_granularity: str = "channel", weight_scale=None) -> None:
        """Run ``layer`` (``"conv1"`` or ``"conv1.W"``) at these bit widths in evaluation
        and report them in the op trace; None keeps the workload's ``quant_bits``.

        Weights are quantized to ``weight_bits`` codes per output channel (or one scale
        per ``tensor``) when activations are integer too. A technique that put the
        weights on its own grid ``alpha * Q`` passes ``weight_scale=alpha`` (a float
        or one per output channel), so the codes are exactly ``Q``.
        """
        name = layer[:-2] if layer.endswith(".W") else layer
        layers = sorted(w[:-2] for w in self.weights())
        if name not in layers:
            raise KeyError(f"{self.workload}: no weight layer {layer!r}; layers: {', '.join(layers)}")
        self.precision[name] = Precision(weight_bits, act_bits, weight_granularity, weight_scale)

    def density(self) -> dict[str, float]:
        """Fraction of non-zero effective weights per weight tensor."""
        return {n: self.model.weight_layer(n).weight_density() for n in self.weights()}

    # -- training and evaluation -------------------------------------------------
    @property
    def epochs_trained(self) -> int:
        return len(self.history)

    def train(self, epochs: int, ctx=None, grad_hook: GradHook | None = None, prefix: str = "train/",
              gemm: Any = None, **overrides: Any) -> list[dict]:
        """Train for ``epochs`` more epochs; returns per-epoch rows.

        ``overrides`` replace fields of the base :class:`TrainConfig` (``lr``,
        ``optimizer``, ``schedule``, ...). ``grad_hook(name, W)`` adds an extra
        gradient per prunable weight; masks stay applied. ``gemm`` is the training
        GEMM (:mod:`harness.nn.train_gemm`; None: exact float32 BLAS). Series go
        to ``ctx`` under ``prefix`` at steps continuing from the epochs already trained.
        """
        cfg = dataclasses.replace(self.train_config, epochs=int(epochs), **overrides)
        seed = int(np.random.SeedSequence([self.seed, self.epochs_trained, 7]).generate_state(1)[0])
        rows = fit(self.model, self.data.train, self.data.val, cfg, seed, ctx=ctx, grad_hook=grad_hook,
                   prefix=prefix, first_epoch=self.epochs_trained, gemm=gemm)
        self.history.extend(rows)
        return rows

    def logits(self, x: np.ndarray, backend: MatmulBackend = EXACT, quant_bits: int | None = None) -> np.ndarray:
        return predict(self.model, x, backend, self.quant_bits if quant_bits is None else quant_bits,
                       precision=self.precision)

    def evaluate(self, backend: MatmulBackend = EXACT, split: str = "test", quant_bits: int | None = None) -> float:
        """Accuracy on ``split`` with every GEMM through ``backend``."""
        x, y = self.data.split(split)
        return accuracy(self.model, x, y, backend, self.quant_bits if quant_bits is None else quant_bits,
                        precision=self.precision)

    def op_trace(self, quant_bits: int | None = None) -> OpTrace:
        """GEMMs of one sample, densities measured on the first validation samples."""
        x = self.data.x_val[: self.trace_samples]
        return self.model.op_trace(x, self.quant_bits if quant_bits is None else quant_bits, precision=self.precision)

    def recalibrate_batchnorm(self, samples: int | None = None) -> int:
        """Re-estimate BatchNorm statistics on (the first ``samples``) training images."""
        x = self.data.x_train if samples is None else self.data.x_train[:samples]
        return recalibrate_batchnorm(self.model, x)

    # -- structure ---------------------------------------------------------------
    def copy(self) -> "ModelSubject":
        """Independent model and history; the (read-only) data is shared."""
        return dataclasses.replace(self, model=self.model.copy(), history=copy.deepcopy(self.history),
                                   precision=dict(self.precision))

    def compact(self) -> "ModelSubject":
        """A copy with masked channels physically removed (sequential models)."""
        if not isinstance(self.model, Sequential):
            raise TypeError(f"{self.workload}: compaction needs a sequential model, got {type(self.model).__name__}")
        return dataclasses.replace(self, model=compact_channels(self.model), history=copy.deepcopy(self.history),
                                   precision=dict(self.precision))


class ModelWorkload:
    """Base of the classifier workloads: build (train or load), evaluate, op_trace.

    A subclass sets ``name`` and ``eval_only`` (config fields that do not change the
    trained weights, so they are left out of the cache key) and implements
    ``load_data(seed)``, ``make_model(rng)`` and ``train_config()``.
    """

    name = ""
    eval_only: tuple[str, ...] = ("quant_bits",)

    def __init__(self, config):
        self.config = config
        self.validate()

    def validate(self) -> None:
        """The valid values declared on the config's fields (checked on the driver already;
        again here for direct use), then the derived training settings."""
        validate_config(self.config, "workload", self.name)
        self.train_config().validate()

    def load_data(self, seed: int) -> Splits:  # pragma: no cover - abstract
        raise NotImplementedError

    def make_model(self, rng: np.random.Generator) -> Model:  # pragma: no cover - abstract
        raise NotImplementedError

    def train_config(self) -> TrainConfig:  # pragma: no cover - abstract
        raise NotImplementedError

    def cache_key(self, seed: int) -> str:
        """The base model's identity: config (no eval-only fields), seed, and code (this
        workload's plugin source and the training substrate): editing either retrains."""
        cfg = {k: v for k, v in dataclasses.asdict(self.config).items() if k not in self.eval_only}
        return cache_key(self.name, cfg, seed, code=(source_digest(type(self)),))

    def build(self, ctx) -> ModelSubject:
        data = self.load_data(ctx.child_seed(self.name, "split"))
        init_seed = ctx.child_seed(self.name, "init")
        model = self.make_model(np.random.default_rng(init_seed))
        subject = ModelSubject(self.name, model, data, self.train_config(),
                               quant_bits=getattr(self.config, "quant_bits", 0), seed=ctx.child_seed(self.name, "train"))

        def produce():
            start = time.perf_counter()
            ctx.progress(f"{self.name}: training the base model ({subject.train_config.epochs} epochs)")
            subject.train(subject.train_config.epochs)
            return model.state_dict(), {"history": subject.history, "seconds": time.perf_counter() - start}

        state, meta, hit = cached_state(ctx.cache_dir, self.name, self.cache_key(ctx.seed), produce)
        ctx.set_tag("workload.cache", "hit" if hit else "miss")
        if hit:
            model.load_state_dict(state)
            subject.history = meta["history"]
        else:
            ctx.log_metric("perf/train_seconds", meta["seconds"])
        for row in subject.history:
            log_epoch(ctx, row)
        return subject

    def evaluate(self, subject: Any, backend: MatmulBackend, ctx) -> dict[str, float]:
        if not isinstance(subject, ModelSubject):
            from harness.api import IncompatibleError

            raise IncompatibleError(f"{self.name} evaluates a ModelSubject, got {type(subject).__name__}")
        return {"accuracy": subject.evaluate(backend, "test")}

    def op_trace(self, subject: ModelSubject) -> OpTrace:
        return subject.op_trace()
