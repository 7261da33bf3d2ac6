"""Swappable matmul backends: how a workload's GEMMs reach an accelerator's numerics.

Every GEMM goes through ``backend.matmul(a, b, call)``:

* ``a`` has shape ``(M, K)`` and ``b`` ``(K, N)``; the result is ``(M, N)``.
* Floating inputs: the result is float32, the accelerator's approximation of
  ``a @ b`` (a backend that works on integers quantizes internally and rescales).
* Integer inputs (any integer dtype, values in the op's quantized range, for
  example int8 codes): the result is float64 holding the accelerator's estimate
  of the integer product. The exact backend returns it exactly (float64 is exact
  for int8 products with K < 2**38), so "exact INT8" is the exact backend fed
  integer codes.
* ``call`` is a :class:`GemmCall`: which op this is (its name, whether ``b`` is a
  stationary weight, the operands' bit widths, the epilogue fused after the GEMM,
  the role in training), and ``call.seed``, a seed derived from the run's seed
  and the op, from which a stochastic backend draws all its randomness.

Offline work on a weight (remapping, slice tables, bit-plane maps) is declared
by an optional ``prepare_weight(b, call) -> prepared`` method. The harness calls
it once per distinct weight tensor (content and bit width), keeps the result,
and hands it back as ``call.prepared`` on every call that multiplies by that
weight: across batches, evaluations and runs in one process. A backend never
caches by itself, and never redoes offline work per call.

Numerics that measure themselves (the error of every output against a float64
product, a data-dependent bit width) declare an optional ``observe() -> dict``:
the runner calls it right before the accelerated evaluation (to forget anything
earlier) and right after it, and logs what it returns under ``numerics/`` (a
metric the workload itself logged wins). The accelerator's ``cost`` runs later
in the same process on the same object, so a cost model whose action counts
depend on the data may price the op trace with what its numerics saw.

A backend is a plain object with a ``name`` and a ``matmul`` method; nothing has
to subclass anything. Backends written for contract v1 (``matmul(a, b)``, two
arguments) keep working: they are called without the context, and a
:class:`ContractWarning` says once what to change. :class:`ExactBackend` is the
reference every other backend is compared against.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import threading
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "EXACT",
    "ROLES",
    "BoundBackend",
    "ContractWarning",
    "ExactBackend",
    "GemmCall",
    "MatmulBackend",
    "bind",
    "derive_seed",
    "is_integer_input",
]

#: What a GEMM call computes. ``inference``: evaluation. In training, for a
#: weight layer ``Y = X @ W``: ``forward`` (a=X, b=W), ``grad_input``
#: (a=dY, b=W.T, gives dX) and ``grad_weight`` (a=X.T, b=dY, gives dW).
ROLES = ("inference", "forward", "grad_input", "grad_weight")

#: Epilogues a backend may see. ``relu``: the caller computes
#: ``relu(result + call.epilogue_offset)`` right after the GEMM (the offset is the
#: layer's bias in the result's units, broadcastable to ``(M, N)``; None means 0),
#: so a backend may stop converting an output early once it knows that sum is
#: <= 0, and return any value that keeps it <= 0.
EPILOGUES = (None, "relu")


class ContractWarning(UserWarning):
    """A plugin uses an older form of the contract that still works, and how to update it."""


def derive_seed(seed: int, *keys: Any) -> int:
    """A 63-bit seed from ``seed`` and ``keys``, stable across processes and platforms."""
    entropy = [int(seed) % (2**63)] + [int.from_bytes(hashlib.blake2b(str(k).encode(), digest_size=8).digest(), "little") for k in keys]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


@dataclass(frozen=True)
class GemmCall:
    """What one ``matmul`` call serves (see the module docstring).

    ``a_bits``/``b_bits`` are the operands' bit widths when they are integer
    codes, 0 for floats. ``weight_stationary`` is True when ``b`` is a layer's
    stored weight (the same tensor on every call for this op), False for
    activation-by-activation products and for synthetic operands. ``epilogue``
    and ``epilogue_offset``: see :data:`EPILOGUES`. ``seed`` is filled in by the
    harness: in inference from the run's seed and ``op``; in training from the
    training seed, ``op`` and the step, shared by the three roles of one step (a
    GEMM can redraw the rows its forward pass kept). ``prepared`` is what
    the backend's ``prepare_weight`` returned for this ``b`` (None otherwise).
    """

    op: str = "gemm"
    role: str = "inference"
    weight_stationary: bool = False
    a_bits: int = 0
    b_bits: int = 0
    epilogue: Optional[str] = None
    seed: Optional[int] = None
    epilogue_offset: Any = dataclasses.field(default=None, compare=False, repr=False)
    prepared: Any = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"GemmCall role={self.role!r}: valid are {', '.join(ROLES)}")
        if self.epilogue not in EPILOGUES:
            raise ValueError(f"GemmCall epilogue={self.epilogue!r}: valid are None, 'relu'")

    @property
    def phase(self) -> str:
        """``inference`` or ``training``."""
        return "inference" if self.role == "inference" else "training"

    def rng(self) -> np.random.Generator:
        """A generator seeded from ``seed`` (a call without a seed is refused)."""
        if self.seed is None:
            raise ValueError(f"GemmCall for op {self.op!r} has no seed; bind the backend with harness.numerics.bind")
        return np.random.default_rng(self.seed)


@runtime_checkable
class MatmulBackend(Protocol):
    """What an accelerator's numerics provide (see the module docstring).

    Optional: ``prepare_weight(self, b, call) -> Any``, the offline step on a
    stationary weight; its result arrives as ``call.prepared``; ``observe(self) ->
    dict[str, float]``, what the numerics measured since the last call (see the
    module docstring).
    """

    name: str

    def matmul(self, a: np.ndarray, b: np.ndarray, call: GemmCall) -> np.ndarray: ...


def is_integer_input(a: np.ndarray, b: np.ndarray) -> bool:
    """True when both operands are integer arrays (quantized codes)."""
    return np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer)


class ExactBackend:
    """Reference numerics: float32 BLAS, or the exact integer product for codes."""

    name = "exact"

    def matmul(self, a: np.ndarray, b: np.ndarray, call: GemmCall | None = None) -> np.ndarray:
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
            raise ValueError(f"matmul needs (M,K) @ (K,N), got {a.shape} @ {b.shape}")
        if is_integer_input(a, b):
            return a.astype(np.float64) @ b.astype(np.float64)
        return np.asarray(a, dtype=np.float32) @ np.asarray(b, dtype=np.float32)

    def __repr__(self) -> str:
        return "ExactBackend()"


#: The shared exact backend instance.
EXACT = ExactBackend()


# -- binding: context, seeds, the per-weight cache --------------------------------

def _takes_call(matmul: Callable) -> bool:
    """True when ``matmul`` accepts a third positional argument (contract v2)."""
    try:
        params = list(inspect.signature(matmul).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature: assume v2
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind is p.VAR_POSITIONAL for p in params)


class WeightCache:
    """What ``prepare_weight`` returned, by weight content; least recently used out.

    Keyed by a digest of the weight's bytes, shape, dtype and the call fields a
    preparation may depend on (op, bit widths), so a technique that edits a
    weight in place gets a fresh preparation, never a stale one.
    """

    def __init__(self, max_entries: int = 512):
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        #: How many times the offline step ran (tests and benchmarks read it).
        self.prepared = 0
        self.hits = 0

    @staticmethod
    def key(b: np.ndarray, call: GemmCall) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{call.op}|{call.a_bits}|{call.b_bits}|{b.shape}|{b.dtype}".encode())
        h.update(np.ascontiguousarray(b).data)
        return h.hexdigest()

    def get(self, b: np.ndarray, call: GemmCall, prepare: Callable[[np.ndarray, GemmCall], Any]) -> Any:
        key = self.key(b, call)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
        value = prepare(b, call)
        with self._lock:
            self.prepared += 1
            self._entries[key] = value
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.prepared = self.hits = 0


_CACHES: "weakref.WeakKeyDictionary[Any, WeightCache]" = weakref.WeakKeyDictionary()
_WARNED: set[type] = set()


def weight_cache(backend: Any) -> WeightCache:
    """The weight cache of ``backend`` (one per backend object, for its lifetime)."""
    if isinstance(backend, BoundBackend):
        backend = backend.backend
    cache = _CACHES.get(backend)
    if cache is None:
        cache = _CACHES[backend] = WeightCache()
    return cache


class BoundBackend:
    """A backend bound to a run: it fills in each call's seed, calls ``prepare_weight``
    once per weight tensor, and adapts v1 (two-argument) backends.

    Layers and workloads call ``bound.matmul(a, b, call)``; ``bind`` is idempotent,
    so code that receives either a raw or a bound backend can bind it again.
    """

    def __init__(self, backend: Any, seed: int = 0, cache_weights: bool = True):
        if isinstance(backend, BoundBackend):
            backend = backend.backend
        if not callable(getattr(backend, "matmul", None)):
            raise TypeError(f"a matmul backend needs a matmul method, got {type(backend).__name__}")
        self.backend = backend
        self.name = getattr(backend, "name", type(backend).__name__)
        self.seed = int(seed)
        self.v1 = not _takes_call(backend.matmul)
        self._prepare = None if self.v1 else getattr(backend, "prepare_weight", None)
        self.cache = weight_cache(backend) if cache_weights else None
        if self.v1 and type(backend) not in _WARNED:
            _WARNED.add(type(backend))
            warnings.warn(
                f"matmul backend {self.name!r} ({type(backend).__module__}.{type(backend).__qualname__}) "
                "implements the v1 contract matmul(a, b): it still runs, but gets no per-op context "
                "(op name, bit widths, epilogue, the run's seed) and no cached weight preparation. "
                "Define matmul(self, a, b, call) to receive a harness.numerics.GemmCall "
                "(docs/plugin_guide.md, 'Numerics').",
                ContractWarning,
                stacklevel=3,
            )

    def matmul(self, a: np.ndarray, b: np.ndarray, call: GemmCall | None = None) -> np.ndarray:
        if self.v1:
            return self.backend.matmul(a, b)
        call = call or GemmCall()
        if call.seed is None:
            call = dataclasses.replace(call, seed=derive_seed(self.seed, call.op, call.role))
        if self._prepare is not None and call.weight_stationary:
            if self.cache is None:
                prepared = self._prepare(b, call)
            else:
                prepared = self.cache.get(b, call, self._prepare)
            call = dataclasses.replace(call, prepared=prepared)
        return self.backend.matmul(a, b, call)

    def __repr__(self) -> str:
        return f"BoundBackend({self.backend!r}, seed={self.seed})"


def bind(backend: Any, seed: int | None = None, cache_weights: bool = True) -> BoundBackend:
    """``backend`` bound to a run seed (an already bound one is returned as is,
    unless a different ``seed`` is asked for)."""
    if isinstance(backend, BoundBackend) and (seed is None or seed == backend.seed):
        return backend
    return BoundBackend(backend, 0 if seed is None else seed, cache_weights)
