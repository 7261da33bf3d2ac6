"""FP8 number formats: encode with round-to-nearest-even, saturation and subnormals.

A format is sign, ``exp_bits`` exponent bits (bias ``2**(exp_bits-1) - 1``) and
``man_bits`` mantissa bits. ``special`` says which codes are not finite numbers:

* ``ieee``: the top exponent field holds infinities and NaNs (E5M2, E3M4, and our E2M5);
* ``fn``: only the all-ones code (per sign) is NaN, there are no infinities (OCP E4M3).

:data:`FORMATS` holds E2M5, E3M4, E4M3 and E5M2. ``ml-dtypes`` has three of them
(``float8_e3m4``, ``float8_e4m3fn``, ``float8_e5m2``), and :func:`encode` uses it for
those (its C++ casts are fast and are the reference other projects test against);
what it lacks is written here by hand: **E2M5** (no ml-dtypes type; we take the IEEE
convention of ml-dtypes' E3M4: bias 1, top exponent reserved, largest finite 3.9375)
and **saturation** (ml-dtypes overflows to inf or NaN; an FP8 datapath clips to the
largest finite value). :func:`encode_generic` is the hand-written encoder for any
format; ``tests/test_fp8_formats.py`` checks it bit for bit against ml-dtypes over
all 256 codes and a large random sample wherever ml-dtypes has the format, which is
what makes it trustworthy for E2M5.

Codes decode to ``(-1)**sign * significand * 2**(exponent - man_bits)`` with the
integer significand (hidden bit included for normal numbers) and the unbiased
exponent (subnormals at the minimum exponent): :meth:`FP8Format.fields`.

**"E5M7"** (the paper's fixed mode) is not an element format: the abstract does
not explain it, and we read it as a *shared-exponent alignment*: each group of
elements shares a 5-bit exponent (its largest, enough for E5M2's range) and every
element keeps a 7-bit aligned magnitude plus sign, i.e. 8 bit-cycles per input and
8-bit weights. :data:`E5M7` records that reading; ``harness_plugins/dsbp_fp8`` uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

__all__ = ["E5M7", "FORMATS", "FP8Format", "SharedExponentMode", "decode", "encode", "encode_generic",
           "get_format", "quantize"]


@dataclass(frozen=True)
class FP8Format:
    """An 8-bit float: 1 sign, ``exp_bits`` exponent and ``man_bits`` mantissa bits."""

    name: str
    exp_bits: int
    man_bits: int
    special: str = "ieee"  # "ieee" (top exponent = inf/NaN) or "fn" (only all-ones = NaN)
    ml_dtype: str | None = None  # the ml-dtypes type with exactly this encoding, if any

    def __post_init__(self) -> None:
        if self.exp_bits + self.man_bits != 7 or self.exp_bits < 1:
            raise ValueError(f"{self.name}: exp_bits + man_bits must be 7, got {self.exp_bits}+{self.man_bits}")
        if self.special not in ("ieee", "fn"):
            raise ValueError(f"{self.name}: special={self.special!r}; valid are 'ieee', 'fn'")

    @property
    def bias(self) -> int:
        return 2 ** (self.exp_bits - 1) - 1

    @property
    def emin(self) -> int:
        """Unbiased exponent of the smallest normal number (and of the subnormals)."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Unbiased exponent of the largest finite number."""
        top = 2**self.exp_bits - 1
        return (top - 1 if self.special == "ieee" else top) - self.bias

    @property
    def max_finite(self) -> float:
        m = self.man_bits
        top_mantissa = 2**m - 1 if self.special == "ieee" else 2**m - 2
        return float((2**m + top_mantissa) * 2.0 ** (self.emax - m))

    @property
    def smallest_subnormal(self) -> float:
        return float(2.0 ** (self.emin - self.man_bits))

    def is_finite_code(self, codes: np.ndarray) -> np.ndarray:
        low = np.asarray(codes, dtype=np.uint8) & 0x7F
        if self.special == "fn":
            return low != 0x7F
        return (low >> self.man_bits) != (2**self.exp_bits - 1)

    @cached_property
    def values(self) -> np.ndarray:
        """The value of each of the 256 codes (float64; NaN and inf where they are)."""
        codes = np.arange(256)
        sign = np.where(codes & 0x80, -1.0, 1.0)
        e_field = (codes & 0x7F) >> self.man_bits
        m_field = codes & (2**self.man_bits - 1)
        sig = np.where(e_field > 0, m_field + 2**self.man_bits, m_field)
        exp = np.maximum(e_field - self.bias, self.emin)
        out = sign * sig * np.exp2(exp - self.man_bits)
        bad = ~self.is_finite_code(codes.astype(np.uint8))
        if self.special == "ieee":
            out[bad & (m_field == 0)] = sign[bad & (m_field == 0)] * np.inf
            out[bad & (m_field != 0)] = np.nan
        else:
            out[bad] = np.nan
        return out

    @cached_property
    def _fields(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        codes = np.arange(256)
        e_field = (codes & 0x7F) >> self.man_bits
        m_field = codes & (2**self.man_bits - 1)
        sig = np.where(e_field > 0, m_field + 2**self.man_bits, m_field).astype(np.int64)
        exp = np.maximum(e_field - self.bias, self.emin).astype(np.int64)
        sig[~self.is_finite_code(codes.astype(np.uint8))] = 0  # never produced by encode()
        return (codes >> 7).astype(np.int64), exp, sig

    def fields(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(sign, exponent, significand)`` of codes, int64: value = (-1)**sign * sig * 2**(exp - man_bits)."""
        sign, exp, sig = self._fields
        c = np.asarray(codes, dtype=np.uint8)
        return sign[c], exp[c], sig[c]


FORMATS: dict[str, FP8Format] = {
    "e2m5": FP8Format("e2m5", 2, 5, "ieee", None),
    "e3m4": FP8Format("e3m4", 3, 4, "ieee", "float8_e3m4"),
    "e4m3": FP8Format("e4m3", 4, 3, "fn", "float8_e4m3fn"),
    "e5m2": FP8Format("e5m2", 5, 2, "ieee", "float8_e5m2"),
}


def get_format(name: str | FP8Format) -> FP8Format:
    if isinstance(name, FP8Format):
        return name
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"FP8 format {name!r}: valid are {', '.join(FORMATS)}") from None


def encode_generic(x: np.ndarray, fmt: str | FP8Format, saturate: bool = True) -> np.ndarray:
    """FP8 codes (uint8) of ``x``, written by hand for any :class:`FP8Format`.

    Round to nearest, ties to even; subnormals; values beyond the largest finite one
    saturate to it (``saturate=False``: they become inf, or NaN for ``fn`` formats, as
    in ml-dtypes); NaN becomes the format's NaN code. The sign of zero is kept.
    """
    fmt = get_format(fmt)
    x = np.asarray(x)
    a = np.abs(x.astype(np.float64))
    sign = np.signbit(x).astype(np.uint8) << 7
    nan = np.isnan(a)
    a = np.where(nan, 0.0, a)
    m = fmt.man_bits
    # Beyond the largest finite value, RNE would round up (a tie goes up when that value's
    # significand is odd): that is where an unsaturated cast overflows.
    limit = fmt.max_finite + 2.0 ** (fmt.emax - m - 1)
    odd = int(fmt.max_finite / 2.0 ** (fmt.emax - m)) % 2 == 1
    over = (a >= limit) if odd else (a > limit)
    a = np.minimum(a, fmt.max_finite)
    _, k = np.frexp(a)  # a = f * 2**k, f in [0.5, 1): exponent k - 1 (0 for a == 0)
    exp = np.maximum(k - 1, fmt.emin)
    quantum = np.exp2(exp - m)
    sig = np.rint(a / quantum)  # exact division by a power of two; rint is ties-to-even
    # A carry out of the significand (sig == 2**(m+1)) moves to the next binade:
    carry = sig >= 2 ** (m + 1)
    exp = np.where(carry, exp + 1, exp)
    sig = np.where(carry, sig / 2, sig).astype(np.int64)
    normal = sig >= 2**m
    e_field = np.where(normal, exp + fmt.bias, 0)
    m_field = np.where(normal, sig - 2**m, sig)
    code = (sign | (e_field << m) | m_field).astype(np.uint8)
    if not saturate:
        inf_code = 0x7F if fmt.special == "fn" else (2**fmt.exp_bits - 1) << m
        code = np.where(over, sign | np.uint8(inf_code), code).astype(np.uint8)
    nan_code = 0x7F if fmt.special == "fn" else ((2**fmt.exp_bits - 1) << m) | (1 << (m - 1))
    return np.where(nan, sign | np.uint8(nan_code), code).astype(np.uint8)


def encode(x: np.ndarray, fmt: str | FP8Format) -> np.ndarray:
    """FP8 codes (uint8) of ``x`` with RNE, subnormals and saturation.

    Uses ml-dtypes' cast where it has the format (after clipping to the largest finite
    value, which is what saturation adds), :func:`encode_generic` otherwise (E2M5).
    """
    fmt = get_format(fmt)
    x = np.asarray(x)
    if fmt.ml_dtype is None:
        return encode_generic(x, fmt)
    import ml_dtypes

    dtype = getattr(ml_dtypes, fmt.ml_dtype)
    if x.dtype != np.float64:
        x = x.astype(np.float32, copy=False)
    clipped = np.clip(x, -fmt.max_finite, fmt.max_finite)  # NaN stays NaN
    return clipped.astype(dtype).view(np.uint8)


def decode(codes: np.ndarray, fmt: str | FP8Format) -> np.ndarray:
    """Values (float32) of FP8 codes."""
    return get_format(fmt).values.astype(np.float32)[np.asarray(codes, dtype=np.uint8)]


def quantize(x: np.ndarray, fmt: str | FP8Format) -> np.ndarray:
    """``x`` rounded to the nearest FP8 value (float32), saturating."""
    return decode(encode(x, fmt), fmt)


@dataclass(frozen=True)
class SharedExponentMode:
    """A group alignment: elements share one ``exp_bits`` exponent (the group's
    largest) and keep ``man_bits`` aligned magnitude bits plus a sign, so an input
    takes ``man_bits + 1`` bit-cycles. Our reading of the paper's "E5M7" (see the
    module docstring)."""

    name: str
    exp_bits: int
    man_bits: int

    @property
    def aligned_bits(self) -> int:
        """Bits per aligned element, sign included (B_x = B_w in the fixed mode)."""
        return self.man_bits + 1


#: The paper's fixed "E5M7" mode, as we read it: B_x = B_w = 8 (sign + 7 magnitude bits).
E5M7 = SharedExponentMode("e5m7", 5, 7)
