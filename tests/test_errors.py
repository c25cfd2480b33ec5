"""Input validation (exception types and messages), input immutability, fresh
results, determinism and empty batches.

Crash-prone cases (huge / negative sizes, out-of-range indices, mismatched
shapes, zero-size dims, absurd strides) run in a child interpreter, so that a
segfault or an abort fails one test instead of killing the whole run.
"""

import re

import numpy as np
import pytest

import fastconv
from helpers import child_report, run_child

# Standard arrays shared by the in-process and the child cases.
SETUP = """
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 8, 8))
w = rng.standard_normal((4, 3, 3, 3))
b = rng.standard_normal(4)
x32, w32, b32 = x.astype(np.float32), w.astype(np.float32), b.astype(np.float32)
go = rng.standard_normal((2, 4, 6, 6))            # conv2d(x, w) output shape
go32 = go.astype(np.float32)
wt = rng.standard_normal((3, 2, 3, 3))            # conv_transpose2d weight for x: C_in=3
p = rng.standard_normal((2, 3, 8, 8))             # pooling input
pgo = rng.standard_normal((2, 3, 4, 4))           # max/avg_pool2d(p, 2) output shape
pidx = np.zeros((2, 3, 4, 4), dtype=np.int64)     # valid indices into 8x8 planes
"""

ANY_ARG = r"(?i)input|weight|bias|grad_output|dtype|float"

# (expression, exception, match regex)
TYPE_CASES = [
    ("fastconv.conv2d(x.astype(np.int32), w)", TypeError, ANY_ARG),
    ("fastconv.conv2d(x.astype(np.int64), w.astype(np.int64))", TypeError, ANY_ARG),
    ("fastconv.conv2d(x.astype(np.float16), w.astype(np.float16))", TypeError, ANY_ARG),
    ("fastconv.conv2d(x > 0, w)", TypeError, ANY_ARG),
    ("fastconv.conv2d(x.astype(np.complex128), w)", TypeError, ANY_ARG),
    ("fastconv.conv2d(x, w.astype(np.int32))", TypeError, ANY_ARG),
    ("fastconv.conv2d(x32, w)", TypeError, ANY_ARG),
    ("fastconv.conv2d(x, w32)", TypeError, ANY_ARG),
    ("fastconv.conv2d(x32, w32, b)", TypeError, ANY_ARG),
    ("fastconv.conv2d(x, w, b32)", TypeError, ANY_ARG),
    ("fastconv.conv2d(x, w, b.astype(np.int64))", TypeError, ANY_ARG),
    ("fastconv.conv2d_input_grad(x.shape, w32, go)", TypeError, ANY_ARG),
    ("fastconv.conv2d_input_grad(x.shape, w, go32)", TypeError, ANY_ARG),
    ("fastconv.conv2d_input_grad(x.shape, w.astype(np.float16), go.astype(np.float16))",
     TypeError, ANY_ARG),
    ("fastconv.conv2d_weight_grad(x32, w.shape, go)", TypeError, ANY_ARG),
    ("fastconv.conv2d_weight_grad(x, w.shape, go32)", TypeError, ANY_ARG),
    ("fastconv.conv2d_weight_grad(x.astype(np.int32), w.shape, go.astype(np.int32))",
     TypeError, ANY_ARG),
    ("fastconv.conv_transpose2d(x32, wt)", TypeError, ANY_ARG),
    ("fastconv.conv_transpose2d(x, wt, np.zeros(2, np.float32))", TypeError, ANY_ARG),
    ("fastconv.conv_transpose2d(x.astype(np.int16), wt.astype(np.int16))", TypeError, ANY_ARG),
    ("fastconv.max_pool2d(p.astype(np.int32), 2)", TypeError, ANY_ARG),
    ("fastconv.max_pool2d(p.astype(np.float16), 2)", TypeError, ANY_ARG),
    ("fastconv.max_pool2d(p > 0, 2)", TypeError, ANY_ARG),
    ("fastconv.avg_pool2d(p.astype(np.int64), 2)", TypeError, ANY_ARG),
    ("fastconv.avg_pool2d(p.astype(np.float16), 2)", TypeError, ANY_ARG),
    ("fastconv.max_pool2d_backward(pgo.astype(np.int32), pidx, p.shape)", TypeError, ANY_ARG),
    ("fastconv.max_pool2d_backward(pgo.astype(np.float16), pidx, p.shape)", TypeError, ANY_ARG),
    ("fastconv.avg_pool2d_backward(pgo.astype(np.int32), p.shape, 2)", TypeError, ANY_ARG),
    ("fastconv.avg_pool2d_backward(pgo.astype(np.float16), p.shape, 2)", TypeError, ANY_ARG),
]

CHAN = r"(?i)channel|input|weight|groups"
OUTSZ = r"(?i)output|kernel|size|small|input"
VALUE_CASES = [
    # ndim
    ("fastconv.conv2d(x[0, 0], w)", r"(?i)input"),
    ("fastconv.conv2d(x[None], w)", r"(?i)input"),
    ("fastconv.conv2d(x, w[0])", r"(?i)weight"),
    ("fastconv.conv2d(x, w[None])", r"(?i)weight"),
    ("fastconv.conv2d(x, w, b[None])", r"(?i)bias"),
    ("fastconv.conv2d_input_grad(x.shape, w, go[0])", r"(?i)grad_output"),
    ("fastconv.conv2d_input_grad(x.shape, w[0], go)", r"(?i)weight"),
    ("fastconv.conv2d_weight_grad(x[0], w.shape, go)", r"(?i)input"),
    ("fastconv.conv2d_weight_grad(x, w.shape, go[0])", r"(?i)grad_output"),
    ("fastconv.conv_transpose2d(x[0, 0], wt)", r"(?i)input"),
    ("fastconv.conv_transpose2d(x, wt[0])", r"(?i)weight"),
    ("fastconv.max_pool2d(p[0, 0], 2)", r"(?i)input"),
    ("fastconv.max_pool2d(p[None], 2)", r"(?i)input"),
    ("fastconv.avg_pool2d(p[0, 0], 2)", r"(?i)input"),
    ("fastconv.avg_pool2d(p[None], 2)", r"(?i)input"),
    # channels / groups
    ("fastconv.conv2d(x, w[:, :2])", CHAN),
    ("fastconv.conv2d(x[:, :2], w)", CHAN),
    ("fastconv.conv2d(x, w, groups=3)", CHAN),                      # 3 != 3 * 3
    ("fastconv.conv2d(x[:, :2], rng.standard_normal((3, 1, 3, 3)), groups=2)",
     r"(?i)groups|weight|out"),                                      # K=3 % 2
    ("fastconv.conv2d(rng.standard_normal((1, 4, 5, 5)), "
     "rng.standard_normal((4, 1, 3, 3)), groups=3)", CHAN),          # 4 % 3
    ("fastconv.conv2d(x, w, groups=0)", r"(?i)groups"),
    ("fastconv.conv2d(x, w, groups=-1)", r"(?i)groups"),
    ("fastconv.conv2d_input_grad(x.shape, w[:, :2], go)", CHAN),
    ("fastconv.conv2d_input_grad(x.shape, w, go, groups=0)", r"(?i)groups"),
    ("fastconv.conv2d_weight_grad(x, (4, 2, 3, 3), go)", CHAN),
    ("fastconv.conv2d_weight_grad(x, w.shape, go, groups=0)", r"(?i)groups"),
    ("fastconv.conv_transpose2d(x, wt[:2])", CHAN),
    ("fastconv.conv_transpose2d(x, wt, groups=2)", CHAN),            # 3 % 2
    ("fastconv.conv_transpose2d(x, wt, groups=0)", r"(?i)groups"),
    # stride / dilation / padding
    ("fastconv.conv2d(x, w, stride=0)", r"(?i)stride"),
    ("fastconv.conv2d(x, w, stride=-1)", r"(?i)stride"),
    ("fastconv.conv2d(x, w, stride=(1, 0))", r"(?i)stride"),
    ("fastconv.conv2d(x, w, dilation=0)", r"(?i)dilation"),
    ("fastconv.conv2d(x, w, dilation=(1, -2))", r"(?i)dilation"),
    ("fastconv.conv2d(x, w, padding=-1)", r"(?i)padding"),
    ("fastconv.conv2d(x, w, padding=(0, -1))", r"(?i)padding"),
    ("fastconv.conv2d(x, w, padding='full')", r"(?i)padding"),
    ("fastconv.conv2d(x, w, padding='SAME ')", r"(?i)padding"),
    ("fastconv.conv2d(x, w, padding='same', stride=2)", r"(?i)same|stride|padding"),
    ("fastconv.conv2d(x, w, padding='same', stride=(1, 2))", r"(?i)same|stride|padding"),
    ("fastconv.conv2d_input_grad(x.shape, w, go, stride=0)", r"(?i)stride"),
    ("fastconv.conv2d_input_grad(x.shape, w, go, padding=-1)", r"(?i)padding"),
    ("fastconv.conv2d_input_grad(x.shape, w, go, dilation=0)", r"(?i)dilation"),
    ("fastconv.conv2d_weight_grad(x, w.shape, go, stride=0)", r"(?i)stride"),
    ("fastconv.conv2d_weight_grad(x, w.shape, go, padding=-1)", r"(?i)padding"),
    ("fastconv.conv2d_weight_grad(x, w.shape, go, dilation=0)", r"(?i)dilation"),
    ("fastconv.conv_transpose2d(x, wt, stride=0)", r"(?i)stride"),
    ("fastconv.conv_transpose2d(x, wt, padding=-1)", r"(?i)padding"),
    ("fastconv.conv_transpose2d(x, wt, dilation=0)", r"(?i)dilation"),
    ("fastconv.conv_transpose2d(x, wt, stride=2, output_padding=2)", r"(?i)output_padding"),
    ("fastconv.conv_transpose2d(x, wt, stride=1, output_padding=1)", r"(?i)output_padding"),
    ("fastconv.conv_transpose2d(x, wt, stride=2, dilation=3, output_padding=3)",
     r"(?i)output_padding"),
    ("fastconv.conv_transpose2d(x, wt, stride=(2, 1), output_padding=(1, 1))",
     r"(?i)output_padding"),
    ("fastconv.conv_transpose2d(x, wt, output_padding=-1)", r"(?i)output_padding"),
    # bias
    ("fastconv.conv2d(x, w, b[:3])", r"(?i)bias"),
    ("fastconv.conv2d(x, w, np.zeros(5))", r"(?i)bias"),
    ("fastconv.conv_transpose2d(x, wt, np.zeros(3))", r"(?i)bias"),
    # pools
    ("fastconv.max_pool2d(p, 2, padding=2)", r"(?i)padding"),
    ("fastconv.max_pool2d(p, 3, padding=(1, 2))", r"(?i)padding"),
    ("fastconv.max_pool2d(p, 3, padding=-1)", r"(?i)padding"),
    ("fastconv.max_pool2d(p, 0)", r"(?i)kernel"),
    ("fastconv.max_pool2d(p, (2, -1))", r"(?i)kernel"),
    ("fastconv.max_pool2d(p, 2, stride=0)", r"(?i)stride"),
    ("fastconv.max_pool2d(p, 2, dilation=0)", r"(?i)dilation"),
    ("fastconv.avg_pool2d(p, 2, padding=2)", r"(?i)padding"),
    ("fastconv.avg_pool2d(p, (3, 2), padding=(1, 2))", r"(?i)padding"),
    ("fastconv.avg_pool2d(p, 2, padding=-1)", r"(?i)padding"),
    ("fastconv.avg_pool2d(p, 0)", r"(?i)kernel"),
    ("fastconv.avg_pool2d(p, 2, stride=-2)", r"(?i)stride"),
    ("fastconv.avg_pool2d_backward(pgo, p.shape, 2, padding=2)", r"(?i)padding"),
    ("fastconv.avg_pool2d_backward(pgo, p.shape, 0)", r"(?i)kernel"),
]

_ns_cache = {}


def _ns():
    if not _ns_cache:
        ns = {"np": np, "fastconv": fastconv}
        exec(SETUP, ns)
        _ns_cache.update(ns)
    return dict(_ns_cache)


PREFLIGHT_TEMPLATE = """
{setup}
exprs = {exprs!r}
for i in range({start}, len(exprs)):
    print("START", i, flush=True)
    try:
        eval(exprs[i])
    except BaseException:
        pass
    print("OK", i, flush=True)
"""

_preflight = {}


def _crashes_in_child(expr):
    """Run all in-process cases once in child interpreters first: the cases that crash
    a child are reported as failures instead of being run (and crashing pytest)."""
    if not _preflight:
        exprs = [c[0] for c in TYPE_CASES] + [c[0] for c in VALUE_CASES]
        start = 0
        while start < len(exprs):
            proc = run_child(PREFLIGHT_TEMPLATE.format(setup=SETUP, exprs=exprs, start=start))
            done = [int(m) for m in re.findall(r"^OK (\d+)$", proc.stdout, re.M)]
            for i in done:
                _preflight[exprs[i]] = None
            if proc.returncode == 0:
                break
            started = [int(m) for m in re.findall(r"^START (\d+)$", proc.stdout, re.M)]
            bad = max(started) if started else start
            _preflight[exprs[bad]] = child_report(proc)
            start = bad + 1
    return _preflight.get(expr)


@pytest.mark.parametrize("expr,exc,match", TYPE_CASES, ids=[c[0] for c in TYPE_CASES])
def test_type_errors(expr, exc, match):
    crash = _crashes_in_child(expr)
    assert crash is None, "this call crashes the interpreter:\n" + crash
    with pytest.raises(exc, match=match):
        eval(expr, _ns())


@pytest.mark.parametrize("expr,match", VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_value_errors(expr, match):
    crash = _crashes_in_child(expr)
    assert crash is None, "this call crashes the interpreter:\n" + crash
    with pytest.raises(ValueError, match=match):
        eval(expr, _ns())


# ---------------------------------------------------------------------------
# crash-prone cases, run in a child interpreter
# ---------------------------------------------------------------------------
# (expression, accepted exception names, message regex or None)
VE = ("ValueError",)
HUGE = ("ValueError", "OverflowError", "MemoryError")
CRASH_CASES = [
    # huge / negative padding
    ("fastconv.conv2d(x, w, padding=2**40)", HUGE, None),
    ("fastconv.conv2d(x, w, padding=2**62)", HUGE, None),
    ("fastconv.conv2d(x, w, padding=(0, 2**62))", HUGE, None),
    ("fastconv.conv2d(x, w, padding=-2**40)", VE, r"(?i)padding"),
    ("fastconv.conv2d(x, w, padding=-2**62)", ("ValueError", "OverflowError"), r"(?i)padding"),
    ("fastconv.conv2d_input_grad(x.shape, w, go, padding=2**62)", HUGE, None),
    ("fastconv.conv2d_weight_grad(x, w.shape, go, padding=2**62)", HUGE, None),
    ("fastconv.conv_transpose2d(x, wt, padding=2**40)", VE, OUTSZ + "|padding"),
    ("fastconv.conv_transpose2d(x, wt, padding=5)", VE, OUTSZ + "|padding"),
    ("fastconv.max_pool2d(p, 2, padding=2**40)", VE, r"(?i)padding"),
    ("fastconv.max_pool2d(p, 2, padding=-2**62)", ("ValueError", "OverflowError"),
     r"(?i)padding"),
    ("fastconv.avg_pool2d(p, 2, padding=2**62)", ("ValueError", "OverflowError"),
     r"(?i)padding"),
    # integers beyond int64 (or near it) are refused by name before reaching the kernels
    ("fastconv.conv2d(x, w, stride=2**64)", VE, r"stride"),
    ("fastconv.conv2d(x, w, padding=(0, 2**63))", VE, r"padding"),
    ("fastconv.conv2d(x, w, groups=2**64)", VE, r"groups"),
    ("fastconv.conv2d_input_grad((2, 3, 2**63, 8), w, go)", VE, r"input_shape"),
    ("fastconv.max_pool2d(p, 3, stride=2**64)", VE, r"stride"),
    ("fastconv.avg_pool2d(p, 2, divisor_override=2**64)", VE, r"divisor_override"),
    # kernels larger than the (padded) input
    ("fastconv.conv2d(x, rng.standard_normal((4, 3, 9, 3)))", VE, OUTSZ),
    ("fastconv.conv2d(x, rng.standard_normal((4, 3, 3, 11)), padding=1)", VE, OUTSZ),
    ("fastconv.conv2d(x, w, dilation=5)", VE, OUTSZ + "|dilation"),
    ("fastconv.conv2d(x, w, dilation=2**40)", HUGE, None),
    ("fastconv.conv2d(x, w, dilation=2**62)", HUGE, None),
    ("fastconv.conv2d_input_grad(x.shape, rng.standard_normal((4, 3, 9, 9)), go)", VE, None),
    ("fastconv.conv2d_weight_grad(x, (4, 3, 9, 9), go)", VE, None),
    ("fastconv.max_pool2d(p, 9)", VE, OUTSZ),
    ("fastconv.max_pool2d(p, 3, dilation=4)", VE, OUTSZ + "|dilation"),
    ("fastconv.max_pool2d(p, 2**40)", VE, OUTSZ),
    ("fastconv.max_pool2d(p, 2**62, padding=2**62)", ("ValueError", "OverflowError"), None),
    ("fastconv.avg_pool2d(p, 9)", VE, OUTSZ),
    ("fastconv.avg_pool2d(p, (2, 2**40))", VE, OUTSZ),
    # zero-size spatial / kernel dims
    ("fastconv.conv2d(np.zeros((1, 3, 0, 8)), w)", VE, OUTSZ),
    ("fastconv.conv2d(np.zeros((1, 3, 8, 0)), w, padding=1)", VE, OUTSZ),
    ("fastconv.conv2d(x, np.zeros((4, 3, 0, 3)))", VE, r"(?i)weight|kernel"),
    ("fastconv.conv2d_input_grad((2, 3, 0, 8), w, go)", VE, None),
    ("fastconv.conv2d_weight_grad(x, (4, 3, 3, 0), go)", VE, None),
    ("fastconv.max_pool2d(np.zeros((1, 3, 0, 8)), 2)", VE, OUTSZ),
    ("fastconv.avg_pool2d(np.zeros((1, 3, 8, 0)), 1)", VE, OUTSZ),
    # out-of-range / mismatched indices
    ("fastconv.max_pool2d_backward(pgo, pidx + 64, p.shape)", VE, r"(?i)indices|range"),
    ("fastconv.max_pool2d_backward(pgo, pidx - 1, p.shape)", VE, r"(?i)indices|range"),
    ("fastconv.max_pool2d_backward(pgo, pidx + 2**40, p.shape)", VE, r"(?i)indices|range"),
    ("fastconv.max_pool2d_backward(pgo, pidx + 16, (2, 3, 4, 4))", VE,
     r"(?i)indices|range|grad_output|shape"),
    ("fastconv.max_pool2d_backward(pgo, pidx[:1], p.shape)", VE, r"(?i)indices|shape"),
    ("fastconv.max_pool2d_backward(pgo, pidx[:, :, :3], p.shape)", VE, r"(?i)indices|shape"),
    ("fastconv.max_pool2d_backward(pgo[:, :, :3], pidx, p.shape)", VE,
     r"(?i)indices|grad_output|shape"),
    ("fastconv.max_pool2d_backward(pgo, pidx, (1, 3, 8, 8))", VE,
     r"(?i)grad_output|input_shape|shape"),
    ("fastconv.max_pool2d_backward(pgo, pidx, (2, 2, 8, 8))", VE,
     r"(?i)grad_output|input_shape|shape"),
    # mismatched grad_output shapes
    ("fastconv.conv2d_input_grad(x.shape, w, go[:, :, :5])", VE, r"(?i)grad_output"),
    ("fastconv.conv2d_input_grad(x.shape, w, go[:1])", VE, r"(?i)grad_output"),
    ("fastconv.conv2d_input_grad(x.shape, w, go[:, :3])", VE, r"(?i)grad_output|weight"),
    ("fastconv.conv2d_input_grad((2, 3, 20, 20), w, go)", VE, r"(?i)grad_output"),
    ("fastconv.conv2d_input_grad(x.shape, w, go, stride=2)", VE, r"(?i)grad_output"),
    ("fastconv.conv2d_input_grad((2, 3, 8), w, go)", VE, r"(?i)input_shape|input|shape"),
    ("fastconv.conv2d_weight_grad(x, w.shape, go[:, :, :, :5])", VE, r"(?i)grad_output"),
    ("fastconv.conv2d_weight_grad(x, w.shape, go[:1])", VE, r"(?i)grad_output"),
    ("fastconv.conv2d_weight_grad(x, (5, 3, 3, 3), go)", VE, r"(?i)grad_output|weight"),
    ("fastconv.conv2d_weight_grad(x, w.shape, go, padding=1)", VE, r"(?i)grad_output"),
    ("fastconv.conv2d_weight_grad(x, (4, 3, 3), go)", VE, r"(?i)weight_shape|weight|shape"),
    ("fastconv.avg_pool2d_backward(pgo[:, :, :3], p.shape, 2)", VE, r"(?i)grad_output"),
    ("fastconv.avg_pool2d_backward(pgo, (1, 3, 8, 8), 2)", VE, r"(?i)grad_output"),
    ("fastconv.avg_pool2d_backward(pgo, p.shape, 2, stride=1)", VE, r"(?i)grad_output"),
    # absurd strides that cannot be represented
    ("fastconv.conv2d(x, w, stride=2**63)", ("ValueError", "OverflowError", "TypeError"), None),
    ("fastconv.max_pool2d(p, 2, stride=2**64)", ("ValueError", "OverflowError", "TypeError"),
     None),
]

CHILD_TEMPLATE = """
{setup}
try:
    r = {expr}
except BaseException as e:
    print("RAISED", type(e).__name__)
    print("MSG", str(e).replace("\\n", " "))
else:
    print("NORAISE", type(r).__name__, getattr(r, "shape", None))
"""


@pytest.mark.parametrize("expr,names,match", CRASH_CASES, ids=[c[0] for c in CRASH_CASES])
def test_crash_prone_inputs_raise(expr, names, match):
    proc = run_child(CHILD_TEMPLATE.format(setup=SETUP, expr=expr))
    report = child_report(proc)
    assert proc.returncode == 0, "child crashed\n" + report
    m = re.search(r"^RAISED (\w+)$", proc.stdout, re.M)
    assert m, "no exception raised\n" + report
    assert m.group(1) in names, f"raised {m.group(1)}, expected one of {names}\n" + report
    if match:
        msg = re.search(r"^MSG (.*)$", proc.stdout, re.M).group(1)
        assert re.search(match, msg), f"message {msg!r} does not match {match!r}"


def test_conv_transpose2d_zero_height_input():
    """H == 0: PyTorch raises ("Only zero batch or zero channel inputs are supported"), and so
    does fastconv, although the output-size formula alone would give 2 rows here."""
    proc = run_child(CHILD_TEMPLATE.format(setup=SETUP, expr="fastconv.conv_transpose2d("
                                           "np.zeros((1, 3, 0, 4)), wt)"))
    assert proc.returncode == 0, child_report(proc)
    assert "RAISED ValueError" in proc.stdout, child_report(proc)


# absurd but *valid* strides: output 1x1 (only the first window)
VALID_HUGE = [
    ("fastconv.conv2d(x, w, b, stride=2**40)", "ref.conv2d(x, w, b, stride=2**40)"),
    ("fastconv.conv2d(x, w, b, stride=(1, 2**62))", "ref.conv2d(x, w, b, stride=(1, 2**62))"),
    ("fastconv.conv2d_input_grad(x.shape, w, go[:, :, :1, :1], stride=2**40)",
     "ref.conv2d_input_grad(x.shape, w, go[:, :, :1, :1], stride=2**40)"),
    ("fastconv.conv2d_weight_grad(x, w.shape, go[:, :, :1, :1], stride=2**40)",
     "ref.conv2d_weight_grad(x, w.shape, go[:, :, :1, :1], stride=2**40)"),
    ("fastconv.max_pool2d(p, 3, stride=2**40)", "ref.max_pool2d(p, 3, stride=2**40)"),
    ("fastconv.avg_pool2d(p, 3, stride=2**40)", "ref.avg_pool2d(p, 3, stride=2**40)"),
    ("fastconv.avg_pool2d(p, 3, stride=2**62, padding=1, ceil_mode=True)",
     "ref.avg_pool2d(p, 3, stride=2**62, padding=1, ceil_mode=True)"),
]

VALID_TEMPLATE = """
import reference as ref
{setup}
got = {expr}
want = {ref}
assert got.shape == want.shape, (got.shape, want.shape)
np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
print("MATCH", got.shape)
"""


@pytest.mark.parametrize("expr,refexpr", VALID_HUGE, ids=[c[0] for c in VALID_HUGE])
def test_huge_valid_stride(expr, refexpr):
    proc = run_child(VALID_TEMPLATE.format(setup=SETUP, expr=expr, ref=refexpr))
    assert proc.returncode == 0 and "MATCH" in proc.stdout, child_report(proc)


# ---------------------------------------------------------------------------
# immutability, fresh results, determinism, empty batch
# ---------------------------------------------------------------------------
def _all_calls(rng, dtype, N=2):
    """(name, callable, list of input arrays) for every kernel."""
    x = rng.standard_normal((N, 6, 11, 13)).astype(dtype)
    w = rng.standard_normal((8, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    p = dict(stride=(2, 1), padding=1, dilation=1, groups=2)
    go = rng.standard_normal((N, 8, 6, 13)).astype(dtype)
    wt = rng.standard_normal((6, 2, 3, 3)).astype(dtype)
    bt = rng.standard_normal(4).astype(dtype)
    tp = dict(stride=2, padding=1, output_padding=1, groups=2)
    mx = rng.standard_normal((N, 6, 11, 13)).astype(dtype)
    pk = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    _, idx = fastconv.max_pool2d(mx, return_indices=True, **pk)
    pgo = rng.standard_normal(idx.shape).astype(dtype)
    ak = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    return [
        ("conv2d", lambda: fastconv.conv2d(x, w, b, **p), [x, w, b]),
        ("conv2d_input_grad", lambda: fastconv.conv2d_input_grad(x.shape, w, go, **p), [w, go]),
        ("conv2d_weight_grad", lambda: fastconv.conv2d_weight_grad(x, w.shape, go, **p),
         [x, go]),
        ("conv_transpose2d", lambda: fastconv.conv_transpose2d(x, wt, bt, **tp), [x, wt, bt]),
        ("max_pool2d", lambda: fastconv.max_pool2d(mx, return_indices=True, **pk), [mx]),
        ("max_pool2d_backward", lambda: fastconv.max_pool2d_backward(pgo, idx, mx.shape),
         [pgo, idx]),
        ("avg_pool2d", lambda: fastconv.avg_pool2d(mx, **ak), [mx]),
        ("avg_pool2d_backward", lambda: fastconv.avg_pool2d_backward(pgo, mx.shape, **ak),
         [pgo]),
    ]


def _outputs(res):
    return list(res) if isinstance(res, tuple) else [res]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_inputs_unchanged_and_results_fresh(dtype, isa):
    rng = np.random.default_rng(77)
    for name, call, inputs in _all_calls(rng, dtype):
        before = [a.copy() for a in inputs]
        outs = _outputs(call())
        for a, a0 in zip(inputs, before):
            assert a.tobytes() == a0.tobytes(), f"{name} modified an input"
        for o in outs:
            assert isinstance(o, np.ndarray)
            assert o.flags.writeable, name
            for a in inputs:
                assert not np.shares_memory(o, a), f"{name}: result aliases an input"


def test_identity_like_ops_return_copies(isa):
    """Ops that are the identity for these parameters must still return new arrays."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 5, 5))
    eye = np.eye(3).reshape(3, 3, 1, 1)
    x0 = x.copy()
    results = {
        "conv2d": fastconv.conv2d(x, eye),
        "conv2d_dw": fastconv.conv2d(x, np.ones((3, 1, 1, 1)), groups=3),
        "conv2d_input_grad": fastconv.conv2d_input_grad(x.shape, eye, x),
        "conv_transpose2d": fastconv.conv_transpose2d(x, eye),
        "max_pool2d": fastconv.max_pool2d(x, 1),
        "avg_pool2d": fastconv.avg_pool2d(x, 1),
        "avg_pool2d_backward": fastconv.avg_pool2d_backward(x, x.shape, 1),
        "max_pool2d_backward": fastconv.max_pool2d_backward(
            x, np.broadcast_to(np.arange(25).reshape(5, 5), x.shape).copy(), x.shape),
    }
    for name, r in results.items():
        np.testing.assert_allclose(r, x0, rtol=1e-12, atol=1e-12, err_msg=name)
        assert not np.shares_memory(r, x), name
        r[...] = 123.0
        assert np.array_equal(x, x0), f"{name}: writing the result changed the input"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_deterministic(dtype, isa):
    rng = np.random.default_rng(5)
    for name, call, _ in _all_calls(rng, dtype):
        a = _outputs(call())
        b = _outputs(call())
        for oa, ob in zip(a, b):
            assert oa.tobytes() == ob.tobytes(), f"{name}: repeated call not bitwise equal"
    # a bigger conv, where threads and blocking actually kick in
    x = rng.standard_normal((2, 64, 20, 20)).astype(dtype)
    w = rng.standard_normal((33, 64, 3, 3)).astype(dtype)
    r1 = fastconv.conv2d(x, w, padding=1)
    r2 = fastconv.conv2d(x, w, padding=1)
    assert r1.tobytes() == r2.tobytes()
    g1 = fastconv.conv2d_weight_grad(x, w.shape, r1, padding=1)
    g2 = fastconv.conv2d_weight_grad(x, w.shape, r1, padding=1)
    assert g1.tobytes() == g2.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_empty_batch(dtype, isa):
    rng = np.random.default_rng(0)
    x = np.zeros((0, 4, 9, 7), dtype)
    w = rng.standard_normal((6, 2, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    y = fastconv.conv2d(x, w, b, stride=2, padding=1, groups=2)
    assert y.shape == (0, 6, 5, 4) and y.dtype == dtype
    y = fastconv.conv2d(x, w, b, padding="same", groups=2)
    assert y.shape == (0, 6, 9, 7) and y.dtype == dtype
    gi = fastconv.conv2d_input_grad(x.shape, w, np.zeros((0, 6, 5, 4), dtype), stride=2,
                                    padding=1, groups=2)
    assert gi.shape == (0, 4, 9, 7) and gi.dtype == dtype
    gw = fastconv.conv2d_weight_grad(x, w.shape, np.zeros((0, 6, 5, 4), dtype), stride=2,
                                     padding=1, groups=2)
    assert gw.shape == w.shape and gw.dtype == dtype
    assert np.all(gw == 0)
    wt = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    t = fastconv.conv_transpose2d(x, wt, None, stride=2, padding=1, output_padding=1)
    assert t.shape == (0, 3, 18, 14) and t.dtype == dtype
    m, i = fastconv.max_pool2d(x, 2, return_indices=True, ceil_mode=True)
    assert m.shape == (0, 4, 5, 4) and i.shape == (0, 4, 5, 4)
    assert m.dtype == dtype and i.dtype == np.int64
    gm = fastconv.max_pool2d_backward(m, i, x.shape)
    assert gm.shape == x.shape and gm.dtype == dtype
    a = fastconv.avg_pool2d(x, 3, stride=2, padding=1)
    assert a.shape == (0, 4, 5, 4) and a.dtype == dtype
    ga = fastconv.avg_pool2d_backward(a, x.shape, 3, stride=2, padding=1)
    assert ga.shape == x.shape and ga.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_readonly_inputs(dtype, isa):
    """Read-only inputs are accepted and give the same results as writable copies."""
    rng = np.random.default_rng(13)
    calls = _all_calls(rng, dtype)
    for name, call, inputs in calls:
        want = [o.copy() for o in _outputs(call())]
        for a in inputs:
            a.setflags(write=False)
        try:
            got = _outputs(call())
        finally:
            for a in inputs:
                a.setflags(write=True)
        for g, w_ in zip(got, want):
            assert g.tobytes() == w_.tobytes(), name


def test_broadcast_and_byteswapped_inputs(isa):
    """Zero-stride (np.broadcast_to) and non-native byte order arrays are plain float arrays."""
    import reference as ref
    rng = np.random.default_rng(14)
    x = rng.standard_normal((2, 3, 7, 9))
    w_row = rng.standard_normal((1, 3, 3, 3))
    w = np.broadcast_to(w_row, (5, 3, 3, 3))          # every filter identical, strides 0
    assert w.strides[0] == 0
    got = fastconv.conv2d(x, w, padding=1)
    np.testing.assert_allclose(got, ref.conv2d(x, np.ascontiguousarray(w), padding=1),
                               rtol=1e-10, atol=1e-10)
    xb = np.broadcast_to(x[:, :, :1, :], x.shape)     # every row identical
    np.testing.assert_array_equal(fastconv.max_pool2d(xb, 2),
                                  ref.max_pool2d(np.ascontiguousarray(xb), 2))
    for dt in (">f4", ">f8") if np.little_endian else ("<f4", "<f8"):
        xs = x.astype(dt)
        ws = np.ascontiguousarray(w).astype(dt)
        r = fastconv.conv2d(xs, ws, padding=1)
        assert r.dtype.kind == "f" and r.dtype.itemsize == xs.dtype.itemsize
        tol = 1e-4 if xs.dtype.itemsize == 4 else 1e-10
        np.testing.assert_allclose(r, ref.conv2d(xs, ws, padding=1), rtol=tol, atol=tol * 5)


def test_checked_arguments_looked_up_by_value_keep_their_errors():
    """Valid geometries are memoized by value: a bool, equal to 1 as a key, must still be
    refused after the same call with ints succeeded (and a list still checked)."""
    x = np.ones((1, 2, 5, 5), np.float32)
    w = np.ones((3, 2, 3, 3), np.float32)
    fastconv.conv2d(x, w, stride=(1, 1), padding=1)
    fastconv.max_pool2d(x, (2, 2), stride=(1, 1))
    for bad in [(1, True), True]:
        with pytest.raises(TypeError, match="stride"):
            fastconv.conv2d(x, w, stride=bad, padding=1)
        with pytest.raises(TypeError, match="stride"):
            fastconv.max_pool2d(x, (2, 2), stride=bad)
    with pytest.raises(ValueError, match="stride"):
        fastconv.conv2d(x, w, stride=[1, 0], padding=1)
    np.testing.assert_array_equal(fastconv.conv2d(x, w, stride=[1, 1], padding=1),
                                  fastconv.conv2d(x, w, stride=(1, 1), padding=1))
