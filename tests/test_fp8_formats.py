"""FP8 formats (harness/numerics/fp8.py) against ml-dtypes, bit for bit where it has them."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from harness.numerics.fp8 import E5M7, FORMATS, decode, encode, encode_generic, get_format, quantize

IN_ML_DTYPES = [name for name, f in FORMATS.items() if f.ml_dtype]


def _ml(fmt):
    return getattr(ml_dtypes, fmt.ml_dtype)


def _finite_codes(fmt):
    codes = np.arange(256, dtype=np.uint8)
    return codes[fmt.is_finite_code(codes)]


def _sample(n=400_000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * np.exp2(rng.uniform(-28, 20, n))
    return np.concatenate([x, [0.0, -0.0, 1e30, -1e30, 5e-40]]).astype(np.float32)


def _midpoints(fmt):
    """Every tie between two adjacent finite values (rounds to the even code)."""
    v = np.unique(fmt.values[np.isfinite(fmt.values)])
    return ((v[1:] + v[:-1]) / 2).astype(np.float32)


def test_ml_dtypes_has_what_we_say():
    assert IN_ML_DTYPES == ["e3m4", "e4m3", "e5m2"]
    assert FORMATS["e2m5"].ml_dtype is None  # written by hand


@pytest.mark.parametrize("name", IN_ML_DTYPES)
def test_every_code_decodes_as_in_ml_dtypes(name):
    fmt = FORMATS[name]
    codes = np.arange(256, dtype=np.uint8)
    ref = codes.view(_ml(fmt)).astype(np.float64)
    ours = fmt.values
    assert np.array_equal(np.isnan(ref), np.isnan(ours))
    assert np.array_equal(ref[~np.isnan(ref)], ours[~np.isnan(ours)])
    info = ml_dtypes.finfo(_ml(fmt))
    assert fmt.max_finite == float(info.max)
    assert fmt.smallest_subnormal == float(info.smallest_subnormal)


@pytest.mark.parametrize("name", IN_ML_DTYPES)
def test_hand_written_encoder_matches_ml_dtypes_bit_for_bit(name):
    fmt = FORMATS[name]
    values = _finite_codes(fmt).view(_ml(fmt)).astype(np.float32)  # every representable value, -0 included
    assert np.array_equal(encode_generic(values, fmt), _finite_codes(fmt))
    for x in (_sample(), _midpoints(fmt), -_midpoints(fmt)):
        clipped = np.clip(x, -fmt.max_finite, fmt.max_finite)
        assert np.array_equal(encode_generic(x, fmt), clipped.astype(_ml(fmt)).view(np.uint8))
        assert np.array_equal(encode(x, fmt), encode_generic(x, fmt))
    # Without saturation: ml-dtypes' own overflow (inf, or NaN for E4M3FN) and NaN.
    raw = np.concatenate([_sample(50_000, 1), [np.inf, -np.inf, 1e9, -1e9]]).astype(np.float32)
    ref = raw.astype(_ml(fmt)).view(np.uint8)
    assert np.array_equal(encode_generic(raw, fmt, saturate=False), ref)
    assert np.isnan(decode(encode_generic(np.array([np.nan], np.float32), fmt), fmt)[0])


def test_e2m5_by_hand():
    fmt = FORMATS["e2m5"]
    assert (fmt.bias, fmt.emin, fmt.emax, fmt.max_finite, fmt.smallest_subnormal) == (1, 0, 1, 3.9375, 2**-5)
    finite = _finite_codes(fmt)
    values = fmt.values[finite]
    assert np.array_equal(encode(values.astype(np.float32), fmt), finite)  # round trip of every value
    assert len(np.unique(values[values > 0])) == 95  # 3 binades x 32 - the zero code
    # ties to even, subnormals, saturation
    step = 2**-5
    assert quantize(np.array([1.5 * step, 2.5 * step, 0.4 * step, 1e6, -1e6], np.float32), fmt).tolist() == [
        2 * step, 2 * step, 0.0, 3.9375, -3.9375]
    x = _sample(100_000, 2)
    q = quantize(x, fmt).astype(np.float64)
    grid = np.unique(fmt.values[finite])
    idx = np.clip(np.searchsorted(grid, np.clip(x, -3.9375, 3.9375)), 1, len(grid) - 1)
    nearest = np.minimum(np.abs(grid[idx] - np.clip(x, -3.9375, 3.9375)), np.abs(grid[idx - 1] - np.clip(x, -3.9375, 3.9375)))
    assert np.all(np.abs(q - np.clip(x, -3.9375, 3.9375)) <= nearest + 1e-12)  # nearest representable


@pytest.mark.parametrize("name", list(FORMATS))
def test_fields_rebuild_the_value(name):
    fmt = FORMATS[name]
    codes = _finite_codes(fmt)
    sign, exp, sig = fmt.fields(codes)
    rebuilt = np.where(sign == 1, -1.0, 1.0) * sig * np.exp2(exp - fmt.man_bits)
    assert np.array_equal(rebuilt, fmt.values[codes])
    assert sig.max() == 2 ** (fmt.man_bits + 1) - 1 and exp.min() == fmt.emin


def test_names_and_e5m7_reading():
    with pytest.raises(ValueError, match="valid are e2m5, e3m4, e4m3, e5m2"):
        get_format("e4m4")
    assert (E5M7.exp_bits, E5M7.man_bits, E5M7.aligned_bits) == (5, 7, 8)
