"""The plugin author's own test: the harness conformance kit on this plugin."""

import numpy as np

from harness.testing import check_plugin
from harness_example_bf16 import to_bfloat16


def test_bf16_conforms():
    check_plugin("accelerator", "bf16")


def test_rounding_is_to_nearest_even():
    # 1 + 2**-8 is halfway between two bfloat16 values: ties go to the even one (1.0).
    x = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, -2.5], dtype=np.float32)
    assert to_bfloat16(x).tolist() == [1.0, 1.0, 1 + 2**-6, -2.5]
