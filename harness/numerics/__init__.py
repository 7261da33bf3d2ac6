"""Numerics shared by plugins: matmul backends and their per-call context, quantizers, bit kernels."""

from harness.numerics.backend import (
    EXACT,
    ROLES,
    BoundBackend,
    ContractWarning,
    ExactBackend,
    GemmCall,
    MatmulBackend,
    bind,
    derive_seed,
    is_integer_input,
    weight_cache,
)

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
    "weight_cache",
]
