"""``exact``: reference numerics, the baseline every accelerator is compared with.

Float operands go through float32 BLAS; integer codes (a quantized workload) get
the exact integer product. Its cost model counts work and prices it at a stated
baseline energy per MAC, so "accuracy vs energy" has a point for ``exact`` next
to the simulated accelerators:

* ``accelerator/macs``, ``accelerator/nonzero_macs``: the MACs of the op trace,
  dense and with zeros skipped, so a technique's savings are visible before a
  hardware model is chosen;
* ``accelerator/energy_pj`` (picojoules): the MACs (``nonzero_macs`` with
  ``skip_zeros=true``) times ``energy_per_mac_pj``; MAC energy only, no memory
  traffic, like a digital engine's datapath;
* ``accelerator/energy_per_mac_pj`` and ``accelerator/tops_per_w`` (2 ops per MAC)
  at that energy.

The default ``energy_per_mac_pj=0.23`` is **nominal**: an 8-bit integer multiply
(0.2 pJ) plus an 8-bit add (0.03 pJ) at 45 nm, 0.9 V, from M. Horowitz, "Computing's
energy problem (and what we can do about it)", ISSCC 2014, Table "Energy per
operation". It is a textbook reference point, not a measurement of any chip; set
``accelerator.energy_per_mac_pj`` for another baseline (e.g. 4.6 pJ for a 32-bit
float multiply-add from the same table).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness import hookimpl
from harness.numerics.backend import EXACT
from harness.specs import AcceleratorSpec
from harness.validation import valid

#: Nominal INT8 MAC energy (pJ) at 45 nm: 0.2 pJ multiply + 0.03 pJ add (Horowitz, ISSCC 2014).
INT8_MAC_PJ_45NM = 0.23


@dataclass
class ExactConfig:
    """Exact arithmetic has no operating point; its cost is priced at a nominal
    baseline energy per MAC (see the module docstring for the source)."""

    energy_per_mac_pj: float = field(
        default=INT8_MAC_PJ_45NM,
        metadata=valid(gt=0, why="energy per MAC in picojoules; nominal 0.23 = INT8 at 45 nm (Horowitz 2014)"),
    )
    skip_zeros: bool = False


class ExactAccelerator:
    numerics = EXACT

    def __init__(self, config: ExactConfig):
        self.config = config

    def cost(self, trace, ctx) -> dict[str, float]:
        macs = float(trace.macs)
        nonzero = float(trace.nonzero_macs)
        e = float(self.config.energy_per_mac_pj)
        energy_pj = (nonzero if self.config.skip_zeros else macs) * e
        return {
            "accelerator/macs": macs,
            "accelerator/nonzero_macs": nonzero,
            "accelerator/energy_pj": energy_pj,
            "accelerator/energy_per_mac_pj": energy_pj / macs if macs else e,
            # 2 ops per (dense) MAC over the energy, as ds_cim counts them: ops/pJ = TOPS/W.
            "accelerator/tops_per_w": 2.0 * macs / energy_pj if energy_pj else 2.0 / e,
        }


@hookimpl
def harness_accelerators():
    yield AcceleratorSpec(
        name="exact",
        summary="Reference numerics: float32 BLAS, exact integer products; MACs at a nominal 0.23 pJ each",
        config=ExactConfig,
        factory=ExactAccelerator,
        headline=("accelerator/energy_pj", "accelerator/macs"),
    )
