"""Property-based fuzzing of the public kernels (hypothesis), run by tests/test_fuzz.py in a child
interpreter so that a crash fails the test instead of killing the test run.

For drawn shapes, parameters, dtypes, memory layouts and bad values, every call must give
either the float64 NumPy reference's result (same shape and dtype, within the suite's
tolerances) or a TypeError / ValueError; any other exception fails, and so does a crash.
Seeded (derandomize): the same examples every run. Usage: python tests/fuzz_kernels.py
"""

import os
import sys

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fastconv  # noqa: E402
import reference as ref  # noqa: E402
from helpers import LAYOUTS, assert_close, with_layout  # noqa: E402

SETTINGS = settings(max_examples=int(os.environ.get("FASTCONV_FUZZ_EXAMPLES", "300")),
                    deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
DTYPES = st.sampled_from([np.float32, np.float64])
ACCEPTED = (TypeError, ValueError)


@st.composite
def conv_cases(draw):
    groups = draw(st.integers(1, 3))
    C, K = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    N, H, W = draw(st.integers(0, 2)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    R, S = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(st.one_of(st.tuples(st.integers(0, 3), st.integers(0, 3)),
                             st.sampled_from(["valid", "same"])))
    return dict(N=N, C=C, H=H, W=W, K=K, R=R, S=S, groups=groups, stride=stride,
                padding=padding, dilation=dilation, dtype=draw(DTYPES),
                layout=draw(st.sampled_from(LAYOUTS)), bias=draw(st.booleans()),
                seed=draw(st.integers(0, 2**31)))


def conv_output(case):
    """(Ho, Wo), or None where PyTorch rejects the arguments."""
    if case["padding"] == "same" and case["stride"] != (1, 1):
        return None
    (pt, pb), (pl, pr) = ref.resolve_conv_padding(case["padding"], (case["R"], case["S"]),
                                                  case["dilation"])
    Ho = ref.conv_out_size(case["H"], pt, pb, case["R"], case["stride"][0], case["dilation"][0])
    Wo = ref.conv_out_size(case["W"], pl, pr, case["S"], case["stride"][1], case["dilation"][1])
    return (Ho, Wo) if Ho >= 1 and Wo >= 1 else None


@SETTINGS
@given(conv_cases())
def fuzz_conv2d_and_its_gradients(case):
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    N, C, H, W, K, R, S, G = (case[k] for k in "N C H W K R S groups".split())
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // G, R, S)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype) if case["bias"] else None
    p = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
             groups=G)
    out = conv_output(case)
    lx, lw = with_layout(x, case["layout"]), with_layout(w, case["layout"])
    if out is None:
        try:
            fastconv.conv2d(lx, lw, b, **p)
        except ACCEPTED:
            return
        raise AssertionError(f"conv2d accepted arguments PyTorch rejects: {case}")
    want = ref.conv2d(x, w, b, **p)
    assert_close(fastconv.conv2d(lx, lw, b, **p), want, dtype, (C // G) * R * S, f"{case}")
    dy = rng.standard_normal(want.shape).astype(dtype)
    ldy = with_layout(dy, case["layout"])
    assert_close(fastconv.conv2d_input_grad(x.shape, lw, ldy, **p),
                 ref.conv2d_input_grad(x.shape, w, dy, **p), dtype, (K // G) * R * S,
                 f"input_grad {case}")
    assert_close(fastconv.conv2d_weight_grad(lx, w.shape, ldy, **p),
                 ref.conv2d_weight_grad(x, w.shape, dy, **p), dtype,
                 max(N * out[0] * out[1], 1), f"weight_grad {case}")


@st.composite
def pool_cases(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    H = draw(st.integers(max(1, dilation[0] * (kh - 1) + 1 - 2 * padding[0]), 10))
    W = draw(st.integers(max(1, dilation[1] * (kw - 1) + 1 - 2 * padding[1]), 10))
    return dict(shape=(draw(st.integers(0, 2)), draw(st.integers(1, 3)), H, W),
                kernel_size=(kh, kw), stride=stride, padding=padding, dilation=dilation,
                ceil_mode=draw(st.booleans()), dtype=draw(DTYPES),
                layout=draw(st.sampled_from(LAYOUTS)), seed=draw(st.integers(0, 2**31)))


@SETTINGS
@given(pool_cases())
def fuzz_pooling(case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"]).astype(case["dtype"])
    lx = with_layout(x, case["layout"])
    opts = {k: case[k] for k in ("kernel_size", "stride", "padding", "ceil_mode")}
    y, idx = fastconv.max_pool2d(lx, dilation=case["dilation"], return_indices=True, **opts)
    if ref.max_pool_has_empty_window(*x.shape[2:], dilation=case["dilation"], **opts):
        return  # a window over padding only: PyTorch's result there is an accident of its loop
    want_y, want_idx = ref.max_pool2d(x, dilation=case["dilation"], return_indices=True, **opts)
    assert y.shape == want_y.shape and y.dtype == x.dtype, case
    np.testing.assert_array_equal(y, want_y, err_msg=str(case))
    np.testing.assert_array_equal(idx, want_idx, err_msg=str(case))
    dy = rng.standard_normal(y.shape).astype(case["dtype"])
    assert_close(fastconv.max_pool2d_backward(with_layout(dy, case["layout"]), idx, x.shape),
                 ref.max_pool2d_backward(dy, idx, x.shape), case["dtype"], 16, str(case))
    assert_close(fastconv.avg_pool2d(lx, **opts), ref.avg_pool2d(x, **opts), case["dtype"], 16,
                 str(case))
    dy = rng.standard_normal(ref.avg_pool2d(x, **opts).shape).astype(case["dtype"])
    assert_close(fastconv.avg_pool2d_backward(dy, x.shape, **opts),
                 ref.avg_pool2d_backward(dy, x.shape, **opts), case["dtype"], 16, str(case))


# Bad values: each replaces one argument of a valid call.
BAD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 0), st.integers(2**62, 2**63 + 5),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3),
    st.tuples(st.integers(-2, 3)), st.tuples(st.integers(-2, 3), st.integers(-2, 3),
                                             st.integers(-2, 3)),
    st.sampled_from([np.zeros((2, 3), np.float32), np.zeros((1, 2, 5, 5), np.int32),
                     np.zeros((1, 2, 5, 5), np.float16), np.zeros((1, 2, 5, 5), np.complex64),
                     np.zeros((1, 2, 5, 5), object), np.zeros((1, 2, 5, 5), np.float64),
                     np.zeros((0, 0, 0, 0), np.float32), [[1.0, 2.0]], "x"]))

CALLS = {
    "conv2d": (lambda a: fastconv.conv2d(a["input"], a["weight"], a["bias"], a["stride"],
                                         a["padding"], a["dilation"], a["groups"])),
    "conv2d_input_grad": (lambda a: fastconv.conv2d_input_grad(
        a["input_shape"], a["weight"], a["grad_output"], a["stride"], a["padding"],
        a["dilation"], a["groups"])),
    "conv2d_weight_grad": (lambda a: fastconv.conv2d_weight_grad(
        a["input"], a["weight_shape"], a["grad_output"], a["stride"], a["padding"],
        a["dilation"], a["groups"])),
    "conv_transpose2d": (lambda a: fastconv.conv_transpose2d(
        a["grad_output"], a["weight"], None, a["stride"], a["padding"], 0, a["groups"],
        a["dilation"])),
    "max_pool2d": (lambda a: fastconv.max_pool2d(a["input"], a["kernel"], a["stride"],
                                                 a["padding"], a["dilation"],
                                                 return_indices=True)),
    "avg_pool2d": (lambda a: fastconv.avg_pool2d(a["input"], a["kernel"], a["stride"],
                                                 a["padding"])),
    "max_pool2d_backward": (lambda a: fastconv.max_pool2d_backward(a["pooled"], a["indices"],
                                                                   a["input_shape"])),
    "avg_pool2d_backward": (lambda a: fastconv.avg_pool2d_backward(a["pooled"], a["input_shape"],
                                                                   a["kernel"])),
    "relu_backward": (lambda a: fastconv.relu_backward(a["grad_output"], a["input"])),
    "conv2d_bias_grad": (lambda a: fastconv.conv2d_bias_grad(a["grad_output"])),
    "matmul": (lambda a: fastconv.matmul(a["weight"], a["input"])),
}


def valid_arguments():
    x = np.ones((1, 2, 5, 5), np.float32)
    pooled, indices = fastconv.max_pool2d(x, 2, return_indices=True)
    return {"input": x, "weight": np.ones((3, 2, 3, 3), np.float32),
            "bias": np.ones(3, np.float32), "stride": 1, "padding": 1, "dilation": 1,
            "groups": 1, "input_shape": x.shape, "weight_shape": (3, 2, 3, 3),
            "grad_output": np.ones((1, 3, 5, 5), np.float32), "kernel": 2,
            "pooled": pooled, "indices": indices}


@SETTINGS
@given(st.sampled_from(sorted(CALLS)), st.sampled_from(sorted(valid_arguments())), BAD_VALUES)
def fuzz_bad_values(name, argument, value):
    arguments = valid_arguments()
    arguments[argument] = value
    try:
        result = CALLS[name](arguments)
    except ACCEPTED:
        return
    # Accepted: then it must be a well-formed result (some replacements are valid values).
    results = result if isinstance(result, tuple) else (result,)
    for r in results:
        assert isinstance(r, np.ndarray), (name, argument, value, type(r))
        assert r.dtype in (np.float32, np.float64, np.int64), (name, argument, value, r.dtype)


if __name__ == "__main__":
    for fuzz in (fuzz_conv2d_and_its_gradients, fuzz_pooling, fuzz_bad_values):
        fuzz()
        print(f"{fuzz.__name__}: ok", flush=True)
