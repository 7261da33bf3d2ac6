"""Numerics shared by plugins: matmul backends, quantizers, bit kernels."""

from harness.numerics.backend import EXACT, ExactBackend, MatmulBackend, is_integer_input

__all__ = ["EXACT", "ExactBackend", "MatmulBackend", "is_integer_input"]
