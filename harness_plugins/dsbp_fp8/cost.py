"""FP8 DCIM cost model: action counts x per-action energy, calibrated to 20.4 TFLOPS/W.

The macro is a ``group x columns`` array (64 x 96 in the paper): ``group`` rows hold
one group of the reduction dimension, each column one output's aligned weights of
``B_w`` bits. An input group (``group`` FP8 inputs of one row of ``A``) is aligned
once (exponent max, shifts), its bitwidth predicted (DSBP only), and streamed
bit-serially MSB first through the FIFO alignment unit, ``B_x`` cycles, into every
column tile it meets. Actions [inferred: the abstract names the blocks, not their
energies, so the *ratios* below are nominal 28-nm-like guesses and only their sum
at the calibration point is pinned by the paper]:

=================  ====================================================  ============
action             count                                                 energy
=================  ====================================================  ============
bit_op             sum over MACs of B_x * B_w (1b x 1b AND + adder-tree   1 unit
                   share: bit-serial input x bit-parallel weight)
column_cycle       B_x per (input group, column): the column's shift-    16 units
                   accumulator (about 16 bit-ops for a ~20-bit add)
group_output       per (input group, column): scale by 2**(E_x + E_w)   64 units
                   and FP32 accumulate across groups
input_align        per input element per column tile: exponent compare,  8 units
                   shift decode
fifo_bit           B_x per input element per column tile: the FIFO       1 unit
                   alignment unit streams one bit per cycle
predict            per input group per column tile (DSBP only): shift    128 units
                   histogram, error estimate, compare
=================  ====================================================  ============

**Calibration** (:func:`calibration`): one energy unit is fitted so that the fixed
"E5M7" mode (``B_x = B_w = 8``, no predictor) on dense full tiles (64-row groups,
96 columns) gives the paper's **20.4 TFLOPS/W** (2 FLOPs per MAC). Everything else
(other bitwidths, DSBP, partial tiles, a workload's actual bitwidths) is a
prediction of this model. Weights are stationary: loading them is not charged (as
for the macro's headline figure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Relative per-action energies in units of one bit-op [inferred, see the table].
UNITS = {"bit_op": 1.0, "column_cycle": 16.0, "group_output": 64.0, "input_align": 8.0, "fifo_bit": 1.0,
         "predict": 128.0}
#: The paper's headline: fixed E5M7 (our reading: B_x = B_w = 8) on the 64 x 96 macro.
CALIBRATION_TFLOPS_PER_W = 20.4
CALIBRATION_POINT = {"group": 64, "columns": 96, "input_bits": 8, "weight_bits": 8, "predictor": False}

#: Action counts accumulated per op: each is a total over the MACs it covers.
COUNTS = ("macs", "bx_macs", "bw_macs", "bit_ops", "column_cycles", "group_outputs", "input_elements",
          "fifo_bits", "input_groups")


@dataclass(frozen=True)
class Macro:
    group: int = 64
    columns: int = 96
    predictor: bool = False
    clock_mhz: float = 500.0


def nominal_counts(m: int, k: int, n: int, bx: float, bw: float, macro: Macro) -> dict[str, float]:
    """Action counts of an ``(m x k) @ (k x n)`` GEMM at average bitwidths ``bx``, ``bw``."""
    groups = math.ceil(k / macro.group)
    tiles = math.ceil(n / macro.columns)
    macs = float(m) * k * n
    return {
        "macs": macs,
        "bx_macs": bx * macs,
        "bw_macs": bw * macs,
        "bit_ops": bx * bw * macs,
        "column_cycles": bx * m * groups * n,
        "group_outputs": float(m) * groups * n,
        "input_elements": float(m) * k * tiles,
        "fifo_bits": bx * m * k * tiles,
        "input_groups": float(m) * groups * tiles,
    }


def energy_units(counts: dict[str, float], macro: Macro) -> float:
    """Energy in bit-op units of the given action counts."""
    u = UNITS
    e = (u["bit_op"] * counts["bit_ops"] + u["column_cycle"] * counts["column_cycles"]
         + u["group_output"] * counts["group_outputs"] + u["input_align"] * counts["input_elements"]
         + u["fifo_bit"] * counts["fifo_bits"])
    if macro.predictor:
        e += u["predict"] * counts["input_groups"]
    return e


def calibration() -> float:
    """Picojoules per energy unit that make fixed E5M7 on full tiles give 20.4 TFLOPS/W."""
    p = CALIBRATION_POINT
    macro = Macro(group=p["group"], columns=p["columns"], predictor=p["predictor"])
    counts = nominal_counts(1, p["group"], p["columns"], p["input_bits"], p["weight_bits"], macro)
    pj_per_mac = 2.0 / CALIBRATION_TFLOPS_PER_W  # FLOP/pJ = TFLOPS/W, 2 FLOPs per MAC
    return pj_per_mac * counts["macs"] / energy_units(counts, macro)


PJ_PER_UNIT = calibration()


def peak_tflops_per_w(bx: float, bw: float, macro: Macro) -> float:
    """TFLOPS/W on dense full tiles (``group`` rows, ``columns`` columns) at these bitwidths."""
    counts = nominal_counts(1, macro.group, macro.columns, bx, bw, macro)
    return 2.0 * counts["macs"] / (energy_units(counts, macro) * PJ_PER_UNIT)


def summarize(counts: dict[str, float], macro: Macro) -> dict[str, float]:
    """Metrics (without the ``accelerator/`` prefix) of accumulated action counts."""
    macs = counts["macs"]
    energy = energy_units(counts, macro) * PJ_PER_UNIT
    # Latency: each input group takes B_x cycles per column tile; one macro, no overlap.
    cycles = counts["fifo_bits"] / macro.group if macro.group else 0.0
    out = {
        "macs": macs,
        "energy_pj": energy,
        "energy_per_mac_pj": energy / macs if macs else 0.0,
        "tflops_per_w": 2.0 * macs / energy if energy else 0.0,
        "avg_input_bits": counts["bx_macs"] / macs if macs else 0.0,
        "avg_weight_bits": counts["bw_macs"] / macs if macs else 0.0,
        "bit_cycles_per_mac": counts["bx_macs"] / macs if macs else 0.0,
        "bit_ops_per_mac": counts["bit_ops"] / macs if macs else 0.0,
        "latency_us": cycles / macro.clock_mhz,
    }
    for action in ("bit_op", "column_cycle", "group_output", "input_align", "fifo_bit", "predict"):
        key = {"bit_op": "bit_ops", "column_cycle": "column_cycles", "group_output": "group_outputs",
               "input_align": "input_elements", "fifo_bit": "fifo_bits", "predict": "input_groups"}[action]
        share = UNITS[action] * counts[key] * PJ_PER_UNIT if (action != "predict" or macro.predictor) else 0.0
        out[f"energy_{action}_pj"] = share
    return out
