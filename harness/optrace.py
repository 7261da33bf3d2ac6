"""The op trace: what a workload computes, in the terms a cost model charges for.

A workload describes one inference (or one training step) of one input sample
as a list of ops (:class:`Op`):

* ``gemm``: a weight GEMM ``(m x k) @ (k x n)``. A convolution is listed as the
  GEMM it lowers to through im2col (``m`` output positions, ``k = C_in * kh * kw``,
  ``n = C_out``).
* ``attention``: an activation-by-activation product (``Q K^T``, ``A V``) with
  ``has_weights=False``: counted as MACs, never as stored weights.
* ``decode_attention``: attention of one new token against a KV cache in
  autoregressive decode; ``kv_cache_bytes`` is the cache it reads.
* ``elementwise``: ``elements`` operations with no MACs (activations, norms,
  residual adds), for cost models that charge for them.

Densities record pruning (weights) and ReLU or token sparsity (inputs), so a
cost model for an accelerator that skips zeros charges only for the work left.
Bit widths are those the op actually ran at (a technique's per-layer precision
included). Memory traffic per op is ``weight_bytes``, ``input_bytes`` and
``output_bytes`` (derived from shapes and bits unless the workload states them).
``phase`` says whether the op belongs to inference or to training's forward or
backward pass.

A cost model that needs weight values (bit patterns, crossbar mapping) reads them
with :meth:`OpTrace.weight_values` or :meth:`OpTrace.weight_codes`; they ride
along with the trace but stay out of ``tables/op_trace.csv``, which is a plain
table of the ops.

``OpTrace.attrs`` holds facts about the trace as a whole that no op carries, as
scalars under namespaced keys (``family.name``), e.g. a serving trace's
``serving.batch_policy`` (``"fixed"``, or ``"fit"``: the listed requests are a
sample and the system admits as many as its memory holds) and
``serving.prefill_chunk`` (prefill tokens piggybacked on each decode iteration).
The workload that sets a key documents it; a cost model ignores keys it does not
know, and uses defaults when a key is absent.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Optional

import numpy as np

__all__ = ["KINDS", "PHASES", "Op", "OpTrace", "WeightValues"]

#: Kinds of op (see the module docstring).
KINDS = ("gemm", "attention", "decode_attention", "elementwise")
#: Phases an op belongs to.
PHASES = ("inference", "train_forward", "train_backward")


@dataclass(frozen=True)
class Op:
    """One op executed ``count`` times per sample (a GEMM is ``(m x k) @ (k x n)``).

    ``*_bytes`` left as None are derived: weights ``k*n*weight_bits/8`` (0 without
    weights), inputs ``m*k*count*input_bits/8`` (plus ``k*n*count`` for an
    activation-by-activation product's second operand), outputs
    ``m*n*count*output_bits/8``; for ``elementwise`` ops, ``elements`` values in
    and out.
    """

    name: str
    m: int = 0
    k: int = 0
    n: int = 0
    count: int = 1
    has_weights: bool = True
    weight_density: float = 1.0
    input_density: float = 1.0
    weight_bits: int = 32
    input_bits: int = 32
    kind: str = "gemm"
    output_bits: int = 32
    phase: str = "inference"
    elements: int = 0
    kv_cache_bytes: int = 0
    weight_bytes: Optional[float] = None
    input_bytes: Optional[float] = None
    output_bytes: Optional[float] = None

    def __post_init__(self) -> None:
        for attr in ("m", "k", "n", "count", "elements", "kv_cache_bytes"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"op {self.name!r}: {attr} must be a non-negative int, got {value!r}")
            object.__setattr__(self, attr, int(value))
        for attr in ("weight_density", "input_density"):
            value = getattr(self, attr)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"op {self.name!r}: {attr} must be in [0, 1], got {value!r}")
        for attr in ("weight_bits", "input_bits", "output_bits"):
            value = getattr(self, attr)
            if not isinstance(value, (int, np.integer)) or not 1 <= value <= 64:
                raise ValueError(f"op {self.name!r}: {attr} must be an int in 1..64, got {value!r}")
        if self.kind not in KINDS:
            raise ValueError(f"op {self.name!r}: kind={self.kind!r}; valid kinds: {', '.join(KINDS)}")
        if self.phase not in PHASES:
            raise ValueError(f"op {self.name!r}: phase={self.phase!r}; valid phases: {', '.join(PHASES)}")
        if self.kind != "gemm" and self.has_weights:
            object.__setattr__(self, "has_weights", False)
        derived = {
            "weight_bytes": self.weights * self.weight_bits / 8,
            "input_bytes": self._input_values() * self.input_bits / 8,
            "output_bytes": self._output_values() * self.output_bits / 8,
        }
        for attr, value in derived.items():
            given = getattr(self, attr)
            if given is None:
                object.__setattr__(self, attr, float(value))
            elif not given >= 0:
                raise ValueError(f"op {self.name!r}: {attr} must be >= 0, got {given!r}")

    def _input_values(self) -> int:
        if self.kind == "elementwise":
            return self.elements
        second = 0 if self.has_weights or self.kind == "decode_attention" else self.k * self.n
        return (self.m * self.k + second) * self.count

    def _output_values(self) -> int:
        return self.elements if self.kind == "elementwise" else self.m * self.n * self.count

    @property
    def macs(self) -> int:
        """Dense multiply-accumulates (0 for elementwise ops)."""
        return 0 if self.kind == "elementwise" else self.m * self.k * self.n * self.count

    @property
    def flops(self) -> int:
        """Dense FLOPs, counting a MAC as two and an elementwise operation as one."""
        return self.elements if self.kind == "elementwise" else 2 * self.macs

    @property
    def weights(self) -> int:
        """Stored weight count (0 for ops without weights)."""
        return self.k * self.n if self.has_weights else 0

    @property
    def nonzero_macs(self) -> float:
        """MACs left when zero weights and zero inputs are both skipped."""
        return self.macs * self.weight_density * self.input_density

    @property
    def bytes(self) -> float:
        """All memory traffic of the op: weights, inputs, outputs and KV cache."""
        return self.weight_bytes + self.input_bytes + self.output_bytes + self.kv_cache_bytes


@dataclass(frozen=True)
class WeightValues:
    """A weighted op's effective weights in GEMM layout ``(k, n)`` (masks applied),
    and how they are quantized when the op runs on integer codes."""

    values: np.ndarray
    bits: int = 0
    granularity: str = "channel"
    #: The technique's grid scale when it set one (see ``harness.nn.Precision``).
    scale: object = None

    def codes(self, bits: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Signed symmetric integer codes (int32) and scales, ``codes * scale ~ values``.

        ``bits`` defaults to the op's; float ops (bits 0 or 32) have no codes
        unless ``bits`` is given.
        Scales are per output column (``channel``) or one per tensor.
        """
        from harness.nn.runtime import Precision

        bits = self.bits if bits is None else bits
        if not 1 <= bits <= 16:
            raise ValueError(f"weight codes need 1..16 bits, this op has {bits} (float weights)")
        return Precision(bits, None, self.granularity, self.scale).weight_codes(self.values, bits)


@dataclass(frozen=True)
class OpTrace:
    """All ops of one inference (or training step) of one sample."""

    ops: tuple[Op, ...] = field(default_factory=tuple)
    #: Weight values by op name, for cost models that read them (not in the CSV).
    weights_by_op: Mapping[str, WeightValues] = field(default_factory=dict, compare=False, repr=False)
    #: Facts about the whole trace (module docstring): ``{"family.name": scalar}``.
    attrs: Mapping[str, object] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.attrs.items()
               if not (isinstance(k, str) and "." in k) or not isinstance(v, (str, int, float, bool))}
        if bad:
            raise ValueError(f"OpTrace.attrs must map 'family.name' keys to str/int/float/bool values, got {bad!r}")

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

    @property
    def bytes(self) -> float:
        return sum(op.bytes for op in self.ops)

    def op(self, name: str) -> Op:
        for op in self.ops:
            if op.name == name:
                return op
        raise KeyError(f"no op named {name!r} in the trace; ops: {', '.join(o.name for o in self.ops)}")

    def weight_values(self, name: str) -> np.ndarray:
        """Effective weights ``(k, n)`` of weighted op ``name`` (masks applied)."""
        return self._values(name).values

    def weight_codes(self, name: str, bits: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Integer codes and scales of op ``name``'s weights at the op's bit width."""
        entry = self._values(name)
        return entry.codes(bits if bits is not None else self.op(name).weight_bits)

    def has_weight_values(self) -> bool:
        return bool(self.weights_by_op)

    def _values(self, name: str) -> WeightValues:
        try:
            return self.weights_by_op[name]
        except KeyError:
            have = ", ".join(self.weights_by_op) or "none (the workload records no weight values)"
            raise KeyError(f"op {name!r} has no weight values in this trace; ops with values: {have}") from None

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
            ),
            self.weights_by_op,
            self.attrs,
        )

    def summary(self) -> dict[str, float]:
        """Workload-side metrics of the trace, named for the ``trace/`` stage."""
        return {
            "trace/macs": float(self.macs),
            "trace/flops": float(self.flops),
            "trace/nonzero_macs": float(self.nonzero_macs),
            "trace/weights": float(self.weights),
            "trace/weight_bytes": float(sum(op.weight_bytes for op in self.ops)),
            "trace/bytes": float(self.bytes),
        }

    def rows(self) -> list[dict]:
        """One dict per op, for a CSV table artifact."""
        return [
            {
                "name": op.name,
                "kind": op.kind,
                "phase": op.phase,
                "m": op.m,
                "k": op.k,
                "n": op.n,
                "count": op.count,
                "elements": op.elements,
                "macs": op.macs,
                "has_weights": op.has_weights,
                "weight_density": op.weight_density,
                "input_density": op.input_density,
                "weight_bits": op.weight_bits,
                "input_bits": op.input_bits,
                "output_bits": op.output_bits,
                "weight_bytes": op.weight_bytes,
                "input_bytes": op.input_bytes,
                "output_bytes": op.output_bytes,
                "kv_cache_bytes": op.kv_cache_bytes,
            }
            for op in self.ops
        ]
