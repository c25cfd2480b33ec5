"""max_pool2d / avg_pool2d (+ backward) vs the NumPy reference, under every ISA."""

import numpy as np
import pytest

import fastconv
import reference as ref
from helpers import (LAYOUTS, assert_bitwise_equal, assert_close, at_thread_counts, child_report,
                     fmt, rand, run_child, with_layout)

DATA_KINDS = ("normal", "normal", "ties", "const", "nan", "neginf", "nan_neginf")


def _make_data(rng, shape, kind, dtype):
    if kind == "normal":
        x = rng.standard_normal(shape)
    elif kind == "ties":
        x = rng.integers(-2, 3, shape).astype(np.float64)
    elif kind == "const":
        x = np.full(shape, 0.5)
    elif kind == "nan":
        x = rng.standard_normal(shape)
        x[rng.random(shape) < 0.15] = np.nan
    elif kind == "neginf":
        x = rng.standard_normal(shape)
        x[rng.random(shape) < 0.6] = -np.inf
    elif kind == "nan_neginf":
        x = np.full(shape, -np.inf)
        u = rng.random(shape)
        x[u < 0.1] = np.nan
        x[(u >= 0.1) & (u < 0.2)] = 1.0
    else:
        raise ValueError(kind)
    return x.astype(dtype)


def _rand_pool_geom(rng, kmax=5):
    kh, kw = int(rng.integers(1, kmax + 1)), int(rng.integers(1, kmax + 1))
    kernel = kh if (kh == kw or rng.random() < 0.3) else (kh, kw)
    kh, kw = ref.pair(kernel)
    u = rng.random()
    if u < 0.3:
        stride = None
    elif u < 0.6:
        stride = int(rng.integers(1, 4))
    else:
        stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    if rng.random() < 0.5:
        padding = int(rng.integers(0, min(kh, kw) // 2 + 1))
    else:
        padding = (int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1)))
    return kernel, stride, padding


def _gen_max_cases(n, seed):
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < n:
        kernel, stride, padding = _rand_pool_geom(rng)
        u = rng.random()
        dilation = 1 if u < 0.5 else (int(rng.integers(2, 4)) if u < 0.75 else
                                      (int(rng.integers(1, 4)), int(rng.integers(1, 4))))
        c = dict(N=int(rng.choice([1, 2, 3, 0])), C=int(rng.choice([1, 3, 4, 5])),
                 H=int(rng.integers(1, 20)), W=int(rng.integers(1, 20)), kernel=kernel,
                 stride=stride, padding=padding, dilation=dilation,
                 ceil_mode=bool(rng.random() < 0.5),
                 kind=DATA_KINDS[int(rng.integers(len(DATA_KINDS)))],
                 dtype=[np.float32, np.float64][int(rng.integers(2))],
                 layout=LAYOUTS[int(rng.integers(len(LAYOUTS)))],
                 seed=int(rng.integers(2**31)))
        if ref.max_pool_has_empty_window(c["H"], c["W"], kernel, stride, padding, dilation,
                                         c["ceil_mode"]):
            continue
        cases.append(c)
    return cases


def _handpicked_max():
    out = []
    base = dict(N=2, C=3, H=7, W=8, kernel=3, stride=None, padding=0, dilation=1,
                ceil_mode=False, kind="normal", layout="C")

    def add(**kw):
        for dt in (np.float32, np.float64):
            out.append(dict(base, dtype=dt, seed=9000 + len(out), **kw))

    add(H=5, W=5, kernel=2, stride=2, padding=1, ceil_mode=True)   # last window dropped
    add(H=6, W=6, kernel=3, stride=2, padding=0, ceil_mode=True)   # partial last window
    add(H=6, W=6, kernel=3, stride=2, padding=1, ceil_mode=True)
    add(H=7, W=9, kernel=(3, 2), stride=(2, 3), padding=(1, 1), ceil_mode=True)
    add(H=9, W=9, kernel=3, stride=1, padding=1, dilation=2)
    add(H=10, W=11, kernel=(2, 3), stride=(1, 2), padding=(1, 1), dilation=(3, 2),
        ceil_mode=True)
    add(kind="const", kernel=3, stride=1, padding=1)
    add(kind="ties", kernel=2, stride=1)
    add(kind="neginf", kernel=3, stride=2, padding=1)
    add(kind="nan", kernel=3, stride=1, padding=1)
    add(kind="nan_neginf", kernel=2, stride=1, padding=1)
    add(H=1, W=1, kernel=1)
    add(H=17, W=33, kernel=3, stride=2, padding=1, C=17)
    add(N=0, kernel=2)
    for lay in LAYOUTS:
        add(layout=lay, kernel=(3, 2), stride=(2, 1), padding=1)
    return out


MAX_CASES = _gen_max_cases(110, 31337) + _handpicked_max()


def _max_id(c):
    return (f"N{c['N']}C{c['C']}H{c['H']}W{c['W']}_k{fmt(c['kernel'])}_s{fmt(c['stride'])}"
            f"_p{fmt(c['padding'])}_d{fmt(c['dilation'])}_{'ceil' if c['ceil_mode'] else 'floor'}"
            f"_{c['kind']}_{np.dtype(c['dtype']).name}_{c['layout']}_{c['seed']}")


def _max_args(c):
    return dict(kernel_size=c["kernel"], stride=c["stride"], padding=c["padding"],
                dilation=c["dilation"], ceil_mode=c["ceil_mode"])


@pytest.mark.parametrize("case", MAX_CASES, ids=_max_id)
def test_max_pool2d_sweep(case, isa):
    rng = np.random.default_rng(case["seed"])
    x = _make_data(rng, (case["N"], case["C"], case["H"], case["W"]), case["kind"],
                   case["dtype"])
    want, want_idx = ref.max_pool2d(x, return_indices=True, **_max_args(case))
    xl = with_layout(x, case["layout"])
    res = fastconv.max_pool2d(xl, return_indices=True, **_max_args(case))
    assert isinstance(res, tuple) and len(res) == 2
    got, idx = res
    assert got.dtype == case["dtype"] and got.shape == want.shape
    np.testing.assert_array_equal(got, want.astype(case["dtype"]))  # NaN == NaN here
    assert idx.dtype == np.int64 and idx.shape == want.shape
    np.testing.assert_array_equal(idx, want_idx)
    only = fastconv.max_pool2d(xl, **_max_args(case))
    assert isinstance(only, np.ndarray)
    np.testing.assert_array_equal(only, got)


@pytest.mark.parametrize("case", [c for c in MAX_CASES if c["kind"] in ("normal", "ties",
                                                                         "const")][:70],
                         ids=_max_id)
def test_max_pool2d_backward_sweep(case, isa):
    rng = np.random.default_rng(case["seed"] + 1)
    x = _make_data(rng, (case["N"], case["C"], case["H"], case["W"]), case["kind"],
                   case["dtype"])
    _, idx = ref.max_pool2d(x, return_indices=True, **_max_args(case))
    go = rand(rng, idx.shape, case["dtype"])
    want = ref.max_pool2d_backward(go, idx, x.shape)
    got = fastconv.max_pool2d_backward(with_layout(go, case["layout"]),
                                       with_layout(idx, case["layout"]), x.shape)
    kh, kw = ref.pair(case["kernel"])
    assert_close(got, want, case["dtype"], kh * kw, _max_id(case))


def _gen_avg_cases(n, seed):
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < n:
        kernel, stride, padding = _rand_pool_geom(rng, kmax=6)
        c = dict(N=int(rng.choice([1, 2, 3, 0])), C=int(rng.choice([1, 3, 4, 5])),
                 H=int(rng.integers(1, 20)), W=int(rng.integers(1, 20)), kernel=kernel,
                 stride=stride, padding=padding, ceil_mode=bool(rng.random() < 0.5),
                 count_include_pad=bool(rng.random() < 0.5),
                 divisor_override=None if rng.random() < 0.7 else int(rng.integers(1, 10)),
                 dtype=[np.float32, np.float64][int(rng.integers(2))],
                 layout=LAYOUTS[int(rng.integers(len(LAYOUTS)))],
                 seed=int(rng.integers(2**31)))
        kh, kw = ref.pair(kernel)
        sh, sw = (kh, kw) if stride is None else ref.pair(stride)
        ph, pw = ref.pair(padding)
        if (ref.pool_out_size(c["H"], kh, sh, ph, 1, c["ceil_mode"]) < 1 or
                ref.pool_out_size(c["W"], kw, sw, pw, 1, c["ceil_mode"]) < 1):
            continue
        cases.append(c)
    base = dict(N=2, C=3, H=7, W=8, kernel=3, stride=None, padding=0, ceil_mode=False,
                count_include_pad=True, divisor_override=None, layout="C")
    extra = [
        dict(H=5, W=5, kernel=2, stride=2, padding=1, ceil_mode=True),
        dict(H=6, W=6, kernel=3, stride=2, padding=1, ceil_mode=True),
        dict(H=6, W=6, kernel=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        dict(H=8, W=7, kernel=(4, 3), stride=(3, 2), padding=(2, 1), ceil_mode=True),
        dict(H=8, W=7, kernel=(4, 3), stride=(3, 2), padding=(2, 1), ceil_mode=True,
             count_include_pad=False),
        dict(H=9, W=9, kernel=3, stride=1, padding=1, divisor_override=2),
        dict(H=9, W=9, kernel=3, stride=2, padding=1, divisor_override=7, ceil_mode=True,
             count_include_pad=False),
        dict(H=17, W=33, kernel=2, C=17),
        dict(H=1, W=1, kernel=1),
        dict(N=0, kernel=2),
    ] + [dict(layout=lay, kernel=(3, 2), stride=(2, 1), padding=1) for lay in LAYOUTS]
    for i, e in enumerate(extra):
        for dt in (np.float32, np.float64):
            cases.append(dict(base, dtype=dt, seed=7000 + i, **e))
    return cases


AVG_CASES = _gen_avg_cases(110, 2718)


def _avg_id(c):
    return (f"N{c['N']}C{c['C']}H{c['H']}W{c['W']}_k{fmt(c['kernel'])}_s{fmt(c['stride'])}"
            f"_p{fmt(c['padding'])}_{'ceil' if c['ceil_mode'] else 'floor'}"
            f"_{'cip' if c['count_include_pad'] else 'nocip'}_div{c['divisor_override']}"
            f"_{np.dtype(c['dtype']).name}_{c['layout']}_{c['seed']}")


def _avg_args(c):
    return dict(kernel_size=c["kernel"], stride=c["stride"], padding=c["padding"],
                ceil_mode=c["ceil_mode"], count_include_pad=c["count_include_pad"],
                divisor_override=c["divisor_override"])


@pytest.mark.parametrize("case", AVG_CASES, ids=_avg_id)
def test_avg_pool2d_sweep(case, isa):
    rng = np.random.default_rng(case["seed"])
    x = rand(rng, (case["N"], case["C"], case["H"], case["W"]), case["dtype"])
    want = ref.avg_pool2d(x, **_avg_args(case))
    got = fastconv.avg_pool2d(with_layout(x, case["layout"]), **_avg_args(case))
    kh, kw = ref.pair(case["kernel"])
    assert_close(got, want, case["dtype"], kh * kw, _avg_id(case))


@pytest.mark.parametrize("case", AVG_CASES, ids=_avg_id)
def test_avg_pool2d_backward_sweep(case, isa):
    rng = np.random.default_rng(case["seed"] + 7)
    shape = (case["N"], case["C"], case["H"], case["W"])
    out_shape = ref.avg_pool2d(np.zeros(shape), **_avg_args(case)).shape
    go = rand(rng, out_shape, case["dtype"])
    want = ref.avg_pool2d_backward(go, shape, **_avg_args(case))
    got = fastconv.avg_pool2d_backward(with_layout(go, case["layout"]), shape,
                                       **_avg_args(case))
    kh, kw = ref.pair(case["kernel"])
    assert_close(got, want, case["dtype"], kh * kw, _avg_id(case))


# ---------------------------------------------------------------------------
# targeted semantics
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_max_pool_ties_pick_first(dtype, isa):
    x = np.ones((1, 2, 6, 6), dtype)
    out, idx = fastconv.max_pool2d(x, 3, stride=1, padding=1, return_indices=True)
    # first valid position of each window, scanning row-major
    exp = np.empty((6, 6), np.int64)
    for oh in range(6):
        for ow in range(6):
            exp[oh, ow] = max(oh - 1, 0) * 6 + max(ow - 1, 0)
    np.testing.assert_array_equal(idx[0, 0], exp)
    np.testing.assert_array_equal(idx[0, 1], exp)
    np.testing.assert_array_equal(out, np.ones((1, 2, 6, 6), dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_max_pool_all_neginf(dtype, isa):
    x = np.full((1, 1, 5, 5), -np.inf, dtype)
    out, idx = fastconv.max_pool2d(x, 2, stride=2, padding=1, ceil_mode=True,
                                   return_indices=True)
    want, want_idx = ref.max_pool2d(x, 2, stride=2, padding=1, ceil_mode=True,
                                    return_indices=True)
    assert out.shape == (1, 1, 3, 3)
    assert np.all(np.isneginf(out))
    np.testing.assert_array_equal(idx, want_idx)
    assert idx[0, 0, 0, 0] == 0 and idx[0, 0, 1, 1] == 1 * 5 + 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_max_pool_nan_propagates(dtype, isa):
    x = np.arange(16, dtype=dtype).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan          # window (0,0) of a 2x2/2 pool
    x[0, 0, 2, 2] = np.nan          # window (1,1): two NaNs -> PyTorch reports the last
    x[0, 0, 3, 3] = np.nan
    out, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    assert np.isnan(out[0, 0, 0, 0]) and np.isnan(out[0, 0, 1, 1])
    assert out[0, 0, 0, 1] == 7 and out[0, 0, 1, 0] == 13
    assert idx[0, 0, 0, 0] == 1
    assert idx[0, 0, 1, 1] == 15
    np.testing.assert_array_equal(idx, ref.max_pool2d(x, 2, return_indices=True)[1])
    # NaN after a larger value in scan order still wins
    y = np.array([[[[5.0, 1.0], [np.nan, 2.0]]]], dtype)
    o2, i2 = fastconv.max_pool2d(y, 2, return_indices=True)
    assert np.isnan(o2[0, 0, 0, 0]) and i2[0, 0, 0, 0] == 2


def test_max_pool_stride_default_is_kernel(isa):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 9, 8))
    for k in (2, 3, (2, 3)):
        got = fastconv.max_pool2d(x, k)
        want = ref.max_pool2d(x, k, stride=k)
        np.testing.assert_array_equal(got, want)
        got = fastconv.avg_pool2d(x, k)
        assert_close(got, ref.avg_pool2d(x, k, stride=k), np.float64, 9)


def test_avg_pool_divisor_and_padding_semantics(isa):
    x = np.ones((1, 1, 4, 4))
    # count_include_pad: corner window (3x3, pad 1) has 4 valid of 9 -> 4/9
    out = fastconv.avg_pool2d(x, 3, stride=1, padding=1)
    np.testing.assert_allclose(out[0, 0, 0, 0], 4 / 9, rtol=1e-12)
    np.testing.assert_allclose(out[0, 0, 1, 1], 1.0, rtol=1e-12)
    out = fastconv.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    np.testing.assert_allclose(out, np.ones((1, 1, 4, 4)), rtol=1e-12)
    out = fastconv.avg_pool2d(x, 3, stride=1, padding=1, divisor_override=2)
    np.testing.assert_allclose(out[0, 0, 0, 0], 2.0, rtol=1e-12)
    np.testing.assert_allclose(out[0, 0, 1, 1], 4.5, rtol=1e-12)
    # ceil_mode: window running past H + pad is counted only up to H + pad
    x5 = np.ones((1, 1, 5, 5))
    out = fastconv.avg_pool2d(x5, 3, stride=2, padding=1, ceil_mode=True)
    want = ref.avg_pool2d(x5, 3, stride=2, padding=1, ceil_mode=True)
    assert out.shape == want.shape == (1, 1, 3, 3)
    np.testing.assert_allclose(out, want, rtol=1e-12)
    x6 = np.ones((1, 1, 6, 6))
    out = fastconv.avg_pool2d(x6, 3, stride=2, padding=1, ceil_mode=True)
    want = ref.avg_pool2d(x6, 3, stride=2, padding=1, ceil_mode=True)
    assert out.shape == (1, 1, 4, 4)
    # last window: hstart = 5, hend = min(8, 7) = 7 -> pool_size 2 rows, 1 valid row
    np.testing.assert_allclose(want[0, 0, 3, 3], 1 / 4, rtol=1e-12)
    np.testing.assert_allclose(out, want, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("hw", [(16, 16), (17, 22), (24, 19), (10, 10), (7, 9), (2, 3),
                                (28, 28), (6, 33), (12, 46), (5, 70),
                                (2, 2), (4, 4), (6, 14), (16, 8), (12, 12), (9, 12)],
                         ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_max_pool_backward_2x2_windows(hw, dtype, isa):
    """2x2 windows side by side, rows of 8 or more outputs (the last 4 or 8 of a row not a
    multiple of the step overlap) or fewer (with AVX-512 the stack of all planes' rows where
    the windows tile the planes, else scattered): dy where the window's index points, 0
    elsewhere and 0 in the rows and columns no window covers, over an `out` full of NaN; a
    plane holding an index outside its own window, in a row's last outputs, in a last row or
    past the windows, and the planes after it, are scattered like the reference (duplicates
    summed)."""
    H, W = hw
    rng = np.random.default_rng(H * W)
    x = rand(rng, (2, 3, H, W), dtype)
    _, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    go = rand(rng, idx.shape, dtype)
    out = np.full(x.shape, np.nan, dtype)
    got = fastconv.max_pool2d_backward(go, idx, x.shape, out=out)
    assert got is out
    np.testing.assert_array_equal(got, ref.max_pool2d_backward(go, idx, x.shape))
    moved = idx.copy()
    moved[0, 1, -1, -1] = 0                # another window's first element: a duplicate
    moved[1, 0, 0, -1] = W                 # the first window's bottom left, in the last lane
    moved[1, 2, 0, 0] = H * W - 1          # the plane's last element (past the windows if odd)
    last, middle = idx.shape[2] - 1, idx.shape[3] // 2
    moved[0, 2, last, middle] = 2 * last * W + 2 * middle + 2  # the next window's, a last row
    got = fastconv.max_pool2d_backward(go, moved, x.shape, out=out)
    want = ref.max_pool2d_backward(go, moved, x.shape)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_max_pool_backward_large_streamed(dtype, isa):
    """A gradient of 16 MiB or more is built plane by plane in scratch and streamed into dx
    (non-temporal stores): the same values as the scatter (np.add.at, duplicates summed in
    output order), every element of an `out` full of NaN written, the unaligned start of an
    odd-sized plane included."""
    N, C, H, W = (8, 33, 127, 127) if dtype == np.float32 else (4, 33, 127, 127)
    assert N * C * H * W * np.dtype(dtype).itemsize >= 16 << 20
    rng = np.random.default_rng(7)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    _, idx = fastconv.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    go = rng.standard_normal(idx.shape).astype(dtype)
    out = np.full(x.shape, np.nan, dtype)
    got = fastconv.max_pool2d_backward(go, idx, x.shape, out=out)
    want = np.zeros((N * C, H * W), dtype)
    planes = np.repeat(np.arange(N * C), idx[0, 0].size)
    np.add.at(want, (planes, idx.reshape(-1)), go.reshape(-1))
    np.testing.assert_array_equal(got, want.reshape(x.shape))


def test_max_pool_backward_accumulates_overlaps(isa):
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 10.0             # the maximum of every 2x2 stride-1 window
    out, idx = fastconv.max_pool2d(x, 2, stride=1, return_indices=True)
    assert np.all(idx == 4)
    go = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    gi = fastconv.max_pool2d_backward(go, idx, x.shape)
    exp = np.zeros((1, 1, 3, 3))
    exp[0, 0, 1, 1] = 10.0
    np.testing.assert_allclose(gi, exp, rtol=1e-12)


def test_pools_unbatched(isa):
    """3-D (C, H, W) inputs are pooled like a batch of one (as in PyTorch)."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 9, 10))
    m, i = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    mb, ib = fastconv.max_pool2d(x[None], 3, 2, 1, return_indices=True)
    assert m.shape == (3, 5, 5) and i.shape == (3, 5, 5)
    np.testing.assert_array_equal(m, mb[0])
    np.testing.assert_array_equal(i, ib[0])
    wm, wi = ref.max_pool2d(x[None], 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(m, wm[0])
    np.testing.assert_array_equal(i, wi[0])
    go = rng.standard_normal(m.shape)
    np.testing.assert_allclose(fastconv.max_pool2d_backward(go, i, x.shape),
                               ref.max_pool2d_backward(go[None], i[None], (1,) + x.shape)[0],
                               rtol=1e-12, atol=1e-12)
    a = fastconv.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)
    wa = ref.avg_pool2d(x[None], 3, 2, 1, ceil_mode=True, count_include_pad=False)[0]
    assert a.shape == wa.shape
    np.testing.assert_allclose(a, wa, rtol=1e-12, atol=1e-12)
    ga = fastconv.avg_pool2d_backward(a, x.shape, 3, 2, 1, ceil_mode=True,
                                      count_include_pad=False)
    np.testing.assert_allclose(ga, ref.avg_pool2d_backward(a[None], (1,) + x.shape, 3, 2, 1,
                                                           ceil_mode=True,
                                                           count_include_pad=False)[0],
                               rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# edges of the blocked interior kernels (8-lane float / 4-lane double AVX2 and 16-output
# portable blocks, the shifted last block, the interior/border split) and of the row-block
# threading
# ---------------------------------------------------------------------------
EDGE_GEOMS = [  # kernel, stride, padding, dilation
    (2, 2, 0, 1), (3, 2, 1, 1), (3, 1, 1, 1), (2, 1, 0, 1), (4, 2, 2, 1), (5, 2, 1, 1),
    ((3, 2), (2, 1), (1, 1), 1), (3, 2, 1, 2), (1, 2, 0, 1), (3, 3, 1, 1), ((2, 4), 2, (1, 2), 1),
]
EDGE_WIDTHS = [3, 4, 5, 6, 7, 8, 9, 10, 15, 16, 17, 18, 31, 33, 34, 40]


def _edge_cases():
    out = []
    for gi, (k, s, p, d) in enumerate(EDGE_GEOMS):
        for wi, w in enumerate(EDGE_WIDTHS):
            for ceil in (False, True):
                out.append((k, s, p, d, w, ceil, DATA_KINDS[(gi + wi) % len(DATA_KINDS)],
                            [np.float32, np.float64][(gi + wi + ceil) % 2]))
    return out


def _edge_id(c):
    k, s, p, d, w, ceil, kind, dt = c
    return (f"k{fmt(k)}_s{fmt(s)}_p{fmt(p)}_d{d}_W{w}_{'ceil' if ceil else 'floor'}_{kind}_"
            f"{np.dtype(dt).name}")


@pytest.mark.parametrize("case", _edge_cases(), ids=_edge_id)
def test_pool_interior_edges(case, isa):
    k, s, p, d, w, ceil, kind, dt = case
    H = 2 * w // 3 + 3
    kh, kw = ref.pair(k)
    sh, sw = ref.pair(s)
    if ref.max_pool_has_empty_window(H, w, k, s, p, d, ceil):
        pytest.skip("window without input")
    rng = np.random.default_rng(w * 131 + len(str(case)))
    x = _make_data(rng, (2, 3, H, w), kind, dt)
    args = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
    want, want_idx = ref.max_pool2d(x, return_indices=True, **args)
    got, idx = fastconv.max_pool2d(x, return_indices=True, **args)
    np.testing.assert_array_equal(got, want.astype(dt))
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_array_equal(fastconv.max_pool2d(x, **args), got)
    if d != 1:
        return
    xa = rand(rng, x.shape, dt)
    for cip in (True, False):
        aargs = dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil, count_include_pad=cip)
        ya = fastconv.avg_pool2d(xa, **aargs)
        assert_close(ya, ref.avg_pool2d(xa, **aargs), dt, kh * kw, _edge_id(case))
        go = rand(rng, ya.shape, dt)
        assert_close(fastconv.avg_pool2d_backward(go, xa.shape, **aargs),
                     ref.avg_pool2d_backward(go, xa.shape, **aargs), dt, kh * kw,
                     _edge_id(case))


@pytest.mark.parametrize("shape", [(1, 1, 37, 41), (1, 2, 5, 70), (1, 1, 2, 9), (3, 1, 1, 20)],
                         ids=str)
def test_pool_row_blocks_thread_invariant(shape, isa):
    """Few planes: tasks are row blocks (planes smaller than a block too); results must not
    depend on the thread count, bit for bit."""
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    x[rng.random(shape) < 0.05] = np.nan
    xa = rng.standard_normal(shape).astype(np.float32)
    n0 = fastconv.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            fastconv.set_num_threads(n)
            m, i = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True)
            a = fastconv.avg_pool2d(xa, 3, 2, 1, ceil_mode=True)
            g = fastconv.avg_pool2d_backward(a, xa.shape, 3, 2, 1, ceil_mode=True)
            # Windows side by side (k == stride): row blocks may start inside a window.
            a2 = fastconv.avg_pool2d(xa, 2, ceil_mode=True)
            g2 = fastconv.avg_pool2d_backward(a2, xa.shape, 2, ceil_mode=True)
            results.append((m, i, a, g, g2))
    finally:
        fastconv.set_num_threads(n0)
    wm, wi = ref.max_pool2d(x, 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(results[0][0], wm.astype(np.float32))
    np.testing.assert_array_equal(results[0][1], wi)
    want_g2 = ref.avg_pool2d_backward(ref.avg_pool2d(xa, 2, ceil_mode=True), xa.shape, 2,
                                      ceil_mode=True)
    np.testing.assert_allclose(results[0][4], want_g2, rtol=1e-6, atol=1e-7)
    for r in results[1:]:
        for got, want in zip(r, results[0]):
            np.testing.assert_array_equal(got, want)


# Windows that tile the planes' rows (no padding, H = Ho * stride): the planes are pooled as
# one stack of rows, a task's block of it in one kernel call, starting anywhere in a plane.
# Rows of 1-17 outputs (vectors of 8 floats / 4 doubles: short rows, whole vectors, shifted
# last vectors), unused last columns, stride 1 along the rows, dilation.
STACKED_CASES = [  # shape, kernel, stride, dilation
    ((64, 16, 10, 10), 2, None, 1), ((3, 5, 6, 7), 2, None, 1), ((2, 3, 8, 4), 2, None, 1),
    ((1, 1, 6, 6), 3, None, 1), ((2, 2, 4, 18), (2, 1), (2, 1), 1), ((4, 3, 9, 33), 3, None, 1),
    ((2, 3, 9, 11), 2, 3, 2), ((5, 1, 12, 2), 2, None, 1), ((1, 3, 14, 9), (2, 3), (2, 3), 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", STACKED_CASES,
                         ids=lambda c: f"{c[0]}_k{fmt(c[1])}_s{fmt(c[2])}_d{c[3]}")
def test_pool_stacked_rows(case, dtype, isa):
    shape, k, s, d = case
    rng = np.random.default_rng(sum(shape) + len(str(case)))
    for kind in ("normal", "ties", "nan", "neginf"):
        x = _make_data(rng, shape, kind, dtype)
        args = dict(kernel_size=k, stride=s, dilation=d)
        want, want_idx = ref.max_pool2d(x, return_indices=True, **args)
        runs = at_thread_counts(lambda: (*fastconv.max_pool2d(x, return_indices=True, **args),
                                         fastconv.max_pool2d(x, **args)), (1, 2, 3, 4))
        for got, idx, got_plain in runs:
            np.testing.assert_array_equal(got, want.astype(dtype))
            np.testing.assert_array_equal(idx, want_idx)
            np.testing.assert_array_equal(got_plain, got)
    if d != 1:
        return
    xa = rand(rng, shape, dtype)
    kh, kw = ref.pair(k)
    for override in (None, 3):
        aargs = dict(kernel_size=k, stride=s, divisor_override=override)
        want = ref.avg_pool2d(xa, **aargs)
        go = rand(rng, want.shape, dtype)
        want_dx = ref.avg_pool2d_backward(go, shape, **aargs)
        runs = at_thread_counts(lambda: (fastconv.avg_pool2d(xa, **aargs),
                                         fastconv.avg_pool2d_backward(go, shape, **aargs)),
                                (1, 2, 3, 4))
        assert_close(runs[0][0], want, dtype, kh * kw, str(case))
        assert_close(runs[0][1], want_dx, dtype, 1, str(case))
        for got in runs[1:]:
            assert_bitwise_equal(got[0], runs[0][0], str(case))
            assert_bitwise_equal(got[1], runs[0][1], str(case))


# Child-process code: guarded(dtype, n, prot), n elements of dtype that end right before a
# page of protection prot (0: no access, 1: read only).
GUARDED_BUFFER = """
import ctypes, mmap
import reference as ref
page = mmap.PAGESIZE
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
def guarded(dtype, n, prot):
    nbytes = n * dtype.itemsize
    pages = -(-nbytes // page) + 1
    buf = mmap.mmap(-1, pages * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    assert libc.mprotect(base + (pages - 1) * page, page, prot) == 0
    return np.frombuffer(buf, dtype, n, (pages - 1) * page - nbytes)
"""

GUARDED_POOL_CHILD = GUARDED_BUFFER + """
fastconv.set_isa({isa!r})
rng = np.random.default_rng(0)
for shape, k, dtype in {cases!r}:
    dtype = np.dtype(dtype)
    x = guarded(dtype, int(np.prod(shape)), 0).reshape(shape)  # reads past it fault
    x[...] = rng.standard_normal(shape)
    for threads in (1, 2):
        fastconv.set_num_threads(threads)
        y, idx = fastconv.max_pool2d(x, k, return_indices=True)
        want, want_idx = ref.max_pool2d(x, k, return_indices=True)
        assert np.array_equal(y, want.astype(dtype)) and np.array_equal(idx, want_idx), shape
        a = fastconv.avg_pool2d(x, k)
        assert np.allclose(a, ref.avg_pool2d(x, k), rtol=1e-5, atol=1e-6), shape
print("ok")
"""


def test_pool_stacked_rows_read_nothing_past_the_input(isa):
    """The stacked rows' unmasked loads run into the next rows: at the end of the input they
    must stop, here at an unreadable page right after the last element (in a child process:
    a read past it is a crash)."""
    cases = [((3, 2, 10, 10), 2, "float32"), ((1, 1, 4, 6), 2, "float32"),
             ((2, 3, 6, 9), 3, "float32"), ((2, 2, 10, 10), 2, "float64"),
             ((1, 4, 4, 2), 2, "float64"), ((1, 1, 2, 34), 2, "float32")]
    proc = run_child(GUARDED_POOL_CHILD.format(isa=isa, cases=cases))
    assert proc.returncode == 0 and "ok" in proc.stdout, child_report(proc)


GUARDED_POOL_BACKWARD_CHILD = GUARDED_BUFFER + """
fastconv.set_isa({isa!r})
rng = np.random.default_rng(0)
for shape in {cases!r}:
    out = guarded(np.dtype(np.float32), int(np.prod(shape)), 1).reshape(shape)  # writes fault
    x = rng.standard_normal(shape).astype(np.float32)
    _, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    dy = rng.standard_normal(idx.shape).astype(np.float32)
    for threads in (1, 2):
        fastconv.set_num_threads(threads)
        got = fastconv.max_pool2d_backward(dy, idx, shape, out=out)
        assert np.array_equal(got, ref.max_pool2d_backward(dy, idx, shape)), shape
print("ok")
"""


def test_pool_stacked_backward_writes_nothing_past_dx(isa):
    """The stacked 2x2 max-pool backward writes whole vectors where the rows after a row
    rewrite what they write past it: at the end of dx they must stop, here at a read-only
    page right after its last element (rows of 1-7 outputs; in a child process: a write past
    it is a crash)."""
    cases = [(1, 1, 2 * ho, 2 * wo) for wo in range(1, 8) for ho in (1, 2, 3)]
    cases += [(3, 5, 10, 10), (2, 3, 4, 2)]
    proc = run_child(GUARDED_POOL_BACKWARD_CHILD.format(isa=isa, cases=cases))
    assert proc.returncode == 0 and "ok" in proc.stdout, child_report(proc)


def test_avg_pool_backward_matches_torch_order_exactly():
    """avg_pool2d_backward sums each input's contributions in PyTorch's order (output row,
    then output column, ascending), so float32 results are bit-identical to PyTorch's."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    for k, s, p, ceil in ((3, 2, 1, False), (3, 1, 1, False), (2, 2, 0, False),
                          (3, 2, 1, True), (5, 3, 2, True),
                          (2, 2, 0, True), (3, 3, 0, True), (4, 4, 0, False)):  # k == s
        x = rng.standard_normal((2, 3, 23, 29)).astype(np.float32)
        y = fastconv.avg_pool2d(x, k, s, p, ceil_mode=ceil)
        go = rng.standard_normal(y.shape).astype(np.float32)
        want = torch.ops.aten.avg_pool2d_backward(
            torch.from_numpy(go), torch.from_numpy(x), [k, k], [s, s], [p, p], ceil, True,
            None).numpy()
        got = fastconv.avg_pool2d_backward(go, x.shape, k, s, p, ceil_mode=ceil)
        np.testing.assert_array_equal(got, want)
