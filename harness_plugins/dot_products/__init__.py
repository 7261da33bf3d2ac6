"""``dot_products``: synthetic dot products for characterizing an accelerator's numerics.

The subject is one GEMM ``A (count x length) @ B (length x columns)``: ``count``
input vectors against ``columns`` weight vectors, drawn from chosen distributions
with a chosen input sparsity. With ``bits > 0`` the operands are signed integer
codes of that width, so an integer accelerator sees exactly what it would in an
INT-b network; with ``bits = 0`` they are float32.

Errors are measured against the exact product (float64), and normalized to the
**full scale** ``length * 2**(bits-1) * 2**(bits-1)`` (for float operands,
``length * max|A| * max|B|``), the largest magnitude a dot product of this length
can reach. ``numerics/rmse`` and ``numerics/bias`` are in percent of full scale;
their ``_se`` companions are standard errors over the ``count * columns``
samples, so a bias can be tested against zero. ``numerics/nmse`` (error power
over signal power) and ``numerics/sqnr_db`` do not depend on that normalization.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness import hookimpl
from harness.numerics.backend import GemmCall, bind
from harness.optrace import Op, OpTrace
from harness.specs import WorkloadSpec
from harness.validation import valid, validate_config

DISTRIBUTIONS = ("uniform", "gaussian", "relu")


#: Ceiling of the operands' size (elements of A, of B and of the product, each): the
#: draw and the float64 reference take 8 bytes per element, so 2**26 is 512 MiB per
#: array, about what a laptop can spare; beyond it numpy fails or the machine swaps.
MAX_ELEMENTS = 2**26
_SIZE = "A, B and the product each hold at most 2**26 elements"


@dataclass
class DotProductsConfig:
    """Operand shapes and statistics; defaults are a 128-long INT8 MVM.

    Valid values are declared on each field (:mod:`harness.validation`).
    """

    count: int = field(default=2048, metadata=valid(ge=2, le=MAX_ELEMENTS, why=_SIZE))
    length: int = field(default=128, metadata=valid(ge=1, le=MAX_ELEMENTS, why=_SIZE))
    columns: int = field(default=32, metadata=valid(ge=1, le=MAX_ELEMENTS, why=_SIZE))
    #: 0 = float32 operands, else signed integer codes of this width.
    bits: int = field(default=8, metadata=valid(ge=2, le=16, also=(0,), why="0 = float32, 2..16 = integer codes"))
    distribution: str = field(default="uniform", metadata=valid(one_of=DISTRIBUTIONS))
    weight_distribution: str = field(default="gaussian", metadata=valid(one_of=DISTRIBUTIONS))
    sparsity: float = field(default=0.0, metadata=valid(ge=0, lt=1))

    def __validate__(self):
        """The per-field ceilings bound each size; this bounds each array."""
        for what, rows, cols in (("A", "count", "length"), ("B", "length", "columns"),
                                 ("the product", "count", "columns")):
            size = getattr(self, rows) * getattr(self, cols)
            if size > MAX_ELEMENTS:
                yield rows, (f"with {cols}={getattr(self, cols)}, {what} would hold {size:,} elements; "
                             f"valid is at most {MAX_ELEMENTS:,} (2**26) in each of A, B and the product")
                return


@dataclass
class DotProductSet:
    """The operands (the subject of this workload)."""

    a: np.ndarray
    b: np.ndarray
    bits: int

    @property
    def operands(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The GEMM by op name, as ``subject:gemms`` promises (harness.subjects.GemmsSubject)."""
        return {"dot_products": (self.a, self.b)}


def _draw(rng: np.random.Generator, kind: str, shape: tuple[int, ...], bits: int) -> np.ndarray:
    if kind == "uniform":
        x = rng.uniform(-1.0, 1.0, shape)
    elif kind == "gaussian":
        x = np.clip(rng.normal(0.0, 0.25, shape), -1.0, 1.0)
    elif kind == "relu":
        x = np.clip(np.maximum(rng.normal(0.0, 0.35, shape), 0.0), 0.0, 1.0)
    else:
        raise ValueError(f"distribution {kind!r} is not one of {', '.join(DISTRIBUTIONS)}")
    if bits == 0:
        return x.astype(np.float32)
    qmax = 2 ** (bits - 1)
    return np.clip(np.rint(x * qmax), -qmax, qmax - 1).astype(np.int32)


class DotProducts:
    def __init__(self, config: DotProductsConfig):
        validate_config(config, "workload", "dot_products")  # done on the driver already; cheap for direct use
        self.config = config

    def build(self, ctx) -> DotProductSet:
        c = self.config
        rng = np.random.default_rng(ctx.child_seed("dot_products"))
        a = _draw(rng, c.distribution, (c.count, c.length), c.bits)
        b = _draw(rng, c.weight_distribution, (c.length, c.columns), c.bits)
        if c.sparsity > 0:
            a[rng.random(a.shape) < c.sparsity] = 0
        return DotProductSet(a=a, b=b, bits=c.bits)

    def full_scale(self, subject: DotProductSet) -> float:
        k = subject.a.shape[1]
        if subject.bits:
            q = 2.0 ** (subject.bits - 1)
            return k * q * q
        return k * float(np.abs(subject.a).max()) * float(np.abs(subject.b).max())

    def evaluate(self, subject: DotProductSet, backend, ctx) -> dict[str, float]:
        exact = subject.a.astype(np.float64) @ subject.b.astype(np.float64)
        call = GemmCall(op="dot_products", weight_stationary=True, a_bits=subject.bits, b_bits=subject.bits)
        got = np.asarray(bind(backend).matmul(subject.a, subject.b, call), dtype=np.float64)
        if got.shape != exact.shape:
            raise ValueError(f"backend {backend.name!r} returned shape {got.shape}, expected {exact.shape}")
        err = (got - exact) / self.full_scale(subject)
        n = err.size
        sq = err**2
        mse = float(sq.mean())
        rmse = float(np.sqrt(mse))
        # Delta method: se(sqrt(m)) = se(m) / (2 sqrt(m)).
        rmse_se = float(sq.std(ddof=1) / np.sqrt(n) / (2 * rmse)) if rmse > 0 else 0.0
        signal = float(np.mean((exact / self.full_scale(subject)) ** 2))
        nmse = mse / signal if signal > 0 else 0.0
        metrics = {
            "numerics/rmse": 100.0 * rmse,
            "numerics/rmse_se": 100.0 * rmse_se,
            "numerics/bias": 100.0 * float(err.mean()),
            "numerics/bias_se": 100.0 * float(err.std(ddof=1) / np.sqrt(n)),
            "numerics/nmse": nmse,
        }
        if nmse > 0:  # an exact result has no finite SQNR; leave it out rather than invent one
            metrics["numerics/sqnr_db"] = float(10 * np.log10(1.0 / nmse))
        return metrics

    def op_trace(self, subject: DotProductSet) -> OpTrace:
        m, k = subject.a.shape
        n = subject.b.shape[1]
        bits = subject.bits or 32
        return OpTrace(
            (
                Op(
                    "dot_products",
                    m=m,
                    k=k,
                    n=n,
                    input_density=float(np.count_nonzero(subject.a)) / subject.a.size,
                    weight_density=float(np.count_nonzero(subject.b)) / subject.b.size,
                    input_bits=bits,
                    weight_bits=bits,
                ),
            )
        )


@hookimpl
def harness_workloads():
    yield WorkloadSpec(
        name="dot_products",
        summary="Synthetic dot products with chosen distributions and sparsity, for numerics",
        config=DotProductsConfig,
        factory=DotProducts,
        smoke={"count": 64, "columns": 8},
        provides={"subject:gemms"},
        headline=("numerics/rmse",),
    )
