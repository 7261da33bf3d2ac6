"""Models built from :mod:`harness.nn.layers`: a sequential stack and a tiny ViT.

Both expose the same surface (:class:`Model`): ``forward``/``backward``, named
parameters and gradients, prunable weights and their masks, channel groups,
``state_dict``. Builders for the workloads' architectures are at the bottom.
"""

from __future__ import annotations

import copy
from typing import Callable, Iterator

import numpy as np

from harness.nn.layers import (
    BatchNorm,
    Conv2d,
    Dense,
    Flatten,
    GELU,
    Layer,
    LayerNorm,
    MaxPool2d,
    MultiHeadSelfAttention,
    ReLU,
    _WeightLayer,
)
from harness.nn.runtime import OpRecorder, Runtime

__all__ = [
    "Model",
    "Sequential",
    "VisionTransformer",
    "compact_channels",
    "lenet5",
    "mlp",
    "recalibrate_batchnorm",
    "tiny_vit",
]

F32 = np.float32


class Model:
    """What every model provides on top of ``forward(x, rt)`` and ``backward(dlogits)``."""

    input_shape: tuple[int, ...]
    num_classes: int

    def forward(self, x: np.ndarray, rt: Runtime) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def top_layers(self) -> list[Layer]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- layer walking --------------------------------------------------------
    def layers(self) -> Iterator[Layer]:
        """Every layer, nested ones included, in forward order."""
        stack = list(reversed(self.top_layers()))
        while stack:
            layer = stack.pop()
            yield layer
            stack.extend(reversed(layer.sublayers()))

    def layer(self, name: str) -> Layer:
        for layer in self.layers():
            if layer.name == name:
                return layer
        raise KeyError(f"no layer {name!r}; layers are {[l.name for l in self.layers()]}")

    # -- parameters -----------------------------------------------------------
    def param_refs(self) -> Iterator[tuple[str, Layer, str]]:
        for layer in self.layers():
            for key in layer.params:
                yield f"{layer.name}.{key}", layer, key

    def parameters(self) -> dict[str, np.ndarray]:
        """Every trainable array by name (the live arrays: edit them in place)."""
        return {name: layer.params[key] for name, layer, key in self.param_refs()}

    def gradients(self) -> dict[str, np.ndarray]:
        return {name: layer.grads[key] for name, layer, key in self.param_refs() if key in layer.grads}

    def weights(self) -> dict[str, np.ndarray]:
        """The prunable GEMM weight tensors (``<layer>.W``), live arrays."""
        return {f"{l.name}.W": l.params["W"] for l in self.layers() if isinstance(l, _WeightLayer)}

    def weight_layer(self, name: str) -> _WeightLayer:
        layer = self.layer(name[:-2] if name.endswith(".W") else name)
        if not isinstance(layer, _WeightLayer):
            raise KeyError(f"{name!r} is not a weight layer; valid are {sorted(self.weights())}")
        return layer

    def param_mask(self, name: str) -> np.ndarray | None:
        layer_name, key = name.rsplit(".", 1)
        return self.layer(layer_name).param_mask(key)

    def channel_groups(self) -> dict[str, int]:
        """Layers whose output channels can be masked, with their channel counts.

        The last layer (the classifier) is excluded: its outputs are the classes.
        """
        producers = [l for l in self.layers() if isinstance(l, _WeightLayer) and "." not in l.name]
        return {l.name: l.out_channels for l in producers[:-1]}

    def set_channel_mask(self, name: str, mask: np.ndarray | None) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not support channel masks")

    # -- state ----------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        state = {k: v.copy() for k, v in self.parameters().items()}
        for layer in self.layers():
            if isinstance(layer, BatchNorm):
                state[f"{layer.name}.running_mean"] = layer.running_mean.copy()
                state[f"{layer.name}.running_var"] = layer.running_var.copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Load what :meth:`state_dict` produced (shapes must match)."""
        for name, layer, key in list(self.param_refs()):
            if name not in state:
                raise KeyError(f"state has no {name!r}")
            if state[name].shape != layer.params[key].shape:
                raise ValueError(f"{name}: state shape {state[name].shape} != model {layer.params[key].shape}")
            layer.params[key] = np.array(state[name], dtype=F32)
        for layer in self.layers():
            if isinstance(layer, BatchNorm):
                layer.running_mean = np.array(state[f"{layer.name}.running_mean"], dtype=F32)
                layer.running_var = np.array(state[f"{layer.name}.running_var"], dtype=F32)

    def copy(self) -> "Model":
        """A deep copy (parameters, masks, running statistics)."""
        return copy.deepcopy(self)

    def op_trace(self, x: np.ndarray, quant_bits: int = 0, precision=None):
        """The op trace of one sample, from an instrumented forward pass over ``x``.

        Shapes are per sample; densities are averaged over the samples in ``x``;
        bit widths are ``quant_bits`` or the layer's ``precision``.
        """
        rec = OpRecorder()
        self.forward(x, Runtime(recorder=rec, quant_bits=quant_bits, precision=precision))
        return rec.trace()


class Sequential(Model):
    """A stack of layers (MLPs and CNNs)."""

    def __init__(self, layers: list[Layer], input_shape: tuple[int, ...], num_classes: int):
        names = [l.name for l in layers]
        if len(set(names)) != len(names):
            raise ValueError(f"layer names must be unique, got {names}")
        self.stack = layers
        for layer, after in zip(layers, layers[1:] + [None]):
            if getattr(layer, "producer", False):
                # A ReLU right after the GEMM is its epilogue (a bias add in between is part of the GEMM's output stage).
                layer.epilogue = "relu" if type(after).__name__ == "ReLU" else None
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes

    def top_layers(self):
        return self.stack

    def forward(self, x, rt):
        for layer in self.stack:
            x = layer.forward(x, rt)
        return x

    def backward(self, dy):
        for layer in reversed(self.stack[1:]):
            dy = layer.backward(dy)
        first = self.stack[0]
        if isinstance(first, _WeightLayer):  # its input is the data: no dX GEMM, no col2im
            first.backward(dy, input_grad=False)
        else:
            first.backward(dy)

    def set_channel_mask(self, name: str, mask: np.ndarray | None) -> None:
        """Mask output channels of ``name`` (and the per-channel layers after it)."""
        groups = self.channel_groups()
        if name not in groups:
            raise KeyError(f"{name!r} has no prunable channels; valid are {sorted(groups)}")
        i = next(i for i, l in enumerate(self.stack) if l.name == name)
        if mask is not None:
            mask = np.asarray(mask, dtype=F32).reshape(-1)
            if mask.shape != (groups[name],):
                raise ValueError(f"{name}: channel mask needs {groups[name]} entries, got {mask.shape}")
        self.stack[i].channel_mask = mask
        for layer in self.stack[i + 1 :]:
            if layer.producer:
                break
            if layer.per_channel:
                layer.channel_mask = mask


class _Embed(Layer):
    """CLS token and position embeddings of the ViT (parameters only)."""

    def __init__(self, name, tokens, dim, rng):
        super().__init__(name)
        self.params["cls"] = (rng.normal(0, 0.02, (1, 1, dim))).astype(F32)
        self.params["pos"] = (rng.normal(0, 0.02, (1, tokens, dim))).astype(F32)


class TransformerBlock(Layer):
    """Pre-norm encoder block: ``x + attn(ln1(x))``, then ``x + fc2(gelu(fc1(ln2(x))))``.

    Tokens with ``rt.token_keep == 0`` are frozen: they get no attention, no MLP
    update, and no MLP or projection work is counted for them.
    """

    def __init__(self, name, dim, heads, mlp_dim, rng):
        super().__init__(name)
        self.ln1 = LayerNorm(f"{name}.ln1", dim)
        self.attn = MultiHeadSelfAttention(f"{name}.attn", dim, heads, rng)
        self.ln2 = LayerNorm(f"{name}.ln2", dim)
        self.fc1 = Dense(f"{name}.fc1", dim, mlp_dim, rng, init="xavier")
        self.act = GELU(f"{name}.gelu")
        self.fc2 = Dense(f"{name}.fc2", mlp_dim, dim, rng, init="xavier")

    def sublayers(self):
        return [self.ln1, self.attn, self.ln2, self.fc1, self.act, self.fc2]

    def forward(self, x, rt):
        keep = None if rt.token_keep is None else rt.token_keep.astype(F32)[:, :, None]
        self._keep = keep
        h = self.ln1.forward(x, rt)
        if keep is not None:
            h = h * keep
        a = self.attn.forward(h, rt)
        if keep is not None:
            a = a * keep
        x = x + a
        h = self.ln2.forward(x, rt)
        if keep is not None:
            h = h * keep
        g = self.act.forward(self.fc1.forward(h, rt), rt)
        if keep is not None:
            g = g * keep
        m = self.fc2.forward(g, rt)
        if keep is not None:
            m = m * keep
        return x + m

    def backward(self, dy):
        keep = self._keep
        dm = dy if keep is None else dy * keep
        dg = self.fc2.backward(dm)
        if keep is not None:
            dg = dg * keep
        dh = self.fc1.backward(self.act.backward(dg))
        if keep is not None:
            dh = dh * keep
        dx = dy + self.ln2.backward(dh)
        da = dx if keep is None else dx * keep
        dh = self.attn.backward(da)
        if keep is not None:
            dh = dh * keep
        return dx + self.ln1.backward(dh)


#: ``policy(block_index, attention (B,H,T,T), keep (B,T)) -> keep (B,T)``.
TokenPolicy = Callable[[int, np.ndarray, np.ndarray], np.ndarray]


class VisionTransformer(Model):
    """A tiny ViT: square patches -> linear embedding + CLS + positions -> blocks -> CLS head.

    Pruning hooks:

    * ``set_head_mask(block, mask)``: 0/1 per head of block ``block``.
    * ``token_policy``: called after each block's attention in evaluation as
      ``policy(i, attention_maps, keep)``; it returns the ``(B, T)`` keep mask for
      the following blocks (a dropped token stays dropped; the CLS token, index 0,
      is always kept). ``last_token_keep`` holds the mean kept fraction per block
      of the latest forward pass.
    * ``attention_maps(x)``: per-block ``(B, H, T, T)`` maps of an exact forward.
    """

    def __init__(self, image: int, patch: int, dim: int, depth: int, heads: int, mlp_dim: int,
                 num_classes: int, rng: np.random.Generator, channels: int = 1):
        if image % patch:
            raise ValueError(f"image size {image} is not divisible by patch={patch}")
        self.image, self.patch, self.channels = image, patch, channels
        self.input_shape = (image, image, channels)
        self.num_classes = num_classes
        self.tokens = (image // patch) ** 2 + 1
        self.patch_embed = Dense("patch_embed", patch * patch * channels, dim, rng, init="xavier")
        self.embed = _Embed("embed", self.tokens, dim, rng)
        self.blocks = [TransformerBlock(f"blocks.{i}", dim, heads, mlp_dim, rng) for i in range(depth)]
        self.ln_f = LayerNorm("ln_f", dim)
        self.head = Dense("head", dim, num_classes, rng, init="xavier")
        self.token_policy: TokenPolicy | None = None
        self.last_token_keep: list[float] = []

    def top_layers(self):
        return [self.patch_embed, self.embed, *self.blocks, self.ln_f, self.head]

    def channel_groups(self) -> dict[str, int]:
        """MLP hidden units per block (the ViT's prunable channels)."""
        return {b.fc1.name: b.fc1.out_channels for b in self.blocks}

    def set_channel_mask(self, name, mask):
        groups = self.channel_groups()
        if name not in groups:
            raise KeyError(f"{name!r} has no prunable channels; valid are {sorted(groups)}")
        self.layer(name).channel_mask = None if mask is None else np.asarray(mask, F32).reshape(-1)

    def set_head_mask(self, block: int, mask: np.ndarray | None) -> None:
        if not 0 <= block < len(self.blocks):
            raise IndexError(f"block {block}: the model has blocks 0..{len(self.blocks) - 1}")
        self.blocks[block].attn.set_head_mask(mask)

    @property
    def heads(self) -> int:
        return self.blocks[0].attn.heads

    def patches(self, x: np.ndarray) -> np.ndarray:
        b = x.shape[0]
        p, g, c = self.patch, self.image // self.patch, self.channels
        x = x.reshape(b, g, p, g, p, c).transpose(0, 1, 3, 2, 4, 5)
        return x.reshape(b, g * g, p * p * c)

    def forward(self, x, rt):
        b = x.shape[0]
        tok = self.patch_embed.forward(self.patches(x), rt)
        cls = np.broadcast_to(self.embed.params["cls"], (b, 1, tok.shape[2]))
        h = np.concatenate([cls, tok], axis=1) + self.embed.params["pos"]
        policy = None if rt.training else self.token_policy
        keep = rt.token_keep
        if policy is not None and keep is None:
            keep = np.ones((b, self.tokens), F32)
        self.last_token_keep = []
        saved = (rt.token_keep, rt.keep_attention)
        try:
            for i, block in enumerate(self.blocks):
                rt.token_keep = keep
                if policy is not None:
                    rt.keep_attention = True
                h = block.forward(h, rt)
                self.last_token_keep.append(1.0 if keep is None else float(keep.mean()))
                if policy is not None:
                    new = np.asarray(policy(i, block.attn.last_attention, keep), dtype=F32)
                    if new.shape != keep.shape:
                        raise ValueError(f"token_policy returned shape {new.shape}, expected {keep.shape}")
                    keep = new * keep
                    keep[:, 0] = 1.0
        finally:
            rt.token_keep, rt.keep_attention = saved
        if rt.grad:
            self._b = h.shape
        z = self.ln_f.forward(h[:, :1, :], rt)
        return self.head.forward(z, rt)[:, 0, :]

    def backward(self, dy):
        dz = self.head.backward(dy[:, None, :])
        dcls = self.ln_f.backward(dz)
        dh = np.zeros(self._b, F32)
        dh[:, :1, :] = dcls
        for block in reversed(self.blocks):
            dh = block.backward(dh)
        self.embed.grads["pos"] = dh.sum(axis=0, keepdims=True)
        self.embed.grads["cls"] = dh[:, :1, :].sum(axis=0, keepdims=True)
        self.patch_embed.backward(np.ascontiguousarray(dh[:, 1:, :]), input_grad=False)  # input: the patches

    def attention_maps(self, x: np.ndarray) -> list[np.ndarray]:
        """Per-block attention maps ``(B, H, T, T)`` of an exact float forward of ``x``."""
        rt = Runtime(keep_attention=True)
        self.forward(x, rt)
        return [b.attn.last_attention for b in self.blocks]


# -- architectures -------------------------------------------------------------

def mlp(sizes: list[int], rng: np.random.Generator, batchnorm: bool = False) -> Sequential:
    """``sizes = [in, hidden..., classes]``: Dense(+BN)+ReLU per hidden layer."""
    layers: list[Layer] = []
    for i in range(len(sizes) - 1):
        layers.append(Dense(f"fc{i + 1}", sizes[i], sizes[i + 1], rng))
        if i < len(sizes) - 2:
            if batchnorm:
                layers.append(BatchNorm(f"bn{i + 1}", sizes[i + 1]))
            layers.append(ReLU(f"relu{i + 1}"))
    return Sequential(layers, (sizes[0],), sizes[-1])


def lenet5(rng: np.random.Generator, num_classes: int = 10, batchnorm: bool = False,
           widths: tuple[int, int, int, int] = (6, 16, 120, 84)) -> Sequential:
    """LeNet-5 for 28x28 inputs (conv1 padded by 2, as for the 32x32 original).

    conv1 5x5 -> pool 2 -> conv2 5x5 -> pool 2 -> fc1 -> fc2 -> fc3, ReLU
    activations and max pooling (the common modern variant).
    """
    c1, c2, f1, f2 = widths
    layers: list[Layer] = [Conv2d("conv1", 1, c1, 5, rng, padding=2)]
    if batchnorm:
        layers.append(BatchNorm("bn1", c1))
    layers += [ReLU("relu1"), MaxPool2d("pool1", 2), Conv2d("conv2", c1, c2, 5, rng)]
    if batchnorm:
        layers.append(BatchNorm("bn2", c2))
    layers += [ReLU("relu2"), MaxPool2d("pool2", 2), Flatten("flatten"), Dense("fc1", 5 * 5 * c2, f1, rng)]
    if batchnorm:
        layers.append(BatchNorm("bn3", f1))
    layers += [ReLU("relu3"), Dense("fc2", f1, f2, rng)]
    if batchnorm:
        layers.append(BatchNorm("bn4", f2))
    layers += [ReLU("relu4"), Dense("fc3", f2, num_classes, rng)]
    return Sequential(layers, (28, 28, 1), num_classes)


def tiny_vit(rng: np.random.Generator, patch: int = 7, dim: int = 64, depth: int = 4, heads: int = 4,
             mlp_dim: int = 128, num_classes: int = 10, image: int = 28) -> VisionTransformer:
    return VisionTransformer(image, patch, dim, depth, heads, mlp_dim, num_classes, rng)


# -- model-level tools -----------------------------------------------------------

def recalibrate_batchnorm(model: Model, x: np.ndarray, batch_size: int = 256) -> int:
    """Re-estimate every BatchNorm's running statistics as exact averages over ``x``.

    MetaPruning needs this before scoring a pruned structure: statistics collected
    with all channels alive are wrong once channels are masked. Returns the number
    of BatchNorm layers updated (0 when the model has none).
    """
    bns = [l for l in model.layers() if isinstance(l, BatchNorm)]
    if not bns:
        return 0
    rt = Runtime(training=True, bn_calibrate=True)
    for start in range(0, len(x), batch_size):
        model.forward(x[start : start + batch_size], rt)
    for bn in bns:
        bn.finish_calibration()
    return len(bns)


def compact_channels(model: Sequential) -> Sequential:
    """A physically smaller copy of a channel-masked sequential model.

    Output channels whose ``channel_mask`` is 0 are removed from their producer
    (weights and bias), from the per-channel layers after it (BatchNorm), and from
    the input of the next producer (for a Conv -> Flatten -> Dense boundary, every
    spatial position of the removed channel). Elementwise weight masks are baked
    into the weights. The compact model computes the same function as the masked one.
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"compact_channels works on Sequential models, got {type(model).__name__}")
    new = model.copy()
    shapes = {}
    x = np.zeros((1, *new.input_shape), F32)
    for layer in new.stack:
        shapes[layer.name] = x.shape[1:]
        x = layer.forward(x, Runtime())
    keep_in: np.ndarray | None = None  # channel indices kept at the current tensor
    for layer in new.stack:
        if isinstance(layer, _WeightLayer):
            w = layer.effective("W")
            b = layer.effective("b") if "b" in layer.params else None
            if keep_in is not None:
                w = w[keep_in] if isinstance(layer, Dense) else w[:, :, keep_in, :]
            keep_out = np.arange(w.shape[-1]) if layer.channel_mask is None else np.flatnonzero(layer.channel_mask)
            layer.params["W"] = np.ascontiguousarray(w[..., keep_out])
            if b is not None:
                layer.params["b"] = np.ascontiguousarray(b[keep_out])
            layer.weight_mask = layer.in_mask = layer.channel_mask = None
            keep_in = None if len(keep_out) == w.shape[-1] else keep_out
        elif isinstance(layer, BatchNorm) and keep_in is not None:
            for key in ("gamma", "beta"):
                layer.params[key] = layer.params[key][keep_in].copy()
            layer.running_mean = layer.running_mean[keep_in].copy()
            layer.running_var = layer.running_var[keep_in].copy()
            layer.channel_mask = None
        elif isinstance(layer, BatchNorm):
            layer.channel_mask = None
        elif isinstance(layer, Flatten) and keep_in is not None:
            h, w, c = shapes[layer.name]
            keep_in = (np.arange(h * w)[:, None] * c + keep_in[None, :]).reshape(-1)
    return new
