"""The plugin author's own test: the harness conformance kit on this plugin."""

import numpy as np
import pytest

from harness.runner import experiment_identity
from harness.testing import check_plugin
from harness.validation import ConfigError
from harness_example_bf16 import to_bfloat16


def test_bf16_conforms():
    check_plugin("accelerator", "bf16")


def test_rounding_is_to_nearest_even():
    # 1 + 2**-8 is halfway between two bfloat16 values: ties go to the even one (1.0).
    x = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, -2.5], dtype=np.float32)
    assert to_bfloat16(x).tolist() == [1.0, 1.0, 1 + 2**-6, -2.5]


def test_bad_values_are_refused_before_anything_runs():
    # The valid values declared on Bf16Config's fields, checked where the harness builds the config.
    choices = {"workload": "dot_products", "technique": "none", "accelerator": "bf16"}
    with pytest.raises(ConfigError, match=r"accelerator 'bf16': accelerator.clock_mhz=inf: valid is a finite number > 0"):
        experiment_identity(choices, {"accelerator": {"clock_mhz": float("inf")}})
