"""Runs the hypothesis fuzzing of tests/fuzz_kernels.py in a child interpreter: a crash there
(a negative exit status) fails this test instead of killing the whole test run."""

import os
import subprocess
import sys

import pytest

from helpers import child_report


def test_fuzzed_calls_match_the_references_or_raise_type_or_value_errors():
    pytest.importorskip("hypothesis")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_kernels.py")
    proc = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, child_report(proc)
    for name in ("fuzz_conv2d_and_its_gradients", "fuzz_pooling", "fuzz_bad_values"):
        assert f"{name}: ok" in proc.stdout, child_report(proc)
