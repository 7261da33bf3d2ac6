"""The op trace: what a workload computes, in the terms a cost model charges for.

A workload describes one inference of one input sample as a list of GEMMs
(:class:`Op`). A convolution is listed as the GEMM it lowers to through im2col
(``m`` output positions, ``k = C_in * kh * kw``, ``n = C_out``); attention lists
its activation-by-activation products (``Q K^T`` and ``A V``) with
``has_weights=False`` so they are counted as FLOPs but never as stored weights.
Densities record pruning (weights) and ReLU or token sparsity (inputs), so a cost
model for an accelerator that can skip zeros charges only for the work that is
left, and one that cannot charges for all of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

__all__ = ["Op", "OpTrace"]


@dataclass(frozen=True)
class Op:
    """One GEMM ``(m x k) @ (k x n)``, executed ``count`` times per sample."""

    name: str
    m: int
    k: int
    n: int
    count: int = 1
    has_weights: bool = True
    weight_density: float = 1.0
    input_density: float = 1.0
    weight_bits: int = 32
    input_bits: int = 32
    kind: str = "gemm"

    def __post_init__(self) -> None:
        for attr in ("m", "k", "n", "count"):
            value = getattr(self, attr)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"op {self.name!r}: {attr} must be a non-negative int, got {value!r}")
        for attr in ("weight_density", "input_density"):
            value = getattr(self, attr)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"op {self.name!r}: {attr} must be in [0, 1], got {value!r}")

    @property
    def macs(self) -> int:
        """Dense multiply-accumulates."""
        return self.m * self.k * self.n * self.count

    @property
    def flops(self) -> int:
        """Dense FLOPs, counting a MAC as two."""
        return 2 * self.macs

    @property
    def weights(self) -> int:
        """Stored weight count (0 for activation-by-activation products)."""
        return self.k * self.n if self.has_weights else 0

    @property
    def nonzero_macs(self) -> float:
        """MACs left when zero weights and zero inputs are both skipped."""
        return self.macs * self.weight_density * self.input_density


@dataclass(frozen=True)
class OpTrace:
    """All GEMMs of one inference of one sample."""

    ops: tuple[Op, ...] = field(default_factory=tuple)

    def __iter__(self):
        return iter(self.ops)

    def __len__(self) -> int:
        return len(self.ops)

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops)

    @property
    def flops(self) -> int:
        return sum(op.flops for op in self.ops)

    @property
    def weights(self) -> int:
        return sum(op.weights for op in self.ops)

    @property
    def nonzero_macs(self) -> float:
        return sum(op.nonzero_macs for op in self.ops)

    def with_densities(self, weight: dict[str, float] | None = None, inputs: dict[str, float] | None = None) -> "OpTrace":
        """A copy with the named ops' densities replaced."""
        weight = weight or {}
        inputs = inputs or {}
        return OpTrace(
            tuple(
                replace(
                    op,
                    weight_density=weight.get(op.name, op.weight_density),
                    input_density=inputs.get(op.name, op.input_density),
                )
                for op in self.ops
            )
        )

    def summary(self) -> dict[str, float]:
        """Workload-side metrics of the trace, named for the ``trace/`` stage."""
        return {
            "trace/macs": float(self.macs),
            "trace/flops": float(self.flops),
            "trace/nonzero_macs": float(self.nonzero_macs),
            "trace/weights": float(self.weights),
        }

    def rows(self) -> list[dict]:
        """One dict per op, for a CSV table artifact."""
        return [
            {
                "name": op.name,
                "kind": op.kind,
                "m": op.m,
                "k": op.k,
                "n": op.n,
                "count": op.count,
                "macs": op.macs,
                "has_weights": op.has_weights,
                "weight_density": op.weight_density,
                "input_density": op.input_density,
                "weight_bits": op.weight_bits,
                "input_bits": op.input_bits,
            }
            for op in self.ops
        ]
