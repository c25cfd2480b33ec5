"""Shared test helpers: tolerances, memory layouts, seeded data, subprocess runner."""

import math
import os
import subprocess
import sys
import textwrap

import numpy as np

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

DTYPES = (np.float32, np.float64)
LAYOUTS = ("C", "F", "slice", "transposed", "reversed", "nhwc")


# ---------------------------------------------------------------------------
# tolerances
# ---------------------------------------------------------------------------
def tols(dtype, red=1):
    """rtol/atol for a result that is a sum of ``red`` products of O(1) terms.

    float32: rtol 1e-4, atol 1e-4 * max(1, sqrt(red)/4)
    float64: rtol 1e-10, atol 1e-10 * max(1, sqrt(red)/4)
    """
    scale = max(1.0, math.sqrt(max(red, 1)) / 4.0)
    if np.dtype(dtype) == np.float32:
        return dict(rtol=1e-4, atol=1e-4 * scale)
    assert np.dtype(dtype) == np.float64, dtype
    return dict(rtol=1e-10, atol=1e-10 * scale)


def assert_close(got, want, dtype, red=1, what=""):
    """Check dtype, shape, type and values of a fastconv result against a reference."""
    assert isinstance(got, np.ndarray), f"{what}: expected ndarray, got {type(got)}"
    assert got.dtype == np.dtype(dtype), f"{what}: dtype {got.dtype} != {np.dtype(dtype)}"
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got.astype(np.float64), want, err_msg=what, equal_nan=True,
                               **tols(dtype, red))


def assert_bitwise_equal(a, b, what=""):
    assert a.dtype == b.dtype and a.shape == b.shape, what
    assert a.tobytes() == b.tobytes(), f"{what}: results are not bitwise identical"


def at_thread_counts(call, counts=(1, 2, 3)):
    """call() run at each thread count in turn (the count restored after): its results."""
    import fastconv
    n0 = fastconv.get_num_threads()
    results = []
    try:
        for threads in counts:
            fastconv.set_num_threads(threads)
            results.append(call())
    finally:
        fastconv.set_num_threads(n0)
    return results


# ---------------------------------------------------------------------------
# data / layouts
# ---------------------------------------------------------------------------
def rand(rng, shape, dtype):
    """Standard-normal data in ``dtype`` (values exactly representable in it)."""
    return rng.standard_normal(shape).astype(dtype)


def with_layout(a, layout):
    """Return an array equal to ``a`` but with the requested memory layout.

    'C' contiguous, 'F' Fortran order, 'slice' every other element of a
    NaN-filled buffer (non-unit innermost stride), 'transposed' last two axes
    swapped in memory, 'reversed' negative innermost stride, 'nhwc' channels
    last in memory (4-D only; falls back to 'transposed' otherwise).
    """
    a = np.asarray(a)
    if layout == "C":
        out = np.ascontiguousarray(a)
    elif layout == "F":
        out = np.asfortranarray(a)
        if a.ndim > 1 and a.size > 1 and a.shape.count(1) < a.ndim - 1:
            assert not out.flags.c_contiguous
    elif layout == "slice":
        fill = np.nan if a.dtype.kind == "f" else -12345
        big = np.full(a.shape[:-1] + (2 * a.shape[-1] + 1,), fill, dtype=a.dtype)
        big[..., 1::2] = a
        out = big[..., 1::2]
    elif layout == "transposed":
        if a.ndim < 2:
            return with_layout(a, "slice")
        out = np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
    elif layout == "reversed":
        out = np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    elif layout == "nhwc":
        if a.ndim != 4:
            return with_layout(a, "transposed")
        out = np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    else:
        raise ValueError(layout)
    assert out.shape == a.shape and out.dtype == a.dtype
    np.testing.assert_array_equal(out, a)
    return out


def fmt(v):
    if isinstance(v, tuple):
        return "x".join(str(i) for i in v)
    return str(v)


# ---------------------------------------------------------------------------
# subprocess
# ---------------------------------------------------------------------------
CHILD_PRELUDE = f"""
import sys
sys.path.insert(0, {TESTS_DIR!r})
import numpy as np
import fastconv
"""


def run_child(code, env_update=None, timeout=180):
    """Run ``code`` in a fresh interpreter (fastconv and numpy pre-imported).

    ``env_update`` maps variable -> value (None removes the variable)."""
    env = dict(os.environ)
    for k, v in (env_update or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    full = CHILD_PRELUDE + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", full], capture_output=True, text=True,
                          timeout=timeout, env=env)


def child_report(proc):
    return (f"returncode={proc.returncode}\n--- stdout ---\n{proc.stdout}\n"
            f"--- stderr ---\n{proc.stderr[-4000:]}")
