"""DS-CIM cost model: action counts x per-action energy, component areas, cycles.

Accelergy/CiMLoop style. For every GEMM of an op trace the weights are tiled onto
one ``rows x columns`` macro (``ceil(k/rows) * ceil(n/columns)`` tiles, each loaded
once per op instance); every input vector then runs one stochastic MVM of
``L`` samples per tile, ``replication`` samples per clock, so an MVM takes
``ceil(L / replication)`` cycles (L=256 on 64 replicas: 4 cycles). Partly filled
tiles pay for the whole array: unused rows still see the PRNG and the clock.

Actions per tile-MVM (one input vector through one tile) [inferred: the notes
name PRNG, AND/OR, counters and SRAM, not the circuit, so the *relative*
per-action costs below are nominal 28-nm-like guesses, and only their sum is
pinned by the paper]:

==================  =============================================  ===============
action              count                                          nominal energy
==================  =============================================  ===============
prng_bit            L * planes * PRNG streams in the array         1.0 fJ
sng_compare         L * rows (one input comparator per row)        0.5 fJ
cell_and            L * rows * columns (weight compare + AND)      0.05 fJ
or_tree             L * groups * columns * trees                   0.1 fJ
counter_increment   L * groups * columns * activity                1.0 fJ
sram_read_bit       rows * columns * 8 (weights into the logic)    0.5 fJ
accumulate          columns * (groups * trees + 2) (adds, fixup)   5.0 fJ
sram_write_bit      rows * columns * cell_bits per tile load       1.0 fJ
remap_detect        groups (``remap=pow2``: leading zeros of the   1.0 fJ
                    group's largest input, online)
remap_shift         rows (``remap=pow2``: input barrel shift,      0.5 fJ
                    once per MVM, shared by all L samples)
rescale_shift       groups * columns * trees (``remap=pow2`` or    1.0 fJ
                    ``partition=weight``: shift a group count by
                    its ``2**-(sx+sw)`` before accumulating)
==================  =============================================  ===============

Data remapping [inferred costs]: ``remap=pow2`` adds the three actions above
(the weights' shifts are computed offline and stored already shifted, so they
cost nothing per MVM) and, in area, a shifter per row (not replicated: the
shifted input feeds the replicated comparators) plus a leading-zero detector per
group and a shifter per group-column-tree. ``partition=weight`` stores each
cell's slice bound (the cumulative, normalized ``|w|`` of the group, ``log2(G) +
bits`` bits, plus the sign bit: ``cell_bits`` = 12 for sign-split instead of 8),
so SRAM reads, writes and area grow by 12/8, and the per-cell compare is a
``log2(G)+bits``-bit comparison instead of ``bits`` (``cell_and`` scaled by
that ratio); it also needs ``rescale_shift``. None of this is in the DS-CIM2
calibration point (``remap=none``, ``partition=slot``), so the calibration is
unchanged and the extra cost is a prediction.

``trees`` is 2 for the sign-split encoding (positive and negative OR trees and
counters) and 1 for offset-binary. ``activity`` is the expected fraction of
samples in which an OR tree outputs 1; at the calibration point it is
:data:`NOMINAL_ACTIVITY` (uniform 8-bit operands fill about a quarter of the
unit square).

**Operand bit widths** [inferred]. The macro is built for 8-bit operands. An op
that runs at fewer bits (a technique's per-layer precision, reported in the op
trace) compares fewer magnitude bits per cell and per input comparator, consumes
fewer PRNG bit planes and stores fewer bits per cell (``MacroParams.for_op``);
the stream length and the cycle count do not change. Area is the 8-bit macro's.

**Zero skipping.** Cycles are never saved: the stream length is fixed, and a
zero operand only makes its row's region empty. What zeros do save is switching
activity in the OR trees and counters, and only with the sign-split encoding,
where a zero input or weight has magnitude 0; with offset-binary a zero becomes
128 and its region is a quarter of the square. So ``input_density`` and
``weight_density`` of an op scale ``counter_increment`` (sign-split only) and
nothing else. PRNG, comparators, SRAM reads and cycles are charged in full.

**Calibration.** One energy factor and one area factor are fitted, once, at the
DS-CIM2 preset (offset-binary, 128 x 32, OR16, 64 replicas, L=256, one PRNG
point per OR group, dense
operands, activity 0.25, no weight loads: the macro's peak operating point), so
that it reproduces the paper's 3566.1 TOPS/W and 363.7 TOPS/mm^2 (2 ops per
MAC). They are computed from the preset by :func:`calibration` (not typed in),
and apply unchanged to every other configuration, so other presets, stream
lengths and geometries are *predictions* of this model: for example at L=256
DS-CIM1 (sign-split) comes out below DS-CIM2, and halving L doubles TOPS/W only
for the per-sample actions. Area is SRAM (8 bits per weight), counters and
accumulators, which are not replicated, plus ``replication`` copies of the
per-sample logic. A third factor scales the per-replica logic so that, at the
calibration point, the 64-replica macro is twice the one-replica macro: the
abstract's "replicated 64 times with only a 1x area increase". The clock
(``clock_mhz``) is [inferred]; the fitted area absorbs it at the calibration
point. Resulting factors: see ``calibration()`` (printed in the plugin README).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

from harness.optrace import OpTrace

__all__ = [
    "CLAIMED_TOPS_PER_MM2",
    "CLAIMED_TOPS_PER_W",
    "NOMINAL_ACTIVITY",
    "Calibration",
    "MacroParams",
    "calibration",
    "cost_of_trace",
]

CLAIMED_TOPS_PER_W = 3566.1
CLAIMED_TOPS_PER_MM2 = 363.7
NOMINAL_ACTIVITY = 0.25
WEIGHT_BITS = 8

#: Nominal per-action energy in fJ (relative values [inferred]; scaled by the calibration).
ENERGY_FJ = {
    "prng_bit": 1.0,
    "sng_compare": 0.5,
    "cell_and": 0.05,
    "or_tree": 0.1,
    "counter_increment": 1.0,
    "sram_read_bit": 0.5,
    "accumulate": 5.0,
    "sram_write_bit": 1.0,
    "remap_detect": 1.0,
    "remap_shift": 0.5,
    "rescale_shift": 1.0,
}

#: Nominal component area in um^2 (relative values [inferred]; scaled by the calibration).
AREA_UM2 = {
    "sram_bit": 0.3,  # per stored weight bit, not replicated
    "prng_bit": 5.0,  # per PRNG output bit per replica
    "sng_compare": 2.0,  # per row per replica
    "cell_and": 0.02,  # per cell per replica
    "or_tree": 0.5,  # per group per column per tree per replica
    "counter": 20.0,  # per group per column per tree (adds 64 replica bits per clock)
    "accumulate": 100.0,  # per column (counter sum, rescale, correction)
    "remap_shift": 3.0,  # per row (remap=pow2; not replicated)
    "remap_detect": 10.0,  # per group (remap=pow2)
    "rescale_shift": 5.0,  # per group per column per tree (remap=pow2 or partition=weight)
}


@dataclass(frozen=True)
class MacroParams:
    """The resolved geometry and operating point the cost model needs."""

    rows: int
    columns: int
    or_group: int
    replication: int
    stream_length: int
    encoding: str  # "sign_split" or "offset_binary"
    scheme: str  # "exclusive", "independent" or "nested"
    point_sharing: str  # "array" or "group"
    clock_mhz: float
    remap: str = "none"  # "none" or "pow2"
    partition: str = "slot"  # "slot" or "weight"
    #: Bit widths of the operands of the op being charged (the macro stores and
    #: compares 8-bit operands; an op a technique quantized lower uses fewer
    #: comparator, PRNG and SRAM bits, see :meth:`for_op`).
    weight_bits: int = WEIGHT_BITS
    input_bits: int = WEIGHT_BITS

    def for_op(self, op) -> "MacroParams":
        """These params at ``op``'s bit widths, capped at the macro's 8 bits [inferred].

        A float op (32 bits) is quantized to int8 by the numerics, so it costs 8 bits.
        Fewer bits shrink the magnitude comparisons (cells and input comparators),
        the PRNG bit planes they consume and the stored bits per cell; the stream
        length, and so the cycle count, stays the same.
        """
        w = min(int(op.weight_bits), WEIGHT_BITS)
        x = min(int(op.input_bits), WEIGHT_BITS)
        if (w, x) == (self.weight_bits, self.input_bits):
            return self
        return replace(self, weight_bits=w, input_bits=x)

    def _magnitude_bits(self, bits: int) -> int:
        # Sign-split spends one bit on the sign; offset-binary compares all of them.
        return max(1, bits - 1) if self.encoding == "sign_split" else bits

    @property
    def nominal_bits(self) -> int:
        """Comparator width of an 8-bit operand: 7 (sign-split) or 8 (offset-binary)."""
        return 7 if self.encoding == "sign_split" else 8

    @property
    def bits(self) -> int:
        """Input comparator width at ``input_bits``."""
        return self._magnitude_bits(self.input_bits)

    @property
    def weight_magnitude_bits(self) -> int:
        return self._magnitude_bits(self.weight_bits)

    @property
    def trees(self) -> int:
        return 2 if self.encoding == "sign_split" else 1

    @property
    def slice_bits(self) -> int:
        """Width of the per-cell weight comparison: ``bits``, or ``log2(G)+bits`` for ``partition=weight``."""
        if self.partition == "weight":
            return int(math.log2(self.or_group)) + self.weight_magnitude_bits
        return self.weight_magnitude_bits

    @property
    def cell_bits(self) -> int:
        """SRAM bits per cell: the 8-bit weight, or sign + slice bound for ``partition=weight``."""
        return 1 + self.slice_bits if self.partition == "weight" else self.weight_bits

    @property
    def rescales(self) -> bool:
        return self.remap != "none" or self.partition != "slot"

    @property
    def groups(self) -> int:
        return math.ceil(self.rows / self.or_group)

    @property
    def planes(self) -> int:
        slot_bits = int(math.log2(self.or_group)) if self.scheme == "exclusive" else 0
        return slot_bits + self.bits + self.weight_magnitude_bits

    @property
    def prng_streams(self) -> int:
        if self.scheme == "independent":
            return self.rows
        return 1 if self.point_sharing == "array" else self.groups

    @property
    def cycles_per_mvm(self) -> int:
        return math.ceil(self.stream_length / self.replication)


def mvm_actions(p: MacroParams, activity: float) -> dict[str, float]:
    """Action counts of one tile-MVM (one input vector through one full tile)."""
    L = p.stream_length
    cells = p.rows * p.columns
    or_units = p.groups * p.columns
    actions = {
        "prng_bit": L * p.planes * p.prng_streams,
        "sng_compare": L * p.rows * p.bits / p.nominal_bits,
        "cell_and": L * cells * p.slice_bits / p.nominal_bits,
        "or_tree": L * or_units * p.trees,
        "counter_increment": L * or_units * activity,
        "sram_read_bit": cells * p.cell_bits,
        "accumulate": p.columns * (p.groups * p.trees + 2),
    }
    if p.remap == "pow2":
        actions["remap_detect"] = p.groups
        actions["remap_shift"] = p.rows
    if p.rescales:
        actions["rescale_shift"] = or_units * p.trees
    return actions


def _replica_area(p: MacroParams) -> float:
    """Nominal area of one copy of the per-sample logic (PRNG, comparators, AND, OR)."""
    return (
        AREA_UM2["prng_bit"] * p.planes * p.prng_streams
        + AREA_UM2["sng_compare"] * p.rows
        + AREA_UM2["cell_and"] * p.rows * p.columns * p.slice_bits / p.nominal_bits
        + AREA_UM2["or_tree"] * p.groups * p.columns * p.trees
    )


def _shared_area(p: MacroParams) -> float:
    """Nominal area that is not replicated: SRAM, counters, accumulators."""
    area = (
        AREA_UM2["sram_bit"] * p.rows * p.columns * p.cell_bits
        + AREA_UM2["counter"] * p.groups * p.columns * p.trees
        + AREA_UM2["accumulate"] * p.columns
    )
    if p.remap == "pow2":
        area += AREA_UM2["remap_shift"] * p.rows + AREA_UM2["remap_detect"] * p.groups
    if p.rescales:
        area += AREA_UM2["rescale_shift"] * p.groups * p.columns * p.trees
    return area


def nominal_area_um2(p: MacroParams, replica_scale: float | None = None) -> float:
    """Macro area before the overall calibration factor (um^2)."""
    if replica_scale is None:
        replica_scale = calibration().replica_area_scale
    return _shared_area(p) + p.replication * replica_scale * _replica_area(p)


def _energy_fj(actions: dict[str, float]) -> float:
    return sum(ENERGY_FJ[name] * count for name, count in actions.items())


@dataclass(frozen=True)
class Calibration:
    energy_scale: float  # multiplies every nominal energy
    area_scale: float  # multiplies every nominal area
    replica_area_scale: float  # multiplies the nominal per-replica logic area


#: The DS-CIM2 operating point the calibration reproduces (see the module docstring).
DS_CIM2_POINT = MacroParams(
    rows=128,
    columns=32,
    or_group=16,
    replication=64,
    stream_length=256,
    encoding="offset_binary",
    scheme="exclusive",
    point_sharing="group",
    clock_mhz=1000.0,
)


@lru_cache(maxsize=1)
def calibration(point: MacroParams = DS_CIM2_POINT) -> Calibration:
    """Scale factors making ``point`` (dense, nominal activity) hit the claimed figures."""
    macs = point.rows * point.columns
    target_fj = 2.0 * macs / (CLAIMED_TOPS_PER_W * 1e12) * 1e15  # J per MVM -> fJ
    energy_scale = target_fj / _energy_fj(mvm_actions(point, NOMINAL_ACTIVITY))
    # "Replicating this low-cost circuit 64 times with only a 1x area increase":
    # the replication-x macro is twice the one-replica macro, which fixes the
    # replica logic relative to SRAM + counters:
    #   shared + R * s * logic = 2 * (shared + s * logic)  =>  s = shared / ((R - 2) * logic)
    replica_area_scale = _shared_area(point) / ((point.replication - 2) * _replica_area(point))
    ops_per_s = 2.0 * macs * point.clock_mhz * 1e6 / point.cycles_per_mvm
    target_mm2 = ops_per_s / (CLAIMED_TOPS_PER_MM2 * 1e12)
    area_scale = target_mm2 / (nominal_area_um2(point, replica_area_scale) * 1e-6)
    return Calibration(energy_scale=energy_scale, area_scale=area_scale, replica_area_scale=replica_area_scale)


def cost_of_trace(p: MacroParams, trace: OpTrace) -> dict[str, float]:
    """Energy, latency and area of running ``trace`` on one macro (keys without prefix)."""
    cal = calibration()
    area_mm2 = nominal_area_um2(p) * 1e-6 * cal.area_scale
    energy_fj = 0.0
    cycles = 0
    macs = 0
    for op in trace:
        if op.macs == 0:
            continue
        tiles = math.ceil(op.k / p.rows) * math.ceil(op.n / p.columns)
        mvms = op.count * op.m * tiles
        q = p.for_op(op)
        density = op.input_density * op.weight_density if p.encoding == "sign_split" else 1.0
        energy_fj += mvms * _energy_fj(mvm_actions(q, NOMINAL_ACTIVITY * density))
        # Weights are written once per tile per op instance, one SRAM row per cycle.
        energy_fj += op.count * tiles * q.rows * q.columns * q.cell_bits * ENERGY_FJ["sram_write_bit"]
        cycles += mvms * p.cycles_per_mvm + op.count * tiles * p.rows
        macs += op.macs
    energy_j = energy_fj * cal.energy_scale * 1e-15
    latency_s = cycles / (p.clock_mhz * 1e6)
    ops = 2.0 * macs
    return {
        "tops_per_w": ops / energy_j / 1e12 if energy_j > 0 else 0.0,
        "tops_per_mm2": ops / latency_s / area_mm2 / 1e12 if latency_s > 0 else 0.0,
        "energy_per_mac_pj": energy_j / macs * 1e12 if macs else 0.0,
        "energy_pj": energy_j * 1e12,
        "latency_us": latency_s * 1e6,
        "cycles": float(cycles),
        "area_mm2": area_mm2,
        "peak_tops_per_w": peak_tops_per_w(p),
        "peak_tops_per_mm2": peak_tops_per_mm2(p),
    }


def peak_tops_per_w(p: MacroParams) -> float:
    """Dense, full-tile, nominal-activity efficiency of this configuration."""
    energy_j = _energy_fj(mvm_actions(p, NOMINAL_ACTIVITY)) * calibration().energy_scale * 1e-15
    return 2.0 * p.rows * p.columns / energy_j / 1e12


def peak_tops_per_mm2(p: MacroParams) -> float:
    area_mm2 = nominal_area_um2(p) * 1e-6 * calibration().area_scale
    ops_per_s = 2.0 * p.rows * p.columns * p.clock_mhz * 1e6 / p.cycles_per_mvm
    return ops_per_s / area_mm2 / 1e12

