"""``digits_mlp``: a multilayer perceptron on scikit-learn's 8x8 digits.

The smallest model workload: 1,797 images (about 1,170 train / 270 val / 360 test),
an MLP ``64 -> hidden... -> 10`` with ReLU, trained in a few seconds. It is the
setting of the quick checks in ``shared/papers/compression.md`` (ADMM, MetaPruning,
Dynasty on digits). The subject is a :class:`harness.nn.ModelSubject`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness import hookimpl
from harness.data import Splits, load_digits
from harness.nn import ModelWorkload, TrainConfig, mlp
from harness.specs import WorkloadSpec


@dataclass
class DigitsMlpConfig:
    """MLP shape and training; ``hidden`` is a comma-separated list of widths."""

    hidden: str = "300,100"
    batchnorm: bool = False
    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    optimizer: str = "sgd"
    quant_bits: int = 0


class DigitsMlp(ModelWorkload):
    name = "digits_mlp"

    def widths(self) -> list[int]:
        try:
            widths = [int(w) for w in str(self.config.hidden).split(",") if w.strip()]
        except ValueError:
            raise ValueError(f"digits_mlp: hidden={self.config.hidden!r}: use comma-separated widths, e.g. '300,100'") from None
        if not widths or min(widths) < 1:
            raise ValueError(f"digits_mlp: hidden={self.config.hidden!r}: need at least one positive width")
        return widths

    def validate(self):
        self.widths()
        super().validate()

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
    )
