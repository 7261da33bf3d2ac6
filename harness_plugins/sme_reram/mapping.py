"""Bit-sparse orchestration and the bit-sliced crossbar mapping with squeeze-out.

Plain numpy, run once per weight tensor (offline): the numerics call it from
``prepare_weight`` and the cost model from the op trace's weights, so both see
the same crossbars.

1. :func:`quantize_weights`: symmetric 8-bit codes ``-127..127`` per output
   column (or per tensor).
2. :func:`orchestrate`: each code rounded to the nearest value with at most ``k``
   non-zero digits, ``pow2`` (binary magnitude: a sum of k powers of two) or
   ``csd`` (canonical signed digits, digits in {-1, 0, 1}); returns the rounded
   codes and their digit planes ``(P, K, N)``.
3. :func:`plane_matrices`: the 1-bit matrices a sign scheme stores, one per
   (plane, sign), each with the output column and the signed weight ``+-2**p`` of
   every matrix column.
4. :func:`map_layer`: each matrix tiled onto ``X x X`` crossbars; empty tiles are
   not allocated; tiles whose density ``ones / X**2`` is under the threshold are
   squeezed: their non-zero rows, on their non-zero columns, move into free columns
   of another crossbar of the layer (adding only the rows it lacks) or into spare
   crossbars. Each added row costs a ``ceil(log2 K)``-bit input index, each moved
   column an output/plane/sign tag.

A moved piece keeps its own columns, so its cells add into its outputs with its
plane's shift, and a physical row is always one input: the squeezed mapping computes
the same product (exactly, with a lossless ADC; :mod:`.reference`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

__all__ = [
    "ROUNDINGS",
    "SIGN_SCHEMES",
    "Crossbar",
    "LayerMap",
    "PlaneMatrix",
    "dense_crossbars",
    "dense_planes",
    "digit_planes",
    "map_layer",
    "orchestrate",
    "plane_matrices",
    "quantize_weights",
    "digit_table",
    "rounding_table",
]

ROUNDINGS = ("csd", "pow2")
SIGN_SCHEMES = ("differential", "split", "twos_complement")


# --------------------------------------------------------------------- orchestration

def quantize_weights(w: np.ndarray, bits: int = 8, granularity: str = "channel") -> tuple[np.ndarray, np.ndarray]:
    """Symmetric integer codes (int64, ``|code| <= 2**(bits-1) - 1``) and scales
    (one per column, or a single one), ``codes * scale ~ w``; an all-zero column
    gets scale 1."""
    w = np.asarray(w, dtype=np.float64)
    qmax = 2 ** (bits - 1) - 1
    peak = np.abs(w).max(axis=0) if granularity == "channel" else np.full(w.shape[1], np.abs(w).max(initial=0.0))
    scale = np.where(peak > 0, peak / qmax, 1.0)
    return np.clip(np.rint(w / scale), -qmax, qmax).astype(np.int64), scale


def _naf(v: int) -> list[int]:
    """Non-adjacent form of ``v >= 0``, least significant digit first (minimal non-zero digits)."""
    digits = []
    while v:
        if v & 1:
            d = 2 - (v & 3)  # +1 or -1
            v -= d
        else:
            d = 0
        digits.append(d)
        v >>= 1
    return digits


@lru_cache(maxsize=None)
def digit_table(rounding: str, bits: int = 8) -> np.ndarray:
    """Digits ``(2**(bits-1), P)`` in {-1, 0, 1} of every magnitude: binary (``pow2``,
    ``bits - 1`` planes) or the non-adjacent form (``csd``, ``bits`` planes: 127 = 128 - 1)."""
    qmax = 2 ** (bits - 1) - 1
    planes = bits - 1 if rounding == "pow2" else bits
    digits = np.zeros((qmax + 1, planes), np.int8)
    for v in range(qmax + 1):
        if rounding == "pow2":
            digits[v] = [(v >> p) & 1 for p in range(planes)]
        else:
            naf = _naf(v)
            digits[v, : len(naf)] = naf
    digits.setflags(write=False)
    return digits


@lru_cache(maxsize=None)
def rounding_table(k: int, rounding: str, bits: int = 8, lo: int = 0, hi: int | None = None) -> np.ndarray:
    """For every magnitude ``0..2**(bits-1)-1``, the nearest magnitude whose digits
    (:func:`digit_table`) have at most ``k`` non-zeros, all in planes ``lo..hi``.
    Ties go to the smaller magnitude."""
    digits = digit_table(rounding, bits)
    hi = digits.shape[1] - 1 if hi is None else hi
    outside = np.ones(digits.shape[1], bool)
    outside[lo:hi + 1] = False
    ok = (np.count_nonzero(digits, axis=1) <= k) & ~np.any(digits[:, outside] != 0, axis=1)
    allowed = np.flatnonzero(ok)  # 0 always qualifies
    table = allowed[np.argmin(np.abs(np.arange(len(digits))[:, None] - allowed[None, :]), axis=1)].astype(np.int64)
    table.setflags(write=False)
    return table


def orchestrate(codes: np.ndarray, k: int, rounding: str, bits: int = 8, window: int = 0,
                block: tuple[int, int] = (0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """Codes rounded to at most ``k`` non-zero digits: ``(rounded (K, N) int64,
    digit planes (P, K, N) int8)``, ``rounded == sum_p digits[p] * 2**p``.

    With ``window`` > 0, every block of ``block = (rows, columns)`` weights (one
    crossbar's footprint) is also limited to ``window`` adjacent planes, placed where
    the block's squared rounding error is least: the planes outside the window are
    empty for the whole block.
    """
    codes = np.asarray(codes, dtype=np.int64)
    digits = digit_table(rounding, bits)
    sign = np.sign(codes)
    mag = np.abs(codes)
    base = rounding_table(k, rounding, bits)
    if window <= 0 or window >= digits.shape[1]:
        rounded_mag = base[mag]
    else:
        rounded_mag = np.empty_like(mag)
        tables = [rounding_table(k, rounding, bits, max(0, hi - window + 1), hi) for hi in range(digits.shape[1])]
        br, bc = block
        for r0 in range(0, mag.shape[0], br):
            for c0 in range(0, mag.shape[1], bc):
                m = mag[r0:r0 + br, c0:c0 + bc]
                hist = np.bincount(m.ravel(), minlength=len(digits))
                errors = [float(hist @ (t - np.arange(len(digits))) ** 2) for t in tables]
                hi = len(tables) - 1 - int(np.argmin(errors[::-1]))  # least squared error; ties: the higher window
                rounded_mag[r0:r0 + br, c0:c0 + bc] = tables[hi][m]
    rounded = sign * rounded_mag
    planes = np.moveaxis(digits[rounded_mag], -1, 0) * sign[None].astype(np.int8)
    return rounded, planes.astype(np.int8)


def digit_planes(rounded: np.ndarray, sign_scheme: str, digits: np.ndarray, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The planes a scheme stores and the weight of each: ``(planes (P, K, N) int8, 2**p or -2**(bits-1))``.

    Sign-magnitude schemes store the signed digits (``differential``, ``split``);
    ``twos_complement`` stores the bits of the rounded code in two's complement
    (its top plane weighs ``-2**(bits-1)``; negative codes are dense in ones).
    """
    if sign_scheme == "twos_complement":
        u = np.asarray(rounded, dtype=np.int64) & ((1 << bits) - 1)
        planes = np.stack([(u >> p) & 1 for p in range(bits)]).astype(np.int8)
        weights = np.array([1 << p for p in range(bits - 1)] + [-(1 << (bits - 1))], np.int64)
        return planes, weights
    return digits, np.array([1 << p for p in range(digits.shape[0])], np.int64)


# --------------------------------------------------------------------- plane matrices

@dataclass(frozen=True)
class PlaneMatrix:
    """One 1-bit matrix ``(K, C)`` the crossbars store, with per column its output
    column and its signed weight (``+-2**plane``)."""

    plane: int
    sign: str  # "+", "-", "+-" (differential pairs) or "2c"
    bits: np.ndarray  # (K, C) uint8
    col_out: np.ndarray  # (C,) int64
    col_weight: np.ndarray  # (C,) int64


def plane_matrices(planes: np.ndarray, weights: np.ndarray, sign_scheme: str) -> list[PlaneMatrix]:
    """The 1-bit matrices of a scheme (see :func:`map_layer`)."""
    n = planes.shape[2]
    out = []
    for p in range(planes.shape[0]):
        d = planes[p]
        w = int(weights[p])
        if sign_scheme == "twos_complement":
            out.append(PlaneMatrix(p, "2c", (d != 0).astype(np.uint8), np.arange(n), np.full(n, w, np.int64)))
        elif sign_scheme == "split":
            out.append(PlaneMatrix(p, "+", (d > 0).astype(np.uint8), np.arange(n), np.full(n, w, np.int64)))
            out.append(PlaneMatrix(p, "-", (d < 0).astype(np.uint8), np.arange(n), np.full(n, -w, np.int64)))
        else:  # differential: column 2j holds output j's positive digits, 2j+1 its negative ones
            bits = np.empty((d.shape[0], 2 * n), np.uint8)
            bits[:, 0::2] = d > 0
            bits[:, 1::2] = d < 0
            out.append(PlaneMatrix(p, "+-", bits, np.repeat(np.arange(n), 2), np.tile(np.array([w, -w], np.int64), n)))
    return out


# --------------------------------------------------------------------- mapping

@dataclass(frozen=True)
class Crossbar:
    """One allocated ``X x X`` array: physical row ``r`` is driven by input ``rows[r]``,
    physical column ``c`` adds ``col_weight[c] * (ADC output)`` into output ``col_out[c]``."""

    kind: str  # "tile" (holds kept tiles, maybe spare rows/columns too) or "spare" (squeezed pieces only)
    planes: tuple  # the planes its columns belong to
    rows: np.ndarray  # (R,) original input rows
    col_out: np.ndarray  # (C,)
    col_weight: np.ndarray  # (C,)
    cells: np.ndarray  # (R, C) uint8
    col_plane: np.ndarray  # (C,) the plane of each column
    spare_rows: int = 0  # rows added for squeezed pieces


@dataclass
class LayerMap:
    """The crossbars of one layer and what the mapping did."""

    k: int
    n: int
    size: int
    crossbars: list[Crossbar] = field(default_factory=list)
    tiles: list[dict] = field(default_factory=list)  # one row per tile: plane, sign, blocks, nnz, density, status
    spare_rows: int = 0  # rows added for squeezed pieces (each with an input index)
    spare_columns: int = 0  # columns holding squeezed pieces (each with an output/plane tag)
    index_bits: int = 0
    dense: int = 0  # the dense bit-sliced baseline's crossbars, same sign scheme (dense_crossbars)

    @property
    def count(self) -> int:
        return len(self.crossbars)

    def counts(self) -> dict[str, int]:
        status = [t["status"] for t in self.tiles]
        return {
            "crossbars": self.count,
            "tile_crossbars": sum(c.kind == "tile" for c in self.crossbars),
            "spare_crossbars": sum(c.kind == "spare" for c in self.crossbars),
            "tiles": len(status),
            "tiles_kept": status.count("kept"),
            "tiles_squeezed": status.count("squeezed"),
            "tiles_empty": status.count("empty"),
            "spare_rows": self.spare_rows,
            "spare_columns": self.spare_columns,
            "index_bits": self.index_bits,
            "crossbars_dense": self.dense,
        }


def dense_planes(sign_scheme: str, bits: int = 8) -> tuple[int, int]:
    """``(matrices, columns per output)`` of the dense baseline: plain ``bits``-bit codes
    (no orchestration), ``bits - 1`` magnitude planes in sign-magnitude (``split``:
    a positive and a negative matrix each; ``differential``: one matrix with two
    columns per output), or ``bits`` two's-complement planes."""
    if sign_scheme == "twos_complement":
        return bits, 1
    if sign_scheme == "split":
        return 2 * (bits - 1), 1
    return bits - 1, 2


def dense_crossbars(k: int, n: int, size: int, sign_scheme: str = "twos_complement", bits: int = 8) -> int:
    """The baseline: conventional dense bit slicing of the same layer with the same sign
    scheme (:func:`dense_planes`), the slices of a weight in adjacent columns (the
    ``K x (matrices * columns per output * N)`` matrix tiled), every tile allocated
    whatever it holds. A small layer's planes share an array here, as in ISAAC."""
    matrices, per_output = dense_planes(sign_scheme, bits)
    return math.ceil(k / size) * math.ceil(matrices * per_output * n / size)


def index_bits_per_row(k: int) -> int:
    """Bits of a spare row's index: which of the layer's ``k`` inputs drives it."""
    return max(1, math.ceil(math.log2(k)))


def index_bits_per_column(n: int, planes: int = 8) -> int:
    """Bits of a pooled spare column's tag: its output column, plane and sign."""
    return max(1, math.ceil(math.log2(n))) + max(1, math.ceil(math.log2(planes))) + 1


def map_layer(planes: np.ndarray, weights: np.ndarray, sign_scheme: str, size: int,
              threshold: float, bits: int = 8) -> LayerMap:
    """Tile every plane matrix of one layer onto ``size x size`` crossbars with squeeze-out.

    ``planes (P, K, N)`` and ``weights`` come from :func:`digit_planes`. Each plane
    matrix is cut into tiles of ``size`` rows (row blocks) and ``size`` columns
    (column blocks). A tile with no one is ``empty`` (not allocated); with
    ``0 < ones / size**2 < threshold`` it is ``squeezed``; otherwise ``kept``.

    Placement, first fit, per layer: kept tiles of one row block share a crossbar
    side by side while their columns fit (same inputs; each column keeps its own
    plane's shift in the periphery, which splices the planes), then each squeezed
    tile's non-zero rows, restricted to their non-zero columns (a piece), go into
    the first crossbar with room for its columns and for the rows it does not
    already have, else into a new spare crossbar. A row of a crossbar is one input,
    so a piece whose rows are already there (the free columns next to its own row
    block) needs no new row. Index costs: ``ceil(log2 K)`` bits per added row, and
    an output/plane/sign tag per piece column (:func:`index_bits_per_column`).
    """
    n_planes, k, n = planes.shape
    lm = LayerMap(k=k, n=n, size=size, dense=dense_crossbars(k, n, size, sign_scheme, bits))
    per_row, per_col = index_bits_per_row(k), index_bits_per_column(n, n_planes)
    area = float(size * size)
    kept, pieces = [], []  # (row block, matrix, rows, columns), (matrix, rows, columns)
    for matrix in plane_matrices(planes, weights, sign_scheme):
        c_total = matrix.bits.shape[1]
        for cb in range(math.ceil(c_total / size)):
            c0, c1 = cb * size, min(c_total, (cb + 1) * size)
            for rb in range(math.ceil(k / size)):
                r0, r1 = rb * size, min(k, (rb + 1) * size)
                tile = matrix.bits[r0:r1, c0:c1]
                nnz = int(np.count_nonzero(tile))
                density = nnz / area
                status = "empty" if nnz == 0 else ("squeezed" if density < threshold else "kept")
                lm.tiles.append({"plane": matrix.plane, "sign": matrix.sign, "row_block": rb, "col_block": cb,
                                 "rows": r1 - r0, "cols": c1 - c0, "nnz": nnz, "density": density,
                                 "status": status})
                if status == "kept":
                    kept.append((rb, matrix, np.arange(r0, r1), np.arange(c0, c1)))
                elif status == "squeezed":
                    pieces.append((matrix, r0 + np.flatnonzero(tile.any(axis=1)),
                                   c0 + np.flatnonzero(tile.any(axis=0))))
    open_ = []  # crossbars being filled: {"kind", "rows": [...], "at": {input: row}, "parts": [...], "width", "added"}
    by_block: dict[int, list] = {}  # a row block's crossbars, in creation order
    for rb, matrix, rows, cols in kept:
        for xb in by_block.setdefault(rb, []):
            if xb["width"] + len(cols) <= size:
                break
        else:
            xb = {"kind": "tile", "block": rb, "rows": [int(r) for r in rows], "parts": [], "width": 0, "added": 0}
            xb["at"] = {r: i for i, r in enumerate(xb["rows"])}
            open_.append(xb)
            by_block[rb].append(xb)
        xb["parts"].append((matrix, rows, cols))
        xb["width"] += len(cols)
    # First fit over the crossbars in creation order; a full-width one never takes a
    # piece again, so it leaves the candidates (same placement, without rescanning it).
    room = [xb for xb in open_ if xb["width"] < size]
    for matrix, rows, cols in pieces:
        rows_list = rows.tolist()
        for slot, xb in enumerate(room):
            if xb["width"] + len(cols) > size:
                continue
            at = xb["at"]
            new_rows = [r for r in rows_list if r not in at]
            if len(xb["rows"]) + len(new_rows) <= size:
                break
        else:
            xb = {"kind": "spare", "block": -1, "rows": [], "at": {}, "parts": [], "width": 0, "added": 0}
            new_rows = rows_list
            open_.append(xb)
            room.append(xb)
            slot = len(room) - 1
        for r in new_rows:
            xb["at"][r] = len(xb["rows"])
            xb["rows"].append(r)
        xb["added"] += len(new_rows)
        xb["parts"].append((matrix, rows, cols))
        xb["width"] += len(cols)
        lm.spare_rows += len(new_rows)
        lm.spare_columns += len(cols)
        lm.index_bits += len(new_rows) * per_row + len(cols) * per_col
        if xb["width"] >= size:
            del room[slot]
    for xb in open_:
        cells = np.zeros((len(xb["rows"]), xb["width"]), np.uint8)
        at = 0
        for matrix, rows, cols in xb["parts"]:
            positions = np.asarray([xb["at"][int(r)] for r in rows], dtype=np.int64)
            cells[positions[:, None], at + np.arange(len(cols))[None, :]] = matrix.bits[np.ix_(rows, cols)]
            at += len(cols)
        parts = xb["parts"]
        lm.crossbars.append(Crossbar(
            xb["kind"], tuple(sorted({int(p[0].plane) for p in parts})), np.asarray(xb["rows"], dtype=np.int64),
            np.concatenate([p[0].col_out[p[2]] for p in parts]), np.concatenate([p[0].col_weight[p[2]] for p in parts]),
            cells, np.concatenate([np.full(len(p[2]), p[0].plane) for p in parts]), xb["added"]))
    return lm
