"""``digits_mlp``: a multilayer perceptron on scikit-learn's 8x8 digits.

The smallest model workload: 1,797 images (about 1,170 train / 270 val / 360 test),
an MLP ``64 -> hidden... -> 10`` with ReLU, trained in a few seconds. It is the
setting of the quick checks in ``shared/papers/compression.md`` (ADMM, MetaPruning,
Dynasty on digits). The subject is a :class:`harness.nn.ModelSubject`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness import hookimpl
from harness.data import Splits, load_digits
from harness.nn import ModelWorkload, TrainConfig, mlp
from harness.nn.train import (VALID_BATCH_SIZE, VALID_EPOCHS, VALID_LR, VALID_MOMENTUM, VALID_OPTIMIZER,
                              VALID_QUANT_BITS, VALID_WEIGHT_DECAY)
from harness.specs import WorkloadSpec
from harness.validation import valid


#: Ceiling of a hidden layer's width: a typo guard, not a limit of the model (two
#: 4096-wide layers are 64 MiB of float32 weights, three times that while training).
MAX_WIDTH = 4096


def parse_widths(hidden: str) -> list[int]:
    """``"300,100"`` -> ``[300, 100]``; ValueError unless every width is in 1..MAX_WIDTH."""
    widths = [int(w) for w in str(hidden).split(",") if w.strip()]
    if not widths or not all(1 <= w <= MAX_WIDTH for w in widths):
        raise ValueError(f"hidden={hidden!r}: use comma-separated widths in 1..{MAX_WIDTH}, e.g. '300,100'")
    return widths


def _widths_ok(hidden: str) -> bool:
    try:
        return bool(parse_widths(hidden))
    except ValueError:
        return False


@dataclass
class DigitsMlpConfig:
    """MLP shape and training; ``hidden`` is a comma-separated list of widths. Valid
    values are declared on each field; the training settings share :mod:`harness.nn.train`'s."""

    hidden: str = field(default="300,100", metadata=valid(
        check=(_widths_ok, f"comma-separated widths in 1..{MAX_WIDTH}, e.g. '300,100'")))
    batchnorm: bool = False
    epochs: int = field(default=30, metadata=VALID_EPOCHS)
    batch_size: int = field(default=32, metadata=VALID_BATCH_SIZE)
    lr: float = field(default=0.05, metadata=VALID_LR)
    momentum: float = field(default=0.9, metadata=VALID_MOMENTUM)
    weight_decay: float = field(default=1e-4, metadata=VALID_WEIGHT_DECAY)
    optimizer: str = field(default="sgd", metadata=VALID_OPTIMIZER)
    quant_bits: int = field(default=0, metadata=VALID_QUANT_BITS)


class DigitsMlp(ModelWorkload):
    name = "digits_mlp"

    def widths(self) -> list[int]:
        return parse_widths(self.config.hidden)  # validated with the config

    def load_data(self, seed: int) -> Splits:
        return load_digits(seed)

    def make_model(self, rng: np.random.Generator):
        return mlp([64, *self.widths(), 10], rng, batchnorm=self.config.batchnorm)

    def train_config(self) -> TrainConfig:
        c = self.config
        return TrainConfig(epochs=c.epochs, batch_size=c.batch_size, optimizer=c.optimizer, lr=c.lr,
                           momentum=c.momentum, weight_decay=c.weight_decay)


@hookimpl
def harness_workloads():
    yield WorkloadSpec(
        name="digits_mlp",
        summary="MLP on scikit-learn's 8x8 digits (1,797 images), numpy training",
        config=DigitsMlpConfig,
        factory=DigitsMlp,
        smoke={"epochs": 2},
        provides={"subject:model", "weight_values", "training_gemms"},
        headline=("eval/accuracy", "eval/accuracy_exact"),
    )
