"""Small working workloads, one per subject family of :mod:`harness.subjects`.

Each is a real :class:`harness.api.Workload` (``build``/``evaluate``/``op_trace``)
that builds in about a second or less (the first photo load imports
scikit-image), deterministic from the run seed, and sends
every GEMM of an evaluation through the given backend with a
:class:`~harness.numerics.GemmCall`. They are what the conformance kit runs the
family checks on (:func:`harness.testing.check_workload_object`), and a starting
point for the full workloads, which come with their plugins:

* :class:`ToySuperResolution` (``pixel``): x2 super-resolution of real photos
  bundled with scikit-image, a three-layer per-pixel conv net over bilinear.
* :class:`ToyInverseK2J` (``kernel``): AxBench's inversek2j (two-joint arm inverse
  kinematics) with a 2-8-2 MLP approximator and a per-sample error bound.
* :class:`ToyDecodeServing` (``serving``): one decode iteration of a tiny GQA
  decoder over a batch with lognormal context lengths.
* :class:`ToyPointCloud` (``points``): patches of scikit-image's stereo motorcycle
  back-projected to 3-D (stereo, not LiDAR), classified flat vs. curved by an
  EdgeConv-style shared MLP with max-pooling.

``quant_bits`` (where present) sends signed integer codes to the backend: one
scale per GEMM call for activations, one per output column for weights.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from harness.numerics.backend import EXACT, BoundBackend, GemmCall, MatmulBackend, bind
from harness.numerics.quant import quantize_symmetric
from harness.optrace import Op, OpTrace, WeightValues
from harness.subjects import (
    DecoderDims,
    KernelSubject,
    PixelSubject,
    PointCloudSubject,
    ServingSubject,
    psnr,
)

__all__ = [
    "TOY_WORKLOADS",
    "MLPApproximator",
    "ToyDecodeServing",
    "ToyInverseK2J",
    "ToyPointCloud",
    "ToySuperResolution",
    "toy_workload",
]


# -- shared pieces ------------------------------------------------------------------

def gemm(backend: MatmulBackend, a: np.ndarray, b: np.ndarray, op: str, bits: int = 0,
         weight_stationary: bool = True, epilogue: Optional[str] = None) -> np.ndarray:
    """``a @ b`` through ``backend`` with its call context; float32 result.

    With ``bits`` both operands become signed codes (``a`` one scale per call,
    ``b`` one per column when it is a weight) and the product is rescaled.
    """
    call = GemmCall(op=op, weight_stationary=weight_stationary, epilogue=epilogue)
    if not bits:
        a32, b32 = np.ascontiguousarray(a, np.float32), np.ascontiguousarray(b, np.float32)
        return np.asarray(backend.matmul(a32, b32, call), dtype=np.float32)
    ac, sa = quantize_symmetric(a, bits, axis=None)
    bc, sb = quantize_symmetric(b, bits, axis=0 if weight_stationary else None)
    call = dataclasses.replace(call, a_bits=bits, b_bits=bits)
    return (np.asarray(backend.matmul(ac, bc, call), dtype=np.float64) * sa * sb).astype(np.float32)


def _bound(backend: MatmulBackend, ctx) -> BoundBackend:
    """The backend as the runner bound it, or bound here to a seed derived from the run's."""
    return backend if isinstance(backend, BoundBackend) else bind(backend, ctx.child_seed("numerics"))


def _density(a: np.ndarray) -> float:
    return float(np.count_nonzero(a)) / a.size if a.size else 1.0


def _blas1():
    from harness.nn.runtime import blas_threads

    return blas_threads(1)


def _incompatible(workload: str, family: str, subject: Any):
    from harness.api import IncompatibleError

    return IncompatibleError(f"{workload} evaluates a subject:{family} subject, got {type(subject).__name__}")


class _Weighted:
    """weights/masks/set_mask/density over ``self.params`` (names ending in ``.W``)."""

    params: dict[str, np.ndarray]
    mask_of: dict[str, Optional[np.ndarray]]

    def weights(self) -> dict[str, np.ndarray]:
        return {n: w for n, w in self.params.items() if n.endswith(".W")}

    def masks(self) -> dict[str, Optional[np.ndarray]]:
        return {n: self.mask_of.get(n) for n in self.weights()}

    def set_mask(self, name: str, mask: Optional[np.ndarray]) -> None:
        if name not in self.weights():
            raise KeyError(f"no weight {name!r}; weights: {', '.join(self.weights())}")
        if mask is not None:
            mask = np.asarray(mask, dtype=np.float32)
            if mask.shape != self.params[name].shape:
                raise ValueError(f"mask for {name} has shape {mask.shape}, the weight has {self.params[name].shape}")
        self.mask_of[name] = mask

    def effective(self, name: str) -> np.ndarray:
        mask = self.mask_of.get(name)
        return self.params[name] if mask is None else self.params[name] * mask

    def density(self) -> dict[str, float]:
        return {n: _density(self.effective(n)) for n in self.weights()}


class _Adam:
    def __init__(self, params: dict[str, np.ndarray], lr: float):
        self.lr, self.t = lr, 0
        self.m = {n: np.zeros_like(p) for n, p in params.items()}
        self.v = {n: np.zeros_like(p) for n, p in params.items()}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        for n, g in grads.items():
            self.m[n] = 0.9 * self.m[n] + 0.1 * g
            self.v[n] = 0.999 * self.v[n] + 0.001 * g * g
            mhat = self.m[n] / (1 - 0.9**self.t)
            vhat = self.v[n] / (1 - 0.999**self.t)
            params[n] -= (self.lr * mhat / (np.sqrt(vhat) + 1e-8)).astype(np.float32)


# -- pixel: x2 super-resolution ----------------------------------------------------------

def _im2col3(x: np.ndarray) -> np.ndarray:
    """(B,H,W,C) -> (B*H*W, 9*C) 3x3 patches, edge-padded, in HWIO weight order."""
    b, h, w, c = x.shape
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    cols = np.stack([p[:, i:i + h, j:j + w, :] for i in range(3) for j in range(3)], axis=3)
    return cols.reshape(b * h * w, 9 * c)


def upsample2(x: np.ndarray) -> np.ndarray:
    """Bilinear x2 of (B,H,W,C) with half-pixel centres and clamped edges."""
    for ax in (1, 2):
        n = x.shape[ax]
        prev = np.take(x, np.clip(np.arange(n) - 1, 0, n - 1), axis=ax)
        nxt = np.take(x, np.clip(np.arange(n) + 1, 0, n - 1), axis=ax)
        shape = list(x.shape)
        shape[ax] *= 2
        x = np.stack([0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt], axis=ax + 1).reshape(shape)
    return x


def _shuffle(y: np.ndarray, b: int, h: int, w: int, s: int) -> np.ndarray:
    c = y.shape[-1] // (s * s)
    return y.reshape(b, h, w, s, s, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h * s, w * s, c)


def _unshuffle(z: np.ndarray, s: int) -> np.ndarray:
    b, hs, ws, c = z.shape
    return z.reshape(b, hs // s, s, ws // s, s, c).transpose(0, 1, 3, 2, 4, 5).reshape(-1, s * s * c)


@dataclass
class ToyPixelConfig:
    """Crops of real photos, box-downsampled x2; a 3x3 conv and two 1x1 convs."""

    train_images: tuple[str, ...] = ("astronaut", "coffee", "rocket")
    test_images: tuple[str, ...] = ("chelsea",)
    crop: int = 48
    crops_per_image: int = 8
    features: int = 16
    epochs: int = 60
    lr: float = 3e-3
    batch_images: int = 2
    quant_bits: int = 0


@dataclass
class SRSubject(_Weighted):
    """A x2 super-resolution net and its image pairs (a :class:`~harness.subjects.PixelSubject`)."""

    params: dict[str, np.ndarray]
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    config: ToyPixelConfig
    seed: int = 0
    scale: int = 2
    feature_policy: Optional[Callable[[str, np.ndarray], np.ndarray]] = None
    mask_of: dict[str, Optional[np.ndarray]] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)

    LAYERS = ("conv1", "conv2", "conv3")

    def data(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split not in self.splits:
            raise ValueError(f"split {split!r}: valid are {', '.join(self.splits)}")
        return self.splits[split]

    def _run(self, x: np.ndarray, backend: MatmulBackend, feats: Optional[dict] = None,
             trace: Optional[list] = None) -> np.ndarray:
        b, h, w, _ = x.shape
        s, bits = self.scale, self.config.quant_bits
        a = _im2col3(x)
        for name in self.LAYERS:
            wm = self.effective(f"{name}.W")
            wm = wm.reshape(-1, wm.shape[-1])
            last = name == self.LAYERS[-1]
            if trace is not None:
                trace.append((name, a, wm))
            a = gemm(backend, a, wm, name, bits, epilogue=None if last else "relu")
            if not last:
                fmap = np.maximum(a, 0).reshape(b, h, w, -1)
                if self.feature_policy is not None:
                    fmap = np.asarray(self.feature_policy(name, fmap), dtype=np.float32)
                if feats is not None:
                    feats[name] = fmap
                a = fmap.reshape(b * h * w, -1)
        return _shuffle(a, b, h, w, s) + upsample2(x)

    def forward(self, x: np.ndarray, backend: MatmulBackend = EXACT) -> np.ndarray:
        """(B,H,W,C) -> (B,2H,2W,C), unclipped."""
        with _blas1():
            return self._run(np.asarray(x, np.float32), bind(backend))

    def feature_maps(self, x: np.ndarray, backend: MatmulBackend = EXACT) -> dict[str, np.ndarray]:
        feats: dict[str, np.ndarray] = {}
        with _blas1():
            self._run(np.asarray(x, np.float32), bind(backend), feats=feats)
        return feats

    def evaluate(self, backend: MatmulBackend = EXACT, split: str = "test") -> dict[str, float]:
        lr, hr = self.data(split)
        feats: dict[str, np.ndarray] = {}
        with _blas1():
            out = np.clip(self._run(lr, bind(backend), feats=feats), 0.0, 1.0)
        return {
            "psnr": float(np.mean([psnr(o, t) for o, t in zip(out, hr)])),
            "psnr_bilinear": float(np.mean([psnr(np.clip(o, 0, 1), t) for o, t in zip(upsample2(lr), hr)])),
            "feature_density": float(np.mean([_density(f) for f in feats.values()])),
        }

    def train(self, epochs: int, ctx: Any = None, grad_hook: Any = None, feature_hook: Any = None,
              prefix: str = "train/", **overrides: Any) -> list[dict]:
        """Adam on the MSE over the train crops, in exact float32 (see PixelSubject)."""
        cfg = dataclasses.replace(self.config, **overrides)
        lr_img, hr_img = self.data("train")
        opt = _Adam(self.weights(), cfg.lr)
        rows = []
        with _blas1():
            for epoch in range(len(self.history), len(self.history) + int(epochs)):
                order = np.random.default_rng([self.seed, epoch]).permutation(len(lr_img))
                losses = []
                for start in range(0, len(order), cfg.batch_images):
                    idx = order[start:start + cfg.batch_images]
                    losses.append(self._step(lr_img[idx], hr_img[idx], opt, grad_hook, feature_hook))
                row = {"epoch": epoch, "loss": float(np.mean(losses))}
                rows.append(row)
                if ctx is not None:
                    ctx.append_series(f"{prefix}loss", row["loss"], epoch)
        self.history.extend(rows)
        return rows

    def _step(self, x, hr, opt, grad_hook, feature_hook) -> float:
        b, h, w, _ = x.shape
        s = self.scale
        w1, w2, w3 = (self.effective(f"{n}.W") for n in self.LAYERS)
        cols = _im2col3(x)
        p1 = cols @ w1.reshape(-1, w1.shape[-1])
        f1 = np.maximum(p1, 0)
        p2 = f1 @ w2.reshape(w2.shape[-2], -1)
        f2 = np.maximum(p2, 0)
        y = f2 @ w3.reshape(w3.shape[-2], -1)
        diff = y - _unshuffle(hr - upsample2(x), s)
        loss = float(np.mean(diff**2))
        dy = (2.0 / diff.size) * diff
        grads = {"conv3.W": (f2.T @ dy).reshape(w3.shape)}
        df2 = dy @ w3.reshape(w3.shape[-2], -1).T
        if feature_hook is not None:
            extra = feature_hook("conv2", f2.reshape(b, h, w, -1))
            if extra is not None:
                df2 = df2 + np.asarray(extra, np.float32).reshape(df2.shape)
        dp2 = df2 * (p2 > 0)
        grads["conv2.W"] = (f1.T @ dp2).reshape(w2.shape)
        df1 = dp2 @ w2.reshape(w2.shape[-2], -1).T
        if feature_hook is not None:
            extra = feature_hook("conv1", f1.reshape(b, h, w, -1))
            if extra is not None:
                df1 = df1 + np.asarray(extra, np.float32).reshape(df1.shape)
        dp1 = df1 * (p1 > 0)
        grads["conv1.W"] = (cols.T @ dp1).reshape(w1.shape)
        for name, g in grads.items():
            if grad_hook is not None:
                extra = grad_hook(name, self.params[name])
                if extra is not None:
                    g = g + extra
            mask = self.mask_of.get(name)
            grads[name] = (g if mask is None else g * mask).astype(np.float32)
        opt.step(self.params, grads)
        return loss

    def op_trace(self) -> OpTrace:
        """One test image: the three convs as im2col GEMMs, and the bilinear residual."""
        lr, _ = self.data("test")
        sites: list = []
        with _blas1():
            self._run(lr[:1], EXACT, trace=sites)
        bits = self.config.quant_bits or 32
        ops = [Op(name, m=a.shape[0], k=a.shape[1], n=wm.shape[1], weight_density=_density(wm),
                  input_density=_density(a), weight_bits=bits, input_bits=bits) for name, a, wm in sites]
        h, w, c = lr.shape[1:]
        ops.append(Op("upsample_residual", kind="elementwise", elements=2 * h * w * c * self.scale**2))
        values = {name: WeightValues(wm, bits=self.config.quant_bits) for name, _, wm in sites}
        return OpTrace(tuple(ops), values)

    def copy(self) -> "SRSubject":
        return dataclasses.replace(
            self, params={n: p.copy() for n, p in self.params.items()},
            mask_of={n: None if m is None else m.copy() for n, m in self.mask_of.items()},
            history=list(self.history),
        )


def _crops(names: tuple[str, ...], per_image: int, size: int, rng: np.random.Generator) -> np.ndarray:
    from harness.data import load_image

    out = []
    for name in names:
        img = load_image(name)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        for _ in range(per_image):
            top = int(rng.integers(0, img.shape[0] - size + 1))
            left = int(rng.integers(0, img.shape[1] - size + 1))
            out.append(img[top:top + size, left:left + size, :3])
    return np.stack(out).astype(np.float32)


class ToySuperResolution:
    """``subject:pixel``: x2 super-resolution on crops of bundled photos."""

    name = "toy_super_resolution"
    family = "pixel"

    def __init__(self, config: ToyPixelConfig | None = None):
        self.config = config or ToyPixelConfig()
        if self.config.crop % 2 or self.config.crop < 8:
            raise ValueError(f"{self.name}: crop={self.config.crop} must be even and >= 8")

    def build(self, ctx) -> SRSubject:
        c = self.config
        rng = np.random.default_rng(ctx.child_seed(self.name, "crops"))
        splits = {}
        for split, names in (("train", c.train_images), ("test", c.test_images)):
            hr = _crops(names, c.crops_per_image, c.crop, rng)
            lr = hr.reshape(len(hr), c.crop // 2, 2, c.crop // 2, 2, 3).mean(axis=(2, 4))
            splits[split] = (lr.astype(np.float32), hr)
        init = np.random.default_rng(ctx.child_seed(self.name, "init"))
        f = c.features
        shapes = {"conv1.W": (3, 3, 3, f), "conv2.W": (1, 1, f, f), "conv3.W": (1, 1, f, 12)}
        params = {}
        for name, shape in shapes.items():
            fan_in = int(np.prod(shape[:-1]))
            # conv3 starts at zero: the untrained net is exactly bilinear upsampling.
            scale = 0.0 if name == "conv3.W" else math.sqrt(2.0 / fan_in)
            params[name] = (init.standard_normal(shape) * scale).astype(np.float32)
        subject = SRSubject(params, splits, c, seed=ctx.child_seed(self.name, "train"))
        subject.train(c.epochs, ctx)
        return subject

    def evaluate(self, subject: Any, backend: MatmulBackend, ctx) -> dict[str, float]:
        if not isinstance(subject, PixelSubject):
            raise _incompatible(self.name, self.family, subject)
        return subject.evaluate(_bound(backend, ctx), "test")

    def op_trace(self, subject: SRSubject) -> OpTrace:
        return subject.op_trace()


# -- kernel: AxBench inversek2j -------------------------------------------------------------

ARM = (0.5, 0.5)


def forward_kinematics(theta: np.ndarray) -> np.ndarray:
    """Joint angles (N, 2) -> end-effector position (N, 2) of the two-link arm."""
    t1, t2 = theta[:, 0], theta[:, 1]
    l1, l2 = ARM
    return np.stack([l1 * np.cos(t1) + l2 * np.cos(t1 + t2), l1 * np.sin(t1) + l2 * np.sin(t1 + t2)], axis=1)


def inversek2j(xy: np.ndarray) -> np.ndarray:
    """AxBench's exact kernel: end-effector position (N, 2) -> joint angles (N, 2)."""
    x, y = xy[:, 0].astype(np.float64), xy[:, 1].astype(np.float64)
    l1, l2 = ARM
    t2 = np.arccos(np.clip((x * x + y * y - l1 * l1 - l2 * l2) / (2 * l1 * l2), -1.0, 1.0))
    t1 = np.arctan2(y, x) - np.arctan2(l2 * np.sin(t2), l1 + l2 * np.cos(t2))
    return np.stack([t1, t2], axis=1)


@dataclass
class MLPApproximator:
    """A sigmoid MLP (AxBench topology) that runs on an NPU: every layer a GEMM
    through the backend, biases and activations elementwise; invoked on every sample."""

    layers: list[tuple[np.ndarray, np.ndarray]]
    x_scale: float = 1.0
    y_scale: float = 1.0
    quant_bits: int = 0

    def __call__(self, x: np.ndarray, backend: MatmulBackend) -> np.ndarray:
        backend = bind(backend)
        a = np.asarray(x, np.float32) / self.x_scale
        for i, (w, b) in enumerate(self.layers):
            a = gemm(backend, a, w, f"fc{i + 1}", self.quant_bits) + b
            if i < len(self.layers) - 1:
                a = 1.0 / (1.0 + np.exp(-a))
        return a.astype(np.float64) * self.y_scale

    def fit(self, x: np.ndarray, y: np.ndarray, steps: int, lr: float) -> None:
        """Full-batch Adam on the MSE in exact float32."""
        xs = (x / self.x_scale).astype(np.float32)
        ys = (y / self.y_scale).astype(np.float32)
        params = {f"{k}{i}": p for i, (w, b) in enumerate(self.layers) for k, p in (("W", w), ("b", b))}
        opt = _Adam(params, lr)
        for _ in range(steps):
            acts = [xs]
            for i, (w, b) in enumerate(self.layers):
                z = acts[-1] @ w + b
                acts.append(1.0 / (1.0 + np.exp(-z)) if i < len(self.layers) - 1 else z)
            d = (2.0 / ys.size) * (acts[-1] - ys)
            grads = {}
            for i in reversed(range(len(self.layers))):
                w, _ = self.layers[i]
                grads[f"W{i}"], grads[f"b{i}"] = acts[i].T @ d, d.sum(axis=0)
                if i:
                    d = (d @ w.T) * acts[i] * (1 - acts[i])
            opt.step(params, grads)

    def op_trace(self) -> OpTrace:
        bits = self.quant_bits or 32
        ops = []
        for i, (w, _) in enumerate(self.layers):
            ops.append(Op(f"fc{i + 1}", m=1, k=w.shape[0], n=w.shape[1], weight_density=_density(w),
                          weight_bits=bits, input_bits=bits))
            if i < len(self.layers) - 1:
                ops.append(Op(f"sigmoid{i + 1}", kind="elementwise", elements=w.shape[1]))
        values = {f"fc{i + 1}": WeightValues(w, bits=self.quant_bits) for i, (w, _) in enumerate(self.layers)}
        return OpTrace(tuple(ops), values)


@dataclass
class InverseK2JSubject:
    """inversek2j with its approximator (a :class:`~harness.subjects.KernelSubject`).

    Error: mean absolute angle error over both joints, in units of the joint
    range (pi/2), per sample.
    """

    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    approximator: Any
    bound: float = 0.05
    name: str = "inversek2j"
    topology: tuple[int, ...] = (2, 8, 2)

    def exact(self, x: np.ndarray) -> np.ndarray:
        return inversek2j(x)

    def data(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split not in self.splits:
            raise ValueError(f"split {split!r}: valid are {', '.join(self.splits)}")
        return self.splits[split]

    def error(self, y: np.ndarray, y_ref: np.ndarray) -> np.ndarray:
        return np.mean(np.abs(np.asarray(y, np.float64) - y_ref), axis=1) / (math.pi / 2)

    def evaluate(self, approx: Any = None, split: str = "test", backend: MatmulBackend = EXACT) -> dict[str, float]:
        x, y_ref = self.data(split)
        if approx is None:
            bound_backend = bind(backend)
            with _blas1():
                out = self.approximator(x, bound_backend)
        else:
            out = approx(x)
        y, invoke = out if isinstance(out, tuple) else (out, np.ones(len(x), dtype=bool))
        invoke = np.asarray(invoke, dtype=bool)
        err = np.where(invoke, self.error(y, y_ref), 0.0)
        return {
            "error": float(err.mean()),
            "within_bound": float(np.mean(err <= self.bound)),
            "invocation": float(invoke.mean()),
            "out_of_bound": float(np.mean(invoke & (err > self.bound))),
        }

    def op_trace(self) -> OpTrace:
        return self.approximator.op_trace()


@dataclass
class ToyKernelConfig:
    """Joint angles uniform in [0, pi/2]^2; AxBench's 2-8-2 topology."""

    train_samples: int = 2000
    test_samples: int = 1000
    hidden: int = 8
    steps: int = 1500
    lr: float = 0.05
    bound: float = 0.05
    quant_bits: int = 0


class ToyInverseK2J:
    """``subject:kernel``: inversek2j and a plain MLP approximator."""

    name = "toy_inversek2j"
    family = "kernel"

    def __init__(self, config: ToyKernelConfig | None = None):
        self.config = config or ToyKernelConfig()
        if not self.config.bound > 0:
            raise ValueError(f"{self.name}: bound={self.config.bound} must be > 0")

    def build(self, ctx) -> InverseK2JSubject:
        c = self.config
        rng = np.random.default_rng(ctx.child_seed(self.name, "data"))
        splits = {}
        for split, n in (("train", c.train_samples), ("test", c.test_samples)):
            x = forward_kinematics(rng.uniform(0.0, math.pi / 2, (n, 2))).astype(np.float32)
            splits[split] = (x, inversek2j(x))
        init = np.random.default_rng(ctx.child_seed(self.name, "init"))
        sizes = (2, c.hidden, 2)
        layers = [((init.standard_normal((i, o)) / math.sqrt(i)).astype(np.float32), np.zeros(o, np.float32))
                  for i, o in zip(sizes[:-1], sizes[1:])]
        approx = MLPApproximator(layers, x_scale=1.0, y_scale=math.pi / 2, quant_bits=c.quant_bits)
        with _blas1():
            approx.fit(*splits["train"], steps=c.steps, lr=c.lr)
        return InverseK2JSubject(splits, approx, bound=c.bound, topology=sizes)

    def evaluate(self, subject: Any, backend: MatmulBackend, ctx) -> dict[str, float]:
        if not isinstance(subject, KernelSubject):
            raise _incompatible(self.name, self.family, subject)
        return subject.evaluate(split="test", backend=_bound(backend, ctx))

    def op_trace(self, subject: InverseK2JSubject) -> OpTrace:
        return subject.op_trace()


# -- serving: one LLM decode iteration ----------------------------------------------------------

@dataclass
class DecodeBatch:
    """One decode iteration of a tiny decoder (a :class:`~harness.subjects.ServingSubject`).

    Besides the protocol, it carries seeded random weights, KV caches and the new
    tokens' embeddings, so the toy can run the iteration numerically.
    """

    model: DecoderDims
    context_lengths: np.ndarray
    weights: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    caches: list = field(default_factory=list, repr=False)
    tokens: Optional[np.ndarray] = field(default=None, repr=False)

    def weight_bytes(self) -> float:
        return self.model.weight_bytes

    def kv_bytes_per_token(self) -> float:
        return self.model.kv_bytes_per_token

    def kv_cache_bytes(self) -> float:
        return self.model.kv_bytes_per_token * float(np.sum(self.context_lengths))

    def op_trace(self) -> OpTrace:
        d = self.model
        batch = len(self.context_lengths)
        ab, wb = d.act_bits, d.weight_bits
        q_bytes = d.heads * d.head_dim * ab / 8
        ops = []

        def weighted(name, k, n):
            ops.append(Op(name, m=batch, k=k, n=n, weight_bits=wb, input_bits=ab, output_bits=ab))

        for i in range(d.layers):
            weighted(f"layer{i}.qkv", d.d_model, (d.heads + 2 * d.kv_heads) * d.head_dim)
            for r, length in enumerate(self.context_lengths):
                length = int(length)
                ops.append(Op(
                    f"layer{i}.attn.r{r}", kind="decode_attention", m=1, k=d.head_dim, n=length,
                    count=2 * d.heads, weight_bits=d.kv_bits, input_bits=ab, output_bits=ab,
                    kv_cache_bytes=(2 * d.kv_heads * d.head_dim * length * d.kv_bits + 7) // 8,
                    input_bytes=q_bytes, output_bytes=q_bytes,
                ))
            weighted(f"layer{i}.proj", d.heads * d.head_dim, d.d_model)
            weighted(f"layer{i}.ffn_up", d.d_model, d.ffn)
            if d.gated_ffn:
                weighted(f"layer{i}.ffn_gate", d.d_model, d.ffn)
            ops.append(Op(f"layer{i}.ffn_act", kind="elementwise", elements=batch * d.ffn,
                          input_bits=ab, output_bits=ab))
            weighted(f"layer{i}.ffn_down", d.ffn, d.d_model)
        if d.vocab:
            weighted("lm_head", d.d_model, d.vocab)
        return OpTrace(tuple(ops))

    def decode(self, backend: MatmulBackend = EXACT, reference: bool = False) -> np.ndarray:
        """Logits (B, vocab) of the iteration; GEMMs through ``backend``, or all in
        float64 numpy with ``reference``."""
        d = self.model
        backend = bind(backend)

        def mm(a, b, op, stationary=True):
            if reference:
                return a.astype(np.float64) @ b.astype(np.float64)
            return gemm(backend, a, b, op, weight_stationary=stationary).astype(np.float64)

        dt = np.float64 if reference else np.float32
        x = self.tokens.astype(dt)
        hd, group = d.head_dim, d.heads // d.kv_heads
        for i in range(d.layers):
            w = {k.split(".", 1)[1]: v for k, v in self.weights.items() if k.startswith(f"layer{i}.")}
            qkv = mm(_rms(x), w["qkv"], f"layer{i}.qkv").astype(dt)
            q = qkv[:, : d.heads * hd]
            attn = np.zeros((len(x), d.heads * hd), dt)
            for r in range(len(x)):
                k_cache, v_cache = self.caches[i][r]
                k_new = qkv[r, d.heads * hd: (d.heads + d.kv_heads) * hd].reshape(d.kv_heads, hd)
                v_new = qkv[r, (d.heads + d.kv_heads) * hd:].reshape(d.kv_heads, hd)
                for g in range(d.kv_heads):
                    keys = np.concatenate([k_cache[g], k_new[g:g + 1]]).astype(dt)
                    vals = np.concatenate([v_cache[g], v_new[g:g + 1]]).astype(dt)
                    qg = q[r].reshape(d.heads, hd)[g * group:(g + 1) * group]
                    s = mm(qg, keys.T, f"layer{i}.attn.r{r}", stationary=False) / math.sqrt(hd)
                    p = np.exp(s - s.max(axis=1, keepdims=True))
                    p /= p.sum(axis=1, keepdims=True)
                    o = mm(p.astype(dt), vals, f"layer{i}.attn.r{r}", stationary=False)
                    attn[r, g * group * hd:(g + 1) * group * hd] = o.reshape(-1)
            x = x + mm(attn, w["proj"], f"layer{i}.proj").astype(dt)
            hmid = np.maximum(mm(_rms(x), w["ffn_up"], f"layer{i}.ffn_up"), 0).astype(dt)
            x = x + mm(hmid, w["ffn_down"], f"layer{i}.ffn_down").astype(dt)
        return mm(_rms(x), self.weights["lm_head"], "lm_head")


def _rms(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-6)


@dataclass
class ToyServingConfig:
    """A 2-layer GQA decoder; lognormal context lengths (median ``context_median``)."""

    layers: int = 2
    d_model: int = 64
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 128
    vocab: int = 96
    batch: int = 4
    context_median: int = 48
    context_sigma: float = 0.5
    max_context: int = 256


class ToyDecodeServing:
    """``subject:serving``: one decode iteration, with numerics on seeded weights."""

    name = "toy_decode_serving"
    family = "serving"

    def __init__(self, config: ToyServingConfig | None = None):
        self.config = config or ToyServingConfig()
        c = self.config
        self.dims = DecoderDims(layers=c.layers, d_model=c.d_model, heads=c.heads, kv_heads=c.kv_heads,
                                ffn=c.ffn, vocab=c.vocab)

    def build(self, ctx) -> DecodeBatch:
        c, d = self.config, self.dims
        rng = np.random.default_rng(ctx.child_seed(self.name, "requests"))
        lengths = np.clip(np.rint(rng.lognormal(math.log(c.context_median), c.context_sigma, c.batch)),
                          1, c.max_context).astype(np.int64)
        wrng = np.random.default_rng(ctx.child_seed(self.name, "weights"))
        shapes = {"qkv": (d.d_model, (d.heads + 2 * d.kv_heads) * d.head_dim), "proj": (d.heads * d.head_dim, d.d_model),
                  "ffn_up": (d.d_model, d.ffn), "ffn_down": (d.ffn, d.d_model)}
        weights = {f"layer{i}.{n}": (wrng.standard_normal(s) / math.sqrt(s[0])).astype(np.float32)
                   for i in range(d.layers) for n, s in shapes.items()}
        weights["lm_head"] = (wrng.standard_normal((d.d_model, d.vocab)) / math.sqrt(d.d_model)).astype(np.float32)
        caches = [[tuple(wrng.standard_normal((d.kv_heads, int(n), d.head_dim)).astype(np.float32) for _ in "kv")
                   for n in lengths] for _ in range(d.layers)]
        tokens = wrng.standard_normal((c.batch, d.d_model)).astype(np.float32)
        return DecodeBatch(d, lengths, weights, caches, tokens)

    def evaluate(self, subject: Any, backend: MatmulBackend, ctx) -> dict[str, float]:
        """Error of the iteration's logits against float64, as ``numerics/``; no accuracy."""
        if not isinstance(subject, ServingSubject):
            raise _incompatible(self.name, self.family, subject)
        with _blas1():
            got = subject.decode(_bound(backend, ctx))
        ref = subject.decode(reference=True)
        nmse = float(np.sum((got - ref) ** 2) / np.sum(ref**2))
        return {"numerics/nmse": nmse, "numerics/sqnr_db": float(10 * np.log10(1 / nmse)) if nmse > 0 else 300.0}

    def op_trace(self, subject: DecodeBatch) -> OpTrace:
        return subject.op_trace()


# -- points: flat vs. curved stereo patches ------------------------------------------------------

def knn(points: np.ndarray, k: int) -> np.ndarray:
    """(B,N,3) -> (B,N,k) indices of each point's k nearest points in its cloud."""
    from scipy.spatial import cKDTree

    if not 1 <= k <= points.shape[1]:
        raise ValueError(f"k={k}: must be in 1..{points.shape[1]} (points per cloud)")
    out = np.empty(points.shape[:2] + (k,), dtype=np.int64)
    for b, cloud in enumerate(np.asarray(points, np.float64)):
        _, idx = cKDTree(cloud).query(cloud, k=k)
        out[b] = np.asarray(idx).reshape(len(cloud), k)
    return out


@dataclass
class ToyPointConfig:
    """Patches of ``points`` nearest neighbours around random centres of the stereo cloud."""

    train_patches: int = 96
    test_patches: int = 64
    points: int = 64
    k: int = 8
    stride: int = 4
    edge_features: int = 16
    point_features: int = 32
    ridge: float = 1e-2
    quant_bits: int = 0


@dataclass
class PointSubject(_Weighted):
    """EdgeConv-style shared MLP + max-pool over real stereo patches (a
    :class:`~harness.subjects.PointCloudSubject`); labels: flat (1) or not (0).

    The model reads coordinates only; the colours in ``features`` ride along for
    techniques and models that want them.
    """

    params: dict[str, np.ndarray]
    splits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    config: ToyPointConfig
    num_classes: int = 2
    mask_of: dict[str, Optional[np.ndarray]] = field(default_factory=dict)

    def data(self, split: str) -> tuple[np.ndarray, Optional[np.ndarray], np.ndarray]:
        if split not in self.splits:
            raise ValueError(f"split {split!r}: valid are {', '.join(self.splits)}")
        return self.splits[split]

    def neighbors(self, points: np.ndarray, k: int) -> np.ndarray:
        return knn(points, k)

    def pooled(self, points: np.ndarray, backend: MatmulBackend = EXACT, trace: Optional[list] = None) -> np.ndarray:
        """The (B, point_features) max-pooled cloud features the head reads."""
        b, n, _ = points.shape
        k, bits = self.config.k, self.config.quant_bits
        idx = self.neighbors(points, k)
        centre = np.broadcast_to(points[:, :, None, :], (b, n, k, 3))
        offsets = np.take_along_axis(points[:, None, :, :], idx[..., None], axis=2) - centre
        a = np.concatenate([centre, offsets], axis=-1).reshape(b * n * k, 6)
        for name, pool in (("edge", k), ("point", n)):
            w = self.effective(f"{name}.W")
            if trace is not None:
                trace.append((name, a, w, b))
            a = np.maximum(gemm(backend, a, w, name, bits, epilogue="relu"), 0)
            a = a.reshape(-1, pool, w.shape[1]).max(axis=1)
        return a

    def logits(self, points: np.ndarray, features: Optional[np.ndarray] = None,
               backend: MatmulBackend = EXACT) -> np.ndarray:
        backend = bind(backend)
        with _blas1():
            f = self.pooled(np.asarray(points, np.float32), backend)
            return gemm(backend, f, self.effective("head.W"), "head", self.config.quant_bits) + self.params["head.b"]

    def evaluate(self, backend: MatmulBackend = EXACT, split: str = "test") -> dict[str, float]:
        points, features, labels = self.data(split)
        return {"accuracy": float(np.mean(np.argmax(self.logits(points, features, backend), axis=1) == labels))}

    def fit_head(self) -> None:
        """Ridge regression of one-hot labels on the train split's pooled features."""
        points, _, labels = self.data("train")
        with _blas1():
            f = self.pooled(points).astype(np.float64)
        mean = f.mean(axis=0)
        fc = f - mean
        target = np.eye(self.num_classes)[labels] - 1.0 / self.num_classes
        w = np.linalg.solve(fc.T @ fc + self.config.ridge * len(f) * np.eye(f.shape[1]), fc.T @ target)
        self.params["head.W"] = w.astype(np.float32)
        self.params["head.b"] = (-mean @ w).astype(np.float32)

    def op_trace(self) -> OpTrace:
        """One test cloud: the edge MLP over N*k edges, the point MLP, the head."""
        points = self.data("test")[0][:1]
        sites: list = []
        with _blas1():
            f = self.pooled(points, EXACT, trace=sites)
        sites.append(("head", f, self.effective("head.W"), 1))
        bits = self.config.quant_bits or 32
        ops = [Op(name, m=a.shape[0], k=a.shape[1], n=w.shape[1], weight_density=_density(w),
                  input_density=_density(a), weight_bits=bits, input_bits=bits) for name, a, w, _ in sites]
        values = {name: WeightValues(w, bits=self.config.quant_bits) for name, _, w, _ in sites}
        return OpTrace(tuple(ops), values)

    def copy(self) -> "PointSubject":
        return dataclasses.replace(
            self, params={n: p.copy() for n, p in self.params.items()},
            mask_of={n: None if m is None else m.copy() for n, m in self.mask_of.items()},
        )


def surface_variation(patch: np.ndarray) -> float:
    """Smallest covariance eigenvalue over their sum: 0 for a plane, 1/3 for isotropic."""
    ev = np.linalg.eigvalsh(np.cov(np.asarray(patch, np.float64).T))
    return float(ev[0] / max(ev.sum(), 1e-300))


class ToyPointCloud:
    """``subject:points``: flat-vs-curved classification of real stereo patches."""

    name = "toy_point_cloud"
    family = "points"

    def __init__(self, config: ToyPointConfig | None = None):
        self.config = config or ToyPointConfig()
        if not 1 <= self.config.k <= self.config.points:
            raise ValueError(f"{self.name}: k={self.config.k} must be in 1..points={self.config.points}")

    def build(self, ctx) -> PointSubject:
        from scipy.spatial import cKDTree

        from harness.data import motorcycle_point_cloud

        c = self.config
        cloud, colours = motorcycle_point_cloud(stride=c.stride)
        rng = np.random.default_rng(ctx.child_seed(self.name, "patches"))
        total = c.train_patches + c.test_patches
        centres = rng.choice(len(cloud), size=total, replace=False)
        _, idx = cKDTree(cloud).query(cloud[centres], k=c.points)
        pts = cloud[idx].astype(np.float64)
        pts -= pts.mean(axis=1, keepdims=True)
        pts /= np.linalg.norm(pts, axis=2).max(axis=1)[:, None, None]
        variation = np.array([surface_variation(p) for p in pts])
        threshold = np.median(variation[: c.train_patches])
        labels = (variation < threshold).astype(np.int64)
        pts, feats = pts.astype(np.float32), colours[idx].astype(np.float32)
        cut = c.train_patches
        splits = {"train": (pts[:cut], feats[:cut], labels[:cut]), "test": (pts[cut:], feats[cut:], labels[cut:])}
        init = np.random.default_rng(ctx.child_seed(self.name, "init"))
        params = {
            "edge.W": (init.standard_normal((6, c.edge_features)) * math.sqrt(2 / 6)).astype(np.float32),
            "point.W": (init.standard_normal((c.edge_features, c.point_features))
                        * math.sqrt(2 / c.edge_features)).astype(np.float32),
        }
        subject = PointSubject(params, splits, c)
        subject.fit_head()
        return subject

    def evaluate(self, subject: Any, backend: MatmulBackend, ctx) -> dict[str, float]:
        if not isinstance(subject, PointCloudSubject):
            raise _incompatible(self.name, self.family, subject)
        return subject.evaluate(_bound(backend, ctx), "test")

    def op_trace(self, subject: PointSubject) -> OpTrace:
        return subject.op_trace()


#: The toy workload class of each family.
TOY_WORKLOADS = {
    "pixel": ToySuperResolution,
    "kernel": ToyInverseK2J,
    "serving": ToyDecodeServing,
    "points": ToyPointCloud,
}


def toy_workload(family: str):
    """A toy workload of ``family`` with its default config."""
    try:
        return TOY_WORKLOADS[family]()
    except KeyError:
        raise ValueError(f"no toy workload for family {family!r}; valid: {', '.join(TOY_WORKLOADS)}") from None
