"""``bf16``: an accelerator that multiplies in bfloat16 and accumulates in float32.

An example of a third-party plugin, small enough to read in a minute and real
enough to measure: many NPUs feed bfloat16 operands into float32 accumulators,
so this plugin's numerics round both operands to bfloat16 (round to nearest,
ties to even, on the float32 bit pattern) before a float32 GEMM. Integer codes
up to 8 bits are exact in bfloat16, so an INT8 workload sees only the float32
accumulation. The cost model charges a fixed energy per MAC (a parameter), as a
first-order model of a systolic array.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness import hookimpl
from harness.specs import AcceleratorSpec
from harness.validation import valid


@dataclass
class Bf16Config:
    """Operating point of the modelled array.

    Each field declares its valid values (``harness.validation.valid``); the harness
    checks them on the driver before anything runs, and refuses NaN or infinity in
    any float field, so the cost model below needs no checks of its own.
    """

    #: Energy of one bfloat16 multiply plus float32 add, in picojoules.
    energy_per_mac_pj: float = field(default=0.5, metadata=valid(gt=0))
    #: MACs per clock cycle (array rows x columns); the ceiling is a 2**20-MAC array.
    macs_per_cycle: int = field(default=16384, metadata=valid(ge=1, le=2**20))
    #: Clock frequency in MHz.
    clock_mhz: float = field(default=1000.0, metadata=valid(gt=0))


def to_bfloat16(x: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest bfloat16, returned as float32."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounding = 0x7FFF + ((bits >> 16) & 1)
    rounded = ((bits + rounding) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32)


class Bf16Numerics:
    """bfloat16 operands, float32 accumulation (contract v2: ``matmul(a, b, call)``).

    Rounding a stationary weight to bfloat16 is offline work: ``prepare_weight``
    does it once per weight tensor, and the harness hands the result back as
    ``call.prepared`` on every call with that weight.
    """

    name = "bf16"

    def prepare_weight(self, b: np.ndarray, call) -> np.ndarray:
        return to_bfloat16(b.astype(np.float32))

    def matmul(self, a: np.ndarray, b: np.ndarray, call=None) -> np.ndarray:
        wb = call.prepared if call is not None and call.prepared is not None else to_bfloat16(b.astype(np.float32))
        out = to_bfloat16(a.astype(np.float32)) @ wb
        if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
            return out.astype(np.float64)
        return out


class Bf16Accelerator:
    def __init__(self, config: Bf16Config):
        self.config = config
        self.numerics = Bf16Numerics()

    def cost(self, trace, ctx) -> dict[str, float]:
        c = self.config
        macs = float(trace.macs)  # a dense systolic array does not skip zeros
        cycles = np.ceil(macs / c.macs_per_cycle)
        return {
            "energy_pj": macs * c.energy_per_mac_pj,
            "energy_per_mac_pj": c.energy_per_mac_pj,
            "latency_us": cycles / c.clock_mhz,
            # Weights and inputs move as bfloat16, 2 bytes each, whatever width the trace states.
            "operand_bytes": float(sum(2 * (op.weights + op.m * op.k * op.count) for op in trace)),
        }


@hookimpl
def harness_accelerators():
    yield AcceleratorSpec(
        name="bf16",
        summary="Example third-party accelerator: bfloat16 operands, float32 accumulation",
        config=Bf16Config,
        factory=Bf16Accelerator,
    )
