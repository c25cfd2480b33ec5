"""conv2d, conv2d_input_grad, conv2d_weight_grad and conv_transpose2d vs the
NumPy reference, on seeded sweeps, under every available ISA and with both the GEMM path
and Winograd (where it applies)."""

import numpy as np
import pytest

import fastconv
import reference as ref
from helpers import assert_close, at_thread_counts, fmt, rand, with_layout, LAYOUTS

KERNELS = [(1, 1), (3, 3), (5, 5), (7, 7), (1, 7), (7, 1), (2, 2), (4, 4), (3, 5), (2, 3)]
K_CHOICES = [1, 2, 3, 5, 8, 13, 17, 33]


# ---------------------------------------------------------------------------
# case generation
# ---------------------------------------------------------------------------
def _rand_stride(rng):
    if rng.random() < 0.5:
        return int(rng.integers(1, 4))
    return (int(rng.integers(1, 4)), int(rng.integers(1, 4)))


def _rand_dilation(rng):
    u = rng.random()
    if u < 0.55:
        return 1
    if u < 0.8:
        return int(rng.integers(2, 4))
    return (int(rng.integers(1, 4)), int(rng.integers(1, 4)))


def _make_conv_case(rng, allow_str_padding=True):
    gkind = rng.choice(["1", "1", "1", "g", "dw"])
    if gkind == "1":
        G = 1
        C = int(rng.choice([1, 3, 2, 4, 7, 8]))
        K = int(rng.choice(K_CHOICES))
    elif gkind == "g":
        G = int(rng.choice([2, 3, 4]))
        C = G * int(rng.integers(1, 4))
        K = G * int(rng.integers(1, 5))
    else:  # depthwise (groups == C), optionally with a channel multiplier
        C = int(rng.choice([1, 3, 4, 6]))
        G = C
        K = C * int(rng.choice([1, 1, 2, 3]))
    R, S = KERNELS[int(rng.integers(len(KERNELS)))]
    stride = _rand_stride(rng)
    dilation = _rand_dilation(rng)
    u = rng.random()
    if u < 0.3:
        padding = int(rng.integers(0, 4))
    elif u < 0.55:
        padding = (int(rng.integers(0, 4)), int(rng.integers(0, 4)))
    elif u < 0.7 and allow_str_padding:
        padding = "valid"
    elif allow_str_padding:
        padding = "same"
        stride = 1
    else:
        padding = 0
    N = int(rng.choice([1, 1, 2, 3, 0]))
    H = int(rng.integers(1, 20))
    W = int(rng.integers(1, 20))
    return dict(N=N, C=C, H=H, W=W, K=K, R=R, S=S, stride=stride, padding=padding,
                dilation=dilation, groups=G, bias=bool(rng.random() < 0.6),
                dtype=[np.float32, np.float64][int(rng.integers(2))],
                xlayout=LAYOUTS[int(rng.integers(len(LAYOUTS)))],
                wlayout=LAYOUTS[int(rng.integers(len(LAYOUTS)))])


def _conv_out_hw(c):
    dh, dw = ref.pair(c["dilation"])
    sh, sw = ref.pair(c["stride"])
    (pt, pb), (pl, pr) = ref.resolve_conv_padding(c["padding"], (c["R"], c["S"]), (dh, dw))
    return (ref.conv_out_size(c["H"], pt, pb, c["R"], sh, dh),
            ref.conv_out_size(c["W"], pl, pr, c["S"], sw, dw))


def _gen_conv_cases(n, seed, allow_str_padding=True):
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < n:
        c = _make_conv_case(rng, allow_str_padding)
        Ho, Wo = _conv_out_hw(c)
        if Ho < 1 or Wo < 1:
            continue
        if c["N"] * c["K"] * Ho * Wo * (c["C"] // c["groups"]) * c["R"] * c["S"] > 3e6:
            continue
        c["seed"] = int(rng.integers(2**31))
        cases.append(c)
    return cases


def _handpicked_conv_cases():
    base = dict(N=2, C=3, H=9, W=11, K=5, R=3, S=3, stride=1, padding=0, dilation=1, groups=1,
                bias=True, xlayout="C", wlayout="C")
    out = []

    def add(**kw):
        for dt in (np.float32, np.float64):
            c = dict(base, **kw)
            c["dtype"] = dt
            c["seed"] = 1000 + len(out)
            out.append(c)

    # 'same' with odd total padding: 4x4 kernel, 2x2 kernel with dilation 3, 1x4
    add(R=4, S=4, padding="same")
    add(R=2, S=2, padding="same", dilation=3)
    add(R=1, S=4, padding="same", dilation=(1, 1))
    add(R=3, S=2, padding="same", dilation=(2, 1))
    add(R=5, S=5, padding="same", dilation=2, K=13)
    add(padding="valid", stride=(2, 3))
    # kernel as large as the (padded) input -> 1x1 output
    add(H=7, W=7, R=7, S=7)
    add(H=5, W=6, R=7, S=8, padding=1)
    add(H=4, W=4, R=3, S=3, dilation=2, padding=1, stride=5)
    add(H=1, W=1, R=1, S=1, K=17)
    # 1x7 / 7x1, unequal stride/dilation pairs
    add(R=1, S=7, padding=(0, 3), stride=(1, 2), K=13)
    add(R=7, S=1, padding=(3, 0), stride=(2, 1), dilation=(1, 2), W=5, H=15)
    # depthwise and grouped with K a multiple of groups
    add(C=8, groups=8, K=8, padding=1)
    add(C=6, groups=6, K=12, padding=1, stride=2)
    add(C=6, groups=3, K=9, R=5, S=5, padding=2)
    add(C=4, groups=2, K=6, R=1, S=1)
    # C = 1, odd batch, no bias, all layouts
    add(C=1, N=3, K=17, bias=False)
    add(N=0)
    add(N=0, K=13, groups=1, padding="same", R=4, S=4)
    for lay in LAYOUTS:
        add(xlayout=lay, wlayout=lay, K=5, padding=(1, 2), stride=(2, 1))
    return out


CONV_CASES = _gen_conv_cases(110, seed=20240601) + _handpicked_conv_cases()
GRAD_CASES = _gen_conv_cases(70, seed=777, allow_str_padding=False) + [
    c for c in _handpicked_conv_cases() if not isinstance(c["padding"], str)]


def _conv_id(c):
    return (f"N{c['N']}C{c['C']}H{c['H']}W{c['W']}K{c['K']}_{c['R']}x{c['S']}"
            f"_s{fmt(c['stride'])}_p{fmt(c['padding'])}_d{fmt(c['dilation'])}_g{c['groups']}"
            f"_{'b' if c['bias'] else 'nob'}_{np.dtype(c['dtype']).name}"
            f"_{c['xlayout']}{c['wlayout']}_{c['seed']}")


def _conv_data(c):
    rng = np.random.default_rng(c["seed"])
    dt = c["dtype"]
    x = rand(rng, (c["N"], c["C"], c["H"], c["W"]), dt)
    w = rand(rng, (c["K"], c["C"] // c["groups"], c["R"], c["S"]), dt)
    b = rand(rng, (c["K"],), dt) if c["bias"] else None
    Ho, Wo = _conv_out_hw(c)
    go = rand(rng, (c["N"], c["K"], Ho, Wo), dt)
    return x, w, b, go


def _params(c):
    return dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"],
                groups=c["groups"])


_REF_CACHE = {}


def _cached(key, fn):
    if key not in _REF_CACHE:
        _REF_CACHE[key] = fn()
    return _REF_CACHE[key]


# ---------------------------------------------------------------------------
# conv2d
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", CONV_CASES, ids=_conv_id)
def test_conv2d_sweep(case, isa, algorithm):
    x, w, b, _ = _conv_data(case)
    want = _cached(("fwd", _conv_id(case)), lambda: ref.conv2d(x, w, b, **_params(case)))
    xl = with_layout(x, case["xlayout"])
    wl = with_layout(w, case["wlayout"])
    bl = None if b is None else with_layout(b, case["wlayout"])
    got = fastconv.conv2d(xl, wl, bl, **_params(case))
    red = w.shape[1] * w.shape[2] * w.shape[3]
    assert_close(got, want, case["dtype"], red, _conv_id(case))


@pytest.mark.parametrize("case", GRAD_CASES, ids=_conv_id)
def test_conv2d_input_grad_sweep(case, isa, algorithm):
    x, w, _, go = _conv_data(case)
    want = _cached(("gin", _conv_id(case)),
                   lambda: ref.conv2d_input_grad(x.shape, w, go, **_params(case)))
    got = fastconv.conv2d_input_grad(x.shape, with_layout(w, case["wlayout"]),
                                     with_layout(go, case["xlayout"]), **_params(case))
    red = (case["K"] // case["groups"]) * case["R"] * case["S"]
    assert_close(got, want, case["dtype"], red, _conv_id(case))


@pytest.mark.parametrize("case", GRAD_CASES, ids=_conv_id)
def test_conv2d_weight_grad_sweep(case, isa):
    x, w, _, go = _conv_data(case)
    want = _cached(("gw", _conv_id(case)),
                   lambda: ref.conv2d_weight_grad(x, w.shape, go, **_params(case)))
    got = fastconv.conv2d_weight_grad(with_layout(x, case["xlayout"]), w.shape,
                                      with_layout(go, case["wlayout"]), **_params(case))
    red = go.shape[0] * go.shape[2] * go.shape[3]
    assert_close(got, want, case["dtype"], red, _conv_id(case))


def test_input_grad_accepts_list_shape(isa):
    rng = np.random.default_rng(5)
    w = rand(rng, (4, 3, 3, 3), np.float64)
    go = rand(rng, (2, 4, 4, 5), np.float64)
    want = ref.conv2d_input_grad((2, 3, 9, 11), w, go, stride=2, padding=0)
    got = fastconv.conv2d_input_grad([2, 3, 9, 11], w, go, stride=2)
    assert_close(got, want, np.float64, 36)
    # with H=10 / W=12 the last row / column is not reached by any window -> zero gradient
    got10 = fastconv.conv2d_input_grad((2, 3, 10, 12), w, go, stride=2)
    assert got10.shape == (2, 3, 10, 12)
    assert np.all(got10[:, :, -1, :] == 0) and np.all(got10[:, :, :, -1] == 0)
    assert_close(got10, ref.conv2d_input_grad((2, 3, 10, 12), w, go, stride=2), np.float64, 36)


def test_conv2d_unbatched(isa, algorithm):
    rng = np.random.default_rng(11)
    for dt in (np.float32, np.float64):
        x = rand(rng, (3, 10, 9), dt)
        w = rand(rng, (5, 3, 3, 3), dt)
        b = rand(rng, (5,), dt)
        got = fastconv.conv2d(x, w, b, padding="same")
        assert got.shape == (5, 10, 9)
        want = ref.conv2d(x, w, b, padding="same")
        assert_close(got, want, dt, 27)
        batched = fastconv.conv2d(x[None], w, b, padding="same")
        np.testing.assert_array_equal(got, batched[0])


def test_conv2d_bias_is_added_per_channel(isa):
    rng = np.random.default_rng(3)
    x = rand(rng, (2, 3, 6, 7), np.float64)
    w = rand(rng, (5, 3, 3, 3), np.float64)
    b = np.arange(5, dtype=np.float64) * 10.0
    y0 = fastconv.conv2d(x, w)
    y1 = fastconv.conv2d(x, w, b)
    np.testing.assert_allclose(y1 - y0, np.broadcast_to(b[None, :, None, None], y0.shape),
                               rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------
# SIMD / tiling edges and larger shapes
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("K", list(range(1, 18, 2)))
def test_conv2d_simd_edges(K, dtype, isa, algorithm):
    """K = 1..17 (odd) x output widths 1..33 (3x3, padding 1 -> Wo == W)."""
    rng = np.random.default_rng(100 + K)
    C = 3
    w = rand(rng, (K, C, 3, 3), dtype)
    b = rand(rng, (K,), dtype)
    for Wd in range(1, 34):
        x = rand(rng, (1, C, 3, Wd), dtype)
        got = fastconv.conv2d(x, w, b, padding=1)
        assert_close(got, ref.conv2d(x, w, b, padding=1), dtype, 27, f"K={K} W={Wd}")
    # strided output widths too
    for Wd in (15, 16, 17, 31, 33, 34):
        x = rand(rng, (2, C, 4, Wd), dtype)
        got = fastconv.conv2d(x, w, None, stride=(1, 2), padding=(0, 1))
        assert_close(got, ref.conv2d(x, w, None, stride=(1, 2), padding=(0, 1)), dtype, 27,
                     f"K={K} W={Wd} stride2")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("K", [1, 5, 8, 13, 16, 17])
def test_grads_simd_edges(K, dtype, isa, algorithm):
    rng = np.random.default_rng(200 + K)
    C = 4
    w = rand(rng, (K, C, 3, 3), dtype)
    for Wd in (1, 2, 7, 8, 9, 15, 16, 17, 31, 33):
        x = rand(rng, (2, C, 5, Wd), dtype)
        go = rand(rng, (2, K, 5, Wd), dtype)
        gi = fastconv.conv2d_input_grad(x.shape, w, go, padding=1)
        assert_close(gi, ref.conv2d_input_grad(x.shape, w, go, padding=1), dtype, K * 9,
                     f"input_grad K={K} W={Wd}")
        gw = fastconv.conv2d_weight_grad(x, w.shape, go, padding=1)
        assert_close(gw, ref.conv2d_weight_grad(x, w.shape, go, padding=1), dtype, 10 * Wd,
                     f"weight_grad K={K} W={Wd}")


LARGE = [
    # (N, C, H, W, K, R, S, stride, padding, dilation, groups)
    (2, 64, 28, 28, 64, 3, 3, 1, 1, 1, 1),   # C*R*S = 576 > 256, many column blocks
    (1, 48, 17, 19, 33, 5, 5, 2, 2, 1, 1),   # C*R*S = 1200
    (2, 130, 9, 10, 17, 3, 3, 1, 0, 1, 1),   # C not a multiple of anything, C*R*S = 1170
    (1, 300, 6, 7, 13, 1, 1, 1, 0, 1, 1),    # 1x1 with a long reduction
    (1, 32, 40, 41, 24, 3, 3, 1, 2, 2, 2),   # grouped, dilated, wide rows
    (2, 32, 14, 14, 32, 3, 3, 1, 1, 1, 32),  # depthwise
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", LARGE, ids=lambda s: "x".join(map(str, s)))
def test_large_shapes(shape, dtype, isa, algorithm):
    N, C, H, W, K, R, S, st, pad, dil, G = shape
    rng = np.random.default_rng(sum(shape))
    x = rand(rng, (N, C, H, W), dtype)
    w = rand(rng, (K, C // G, R, S), dtype)
    b = rand(rng, (K,), dtype)
    p = dict(stride=st, padding=pad, dilation=dil, groups=G)
    key = ("large", shape, np.dtype(dtype).name)
    want = _cached(key + ("fwd",), lambda: ref.conv2d(x, w, b, **p))
    got = fastconv.conv2d(x, w, b, **p)
    assert_close(got, want, dtype, (C // G) * R * S, "conv2d")
    go = rand(rng, want.shape, dtype)
    gi = fastconv.conv2d_input_grad(x.shape, w, go, **p)
    assert_close(gi, _cached(key + ("gin",), lambda: ref.conv2d_input_grad(x.shape, w, go, **p)),
                 dtype, (K // G) * R * S, "input_grad")
    gw = fastconv.conv2d_weight_grad(x, w.shape, go, **p)
    assert_close(gw, _cached(key + ("gw",), lambda: ref.conv2d_weight_grad(x, w.shape, go, **p)),
                 dtype, N * go.shape[2] * go.shape[3], "weight_grad")


# Dilated stride-1 layers whose padding and image are whole multiples of the dilation, with
# enough channels for Winograd: conv.cpp splits them into the undilated phases of the rows and
# columns (N, C, H, W, K, padding, dilation); the last has no padding, one has odd phases.
DILATION_PHASES = [
    (2, 16, 12, 12, 16, (2, 2), (2, 2)),
    (3, 17, 12, 9, 20, (3, 2), (3, 1)),
    (1, 16, 10, 14, 24, (4, 2), (2, 2)),
    (2, 18, 9, 15, 16, (3, 3), (3, 3)),
    (2, 16, 8, 8, 16, (0, 0), (2, 2)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", DILATION_PHASES, ids=lambda s: fmt(s))
def test_dilation_phases(shape, dtype, isa, algorithm):
    N, C, H, W, K, pad, dil = shape
    rng = np.random.default_rng(N * C * H * W)
    x, w, b = rand(rng, (N, C, H, W), dtype), rand(rng, (K, C, 3, 3), dtype), rand(rng, (K,), dtype)
    p = dict(padding=pad, dilation=dil)
    want = ref.conv2d(x, w, b, **p)
    assert_close(fastconv.conv2d(x, w, b, **p), want, dtype, C * 9, "conv2d")
    go = rand(rng, want.shape, dtype)
    assert_close(fastconv.conv2d_input_grad(x.shape, w, go, **p),
                 ref.conv2d_input_grad(x.shape, w, go, **p), dtype, K * 9, "input_grad")
    assert_close(fastconv.conv2d_weight_grad(x, w.shape, go, **p),
                 ref.conv2d_weight_grad(x, w.shape, go, **p), dtype,
                 N * go.shape[2] * go.shape[3], "weight_grad")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [  # N, C, H, W, K, padding, dilation
    (1, 16, 30, 42, 16, (3, 3), (3, 3)),  # batch 1: 9 phases of 35 tiles, tasks end inside them
    (3, 17, 24, 20, 20, (2, 2), (2, 1)),  # tasks end inside images; two row phases
    (2, 16, 18, 24, 18, (0, 4), (1, 2)),  # no row phases, no vertical padding
], ids=lambda s: fmt(s))
def test_dilation_phases_weight_grad_splits(shape, dtype, isa):
    """The dilated Winograd weight gradient reads each phase in place from its tasks' copies
    of whole images (only the rows its tiles meet, each once, when a task starts inside an
    image). Matches the reference at 1-4 threads, the same on every call."""
    N, C, H, W, K, pad, dil = shape
    rng = np.random.default_rng(N * C * H * W)
    x, w = rand(rng, (N, C, H, W), dtype), rand(rng, (K, C, 3, 3), dtype)
    p = dict(padding=pad, dilation=dil)
    go = rand(rng, ref.conv2d(x, w, **p).shape, dtype)
    want = ref.conv2d_weight_grad(x, w.shape, go, **p)
    call = lambda: fastconv.conv2d_weight_grad(x, w.shape, go, **p)
    counts = (1, 2, 3, 4)
    for threads, got, again in zip(counts, at_thread_counts(call, counts),
                                   at_thread_counts(call, counts)):
        assert_close(got, want, dtype, N * go.shape[2] * go.shape[3], f"{threads} threads")
        np.testing.assert_array_equal(got, again)


def test_dilation_phases_in_batch_chunks():
    """Inputs and gradients of more than 64 MiB together go through the phases in batch
    chunks (the weight gradient summed over them): the same results as the dilated path that
    runs without Winograd."""
    rng = np.random.default_rng(7)
    x = rand(rng, (10, 64, 120, 120), np.float32)
    w = rand(rng, (64, 64, 3, 3), np.float32)
    p = dict(padding=2, dilation=2)
    go = rand(rng, x.shape, np.float32)
    got = (fastconv.conv2d(x, w, **p), fastconv.conv2d_input_grad(x.shape, w, go, **p),
           fastconv.conv2d_weight_grad(x, w.shape, go, **p))
    original = fastconv.get_algorithm()
    fastconv.set_algorithm("gemm")
    try:
        want = (fastconv.conv2d(x, w, **p), fastconv.conv2d_input_grad(x.shape, w, go, **p),
                fastconv.conv2d_weight_grad(x, w.shape, go, **p))
    finally:
        fastconv.set_algorithm(original)
    for name, g, wnt, red in zip(("conv2d", "input_grad", "weight_grad"), got, want,
                                 (64 * 9, 64 * 9, 9 * 120 * 120)):
        assert_close(g, wnt, np.float32, red, name)


# Depthwise stride-1 rows (rows_correlate): widths around the vector (8 floats, 4 doubles) and
# the four-vector chunk (32 / 16), 3x3 and the other dense windows (kernels of their own, four
# output rows at a time: heights of 5 to 8 leave 1, 2, 3 and 0 rows after the blocks of four;
# with AVX-512), a dilated window, channel multipliers 1 and 2 (the input gradient then
# accumulates two planes into dx).
DEPTHWISE_EDGES = [(W, R, S, pad, dil, mult) for W in (1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32,
                                                       33, 40, 65)
                   for (R, S, pad, dil, mult) in ((3, 3, 1, 1, 1), (3, 3, 1, 1, 2),
                                                  (5, 5, 2, 1, 1), (5, 5, 2, 1, 2),
                                                  (5, 3, 1, 1, 2), (7, 7, 3, 1, 1),
                                                  (1, 3, 0, 1, 2), (3, 3, 2, 2, 1))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("edge", DEPTHWISE_EDGES, ids=lambda e: "W{}_{}x{}_p{}_d{}_m{}".format(*e))
def test_depthwise_row_edges(edge, dtype, isa):
    W, R, S, pad, dil, mult = edge
    rng = np.random.default_rng(W * 100 + R * 10 + mult + dil)
    C, H = 3, 5 + W % 4
    x = rand(rng, (2, C, H, W), dtype)
    w = rand(rng, (C * mult, 1, R, S), dtype)
    b = rand(rng, (C * mult,), dtype)
    p = dict(padding=pad, dilation=dil, groups=C)
    if W + 2 * pad - dil * (S - 1) < 1:
        pytest.skip("no output")
    want = ref.conv2d(x, w, b, **p)
    assert_close(fastconv.conv2d(x, w, b, **p), want, dtype, R * S, "forward")
    go = rand(rng, want.shape, dtype)
    assert_close(fastconv.conv2d_input_grad(x.shape, w, go, **p),
                 ref.conv2d_input_grad(x.shape, w, go, **p), dtype, mult * R * S, "input_grad")
    assert_close(fastconv.conv2d_weight_grad(x, w.shape, go, **p),
                 ref.conv2d_weight_grad(x, w.shape, go, **p), dtype,
                 2 * want.shape[2] * want.shape[3], "weight_grad")


# ---------------------------------------------------------------------------
# conv_transpose2d
# ---------------------------------------------------------------------------
def _gen_convT_cases(n, seed):
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < n:
        G = int(rng.choice([1, 1, 1, 2, 3]))
        Cg = int(rng.integers(1, 5))
        Og = int(rng.choice([1, 2, 3, 5, 8, 13, 17])) if G == 1 else int(rng.integers(1, 4))
        R, S = KERNELS[int(rng.integers(len(KERNELS)))]
        stride = _rand_stride(rng)
        dilation = _rand_dilation(rng)
        padding = int(rng.integers(0, 3)) if rng.random() < 0.5 else (
            int(rng.integers(0, 3)), int(rng.integers(0, 3)))
        sh, sw = ref.pair(stride)
        dh, dw = ref.pair(dilation)
        if rng.random() < 0.5:
            op = 0
        else:
            op = (int(rng.integers(0, max(sh, dh))), int(rng.integers(0, max(sw, dw))))
        c = dict(N=int(rng.choice([1, 2, 3, 0])), C=G * Cg, H=int(rng.integers(1, 12)),
                 W=int(rng.integers(1, 12)), O=G * Og, R=R, S=S, stride=stride,
                 padding=padding, output_padding=op, dilation=dilation, groups=G,
                 bias=bool(rng.random() < 0.6),
                 dtype=[np.float32, np.float64][int(rng.integers(2))],
                 xlayout=LAYOUTS[int(rng.integers(len(LAYOUTS)))],
                 wlayout=LAYOUTS[int(rng.integers(len(LAYOUTS)))],
                 seed=int(rng.integers(2**31)))
        ph, pw = ref.pair(padding)
        oph, opw = ref.pair(op)
        Ho = ref.conv_transpose_out_size(c["H"], R, sh, ph, oph, dh)
        Wo = ref.conv_transpose_out_size(c["W"], S, sw, pw, opw, dw)
        if Ho < 1 or Wo < 1:
            continue
        cases.append(c)
    # hand-picked
    extra = [
        dict(N=2, C=4, H=5, W=6, O=6, R=3, S=3, stride=2, padding=1, output_padding=1,
             dilation=1, groups=2),
        dict(N=1, C=3, H=4, W=4, O=5, R=4, S=4, stride=2, padding=1, output_padding=0,
             dilation=1, groups=1),
        dict(N=1, C=2, H=3, W=5, O=3, R=3, S=2, stride=1, padding=(1, 0),
             output_padding=(1, 2), dilation=(2, 3), groups=1),  # op < dilation only
        dict(N=3, C=6, H=7, W=7, O=6, R=3, S=3, stride=(3, 2), padding=(2, 1),
             output_padding=(2, 1), dilation=1, groups=6),  # depthwise
        dict(N=1, C=16, H=9, W=33, O=17, R=5, S=5, stride=1, padding=2, output_padding=0,
             dilation=1, groups=1),
        dict(N=1, C=40, H=8, W=8, O=13, R=3, S=3, stride=2, padding=0, output_padding=1,
             dilation=1, groups=1),  # C*R*S = 360
        dict(N=0, C=3, H=4, W=4, O=2, R=3, S=3, stride=2, padding=1, output_padding=1,
             dilation=1, groups=1),
    ]
    for i, e in enumerate(extra):
        for dt in (np.float32, np.float64):
            cases.append(dict(e, bias=True, dtype=dt, xlayout=LAYOUTS[i % len(LAYOUTS)],
                              wlayout="C", seed=5000 + i))
    return cases


CONVT_CASES = _gen_convT_cases(90, seed=4242)


def _convT_id(c):
    return (f"N{c['N']}C{c['C']}H{c['H']}W{c['W']}O{c['O']}_{c['R']}x{c['S']}"
            f"_s{fmt(c['stride'])}_p{fmt(c['padding'])}_op{fmt(c['output_padding'])}"
            f"_d{fmt(c['dilation'])}_g{c['groups']}_{'b' if c['bias'] else 'nob'}"
            f"_{np.dtype(c['dtype']).name}_{c['xlayout']}{c['wlayout']}_{c['seed']}")


@pytest.mark.parametrize("case", CONVT_CASES, ids=_convT_id)
def test_conv_transpose2d_sweep(case, isa, algorithm):
    rng = np.random.default_rng(case["seed"])
    dt = case["dtype"]
    G = case["groups"]
    x = rand(rng, (case["N"], case["C"], case["H"], case["W"]), dt)
    w = rand(rng, (case["C"], case["O"] // G, case["R"], case["S"]), dt)
    b = rand(rng, (case["O"],), dt) if case["bias"] else None
    p = dict(stride=case["stride"], padding=case["padding"],
             output_padding=case["output_padding"], groups=G, dilation=case["dilation"])
    want = _cached(("convT", _convT_id(case)), lambda: ref.conv_transpose2d(x, w, b, **p))
    got = fastconv.conv_transpose2d(with_layout(x, case["xlayout"]),
                                    with_layout(w, case["wlayout"]), b, **p)
    red = (case["C"] // G) * case["R"] * case["S"]
    assert_close(got, want, dt, red, _convT_id(case))


def test_conv_transpose2d_unbatched(isa):
    rng = np.random.default_rng(9)
    x = rand(rng, (4, 5, 6), np.float64)
    w = rand(rng, (4, 3, 3, 3), np.float64)
    got = fastconv.conv_transpose2d(x, w, None, stride=2, padding=1, output_padding=1)
    assert got.shape == (3, 10, 12)
    assert_close(got, ref.conv_transpose2d(x, w, None, stride=2, padding=1, output_padding=1),
                 np.float64, 36)


def test_conv_transpose2d_is_input_grad(isa):
    """conv_transpose2d(g, w, stride, padding, output_padding) == conv2d_input_grad."""
    rng = np.random.default_rng(21)
    for dt in (np.float32, np.float64):
        w = rand(rng, (6, 2, 3, 3), dt)        # conv: K=6, C=4 (groups 2)
        go = rand(rng, (2, 6, 4, 5), dt)
        in_shape = (2, 4, 8, 10)                # (8+2-3)//2+1 = 4, (10+2-3)//2+1 = 5
        gi = fastconv.conv2d_input_grad(in_shape, w, go, stride=2, padding=1, groups=2)
        # output_padding: 8 = (4-1)*2 - 2 + 3 + op -> op = 1 ; 10 = 8 - 2 + 3 + op -> op = 1
        ct = fastconv.conv_transpose2d(go, w, None, stride=2, padding=1, output_padding=1,
                                       groups=2)
        assert ct.shape == in_shape
        assert_close(ct, gi.astype(np.float64), dt, 27)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("c", [  # C, H, W, kernel, stride, padding, dilation
    (4, 13, 17, 3, (1, 2), 1, 1),
    (3, 20, 19, 5, (2, 3), 2, (1, 2)),
    (2, 17, 23, (3, 5), (4, 4), (0, 2), 1),
    (5, 11, 9, (5, 3), (3, 1), (2, 1), (2, 1)),
], ids=lambda c: fmt(c))
def test_depthwise_stride_phases(c, dtype, isa):
    """Strided depthwise layers: the weight gradient (and the forward pass of windows over 9
    taps) reads x split into its stride phases, each tap a dense run of one phase plane."""
    C, H, W, kernel, stride, padding, dilation = c
    kh, kw = ref.pair(kernel)
    rng = np.random.default_rng(C * H * W)
    x = rand(rng, (3, C, H, W), dtype)
    w = rand(rng, (2 * C, 1, kh, kw), dtype)
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=C)
    y = fastconv.conv2d(x, w, **args)
    assert_close(y, ref.conv2d(x, w, **args), dtype, kh * kw, "forward")
    dy = rand(rng, y.shape, dtype)
    assert_close(fastconv.conv2d_weight_grad(x, w.shape, dy, **args),
                 ref.conv2d_weight_grad(x, w.shape, dy, **args), dtype,
                 3 * y.shape[2] * y.shape[3], "weight grad")


def test_depthwise_stride_phases_ignore_pixels_no_window_reads(isa):
    """An infinity in a column no window reads (stride 2, 5 taps: column 11 of 12) lies in a
    phase plane that the flat dot products sweep; dW stays finite, as PyTorch's does."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
    x[:, :, :, 11] = np.inf
    w = rng.standard_normal((3, 1, 5, 5)).astype(np.float32)
    dy = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    got = fastconv.conv2d_weight_grad(x, w.shape, dy, stride=2, groups=3)
    want = ref.conv2d_weight_grad(x, w.shape, dy, stride=2, groups=3)
    assert np.isfinite(want).all()
    assert_close(got, want, np.float32, 2 * 16, "weight grad")


# ---------------------------------------------------------------------------
# depthwise (one input channel per group): the direct kernels' flat stride-1 path, its row
# path (other strides, padding beyond the kernel extent) and the chunk edges of both
# ---------------------------------------------------------------------------
def _depthwise_cases():
    rng = np.random.default_rng(20261201)
    cases = []
    for width in (1, 2, 7, 8, 9, 31, 33, 63, 64, 65, 70):
        for _ in range(2):
            k = int(rng.choice([1, 3, 5]))
            cases.append(dict(C=int(rng.choice([1, 2, 3])), mult=int(rng.choice([1, 2, 3])),
                              H=int(rng.integers(1, 12)), W=width, R=k, S=int(rng.choice([k, 1, 7])),
                              stride=int(rng.choice([1, 1, 2, 3])), pad=int(rng.integers(0, 5)),
                              dil=int(rng.choice([1, 1, 2])), N=int(rng.choice([1, 2])),
                              dtype=[np.float32, np.float64][int(rng.integers(2))]))
    return cases


@pytest.mark.parametrize("c", _depthwise_cases(), ids=lambda c: fmt(c))
def test_depthwise_paths(isa, c):
    rng = np.random.default_rng(7)
    C, K, dt = c["C"], c["C"] * c["mult"], c["dtype"]
    args = (c["stride"], c["pad"], c["dil"], C)
    eff_h, eff_w = (c["R"] - 1) * c["dil"] + 1, (c["S"] - 1) * c["dil"] + 1
    if c["H"] + 2 * c["pad"] < eff_h or c["W"] + 2 * c["pad"] < eff_w:
        pytest.skip("kernel larger than the padded input")
    x = rng.standard_normal((c["N"], C, c["H"], c["W"])).astype(dt)
    w = rng.standard_normal((K, 1, c["R"], c["S"])).astype(dt)
    b = rng.standard_normal(K).astype(dt)
    y = fastconv.conv2d(x, w, b, *args)
    red = c["R"] * c["S"]
    assert_close(y, ref.conv2d(x, w, b, *args), dt, red, "forward")
    dy = rng.standard_normal(y.shape).astype(dt)
    assert_close(fastconv.conv2d_input_grad(x.shape, w, dy, *args),
                 ref.conv2d_input_grad(x.shape, w, dy, *args), dt, red * c["mult"], "input grad")
    assert_close(fastconv.conv2d_weight_grad(x, w.shape, dy, *args),
                 ref.conv2d_weight_grad(x, w.shape, dy, *args), dt, y.shape[0] * y.shape[2] *
                 y.shape[3], "weight grad")


def _channels_last_cases():
    """Ungrouped layers the forward pass (and, at stride 1, the input gradient) runs over a
    channels-last copy: strided, dilated or narrower than a micro-kernel panel, with at least
    16 values per window row, or with the window's rows stacked into the channels (few
    channels); the weight gradient of every ungrouped layer runs there too."""
    rng = np.random.default_rng(31)
    cases = []
    for _ in range(40):
        R, S = KERNELS[int(rng.integers(len(KERNELS)))]
        C = int(rng.choice([4, 6, 16, 19, 33, 32, 64]))  # 32, 64: xt's pixels padded a line
        K = int(rng.choice([1, 5, 16, 17, 40]))
        stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        dilation = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        padding = (int(rng.integers(0, 4)), int(rng.integers(0, 4)))
        H, W = int(rng.integers(R, 20)), int(rng.integers(S, 40))
        H += (R - 1) * (dilation[0] - 1)
        W += (S - 1) * (dilation[1] - 1)
        cases.append(dict(N=int(rng.integers(1, 4)), C=C, H=H, W=W, K=K, R=R, S=S,
                          stride=stride, padding=padding, dilation=dilation))
    return cases


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("c", _channels_last_cases(), ids=lambda c: fmt(c))
def test_conv2d_channels_last_paths(c, dtype, isa):
    rng = np.random.default_rng(c["C"] * 1000 + c["W"])
    x = rand(rng, (c["N"], c["C"], c["H"], c["W"]), dtype)
    w = rand(rng, (c["K"], c["C"], c["R"], c["S"]), dtype)
    b = rand(rng, (c["K"],), dtype)
    p = dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"])
    y = fastconv.conv2d(x, w, b, **p)
    assert_close(y, ref.conv2d(x, w, b, **p), dtype, c["C"] * c["R"] * c["S"], "forward")
    dy = rand(rng, y.shape, dtype)
    assert_close(fastconv.conv2d_weight_grad(x, w.shape, dy, **p),
                 ref.conv2d_weight_grad(x, w.shape, dy, **p), dtype,
                 c["N"] * y.shape[2] * y.shape[3], "weight_grad")
    # With stride 1, the input gradient is the same path on the flipped weights.
    p["stride"] = 1
    dy = rand(rng, ref.conv2d(x, w, None, **p).shape, dtype)
    assert_close(fastconv.conv2d_input_grad(x.shape, w, dy, **p),
                 ref.conv2d_input_grad(x.shape, w, dy, **p), dtype, c["K"] * c["R"] * c["S"],
                 "input_grad")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kernel,padding", [((1, 1), 0), ((3, 1), (1, 0)), ((1, 1), (2, 0))])
def test_panels_spanning_output_rows(kernel, padding, dtype, isa):
    """Output rows no wider than the input rows (1x1 layers): panels of the forward GEMM
    span several output rows and are read in place; rows off the image are not."""
    rng = np.random.default_rng(17)
    for H, W in [(5, 20), (3, 17), (9, 12), (2, 40)]:
        x = rand(rng, (2, 33, H, W), dtype)
        w = rand(rng, (17, 33) + kernel, dtype)
        b = rand(rng, (17,), dtype)
        assert_close(fastconv.conv2d(x, w, b, padding=padding),
                     ref.conv2d(x, w, b, padding=padding), dtype, 33 * kernel[0], f"{H}x{W}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("Wo", [8, 16, 24])
def test_rows_as_wide_as_a_narrower_panel(Wo, dtype, isa):
    """Output rows of 16 (8 in float64) with AVX-512's panels twice as wide: the forward GEMM
    runs on the next narrower ISA's micro-kernel, its panels read in place; rows of other
    widths (and every K, the A tile's edges) stay on the full-width one."""
    rng = np.random.default_rng(23)
    for K, C, padding in [(16, 6, 0), (5, 6, 2), (23, 9, (0, 1))]:
        x = rand(rng, (3, C, 6, Wo + 4 - 2 * (padding if isinstance(padding, int) else 1)),
                 dtype)
        w = rand(rng, (K, C, 5, 5), dtype)
        b = rand(rng, (K,), dtype)
        assert_close(fastconv.conv2d(x, w, b, padding=padding),
                     ref.conv2d(x, w, b, padding=padding), dtype, C * 25, f"K={K} Wo={Wo}")


@pytest.mark.parametrize("groups,C,K", [(1, 24, 40), (2, 16, 12), (1, 8, 300)])
@pytest.mark.parametrize("bias", [False, True])
def test_pointwise_input_grad_written_into_dx(groups, C, K, bias, isa):
    """1x1 stride-1 unpadded layers: the GEMM writes the input gradient straight into dx
    (onto the bias for conv_transpose2d); K = 300 spans two reduction blocks."""
    rng = np.random.default_rng(C * K + groups)
    dy = rng.standard_normal((3, K, 7, 9)).astype(np.float32)
    w = rng.standard_normal((K, C // groups, 1, 1)).astype(np.float32)
    got = fastconv.conv2d_input_grad((3, C, 7, 9), w, dy, groups=groups)
    want = ref.conv2d_input_grad((3, C, 7, 9), w, dy, groups=groups)
    assert_close(got, want, np.float32, K // groups, "input grad")
    b = rng.standard_normal(C).astype(np.float32) if bias else None
    wt = rng.standard_normal((K, C // groups, 1, 1)).astype(np.float32)
    got_t = fastconv.conv_transpose2d(dy, wt, b, groups=groups)
    want_t = ref.conv_transpose2d(dy, wt, b, groups=groups)
    assert_close(got_t, want_t, np.float32, K // groups, "conv_transpose2d")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("c", [  # N, C, H, W, K, kernel, stride, padding, dilation, groups
    (9, 6, 14, 14, 16, 5, 1, 0, 1, 1),   # LeNet's second layer
    (8, 3, 12, 11, 8, 3, 1, (1, 0), 1, 1),
    (10, 4, 9, 13, 6, (3, 2), (2, 1), (1, 0), 1, 2),
    (8, 5, 10, 10, 7, 3, 2, 2, 2, 1),
    (8, 2, 9, 7, 5, (3, 4), 1, (2, 1), 1, 1),  # rows of 6, rectangular window, padded
    # stride 1 (col2im_rows: tiles of rows by 32-byte vectors, each tap under a lane mask;
    # layers of up to 12 channels padded less than the flipped layer, which else takes
    # rows_taps on AVX2 and AVX-512):
    (8, 3, 5, 5, 4, 5, 1, 0, 1, 1),     # one output: a run shorter than the window row
    (8, 2, 5, 8, 3, (1, 7), 1, (0, 2), 1, 1),  # 7 taps a row, rows of one float vector
    (8, 2, 7, 6, 3, (3, 1), 1, 1, 1, 1),  # one tap a row
    (8, 4, 10, 12, 5, 3, 1, 0, 1, 1),
    (8, 3, 9, 17, 5, 3, 1, (0, 1), 1, 1),  # rows of 17: one lane past 16 (float64's 4 vectors)
    (8, 2, 11, 33, 4, (2, 5), 1, (3, 6), (1, 2), 1),  # padding past the window, dilated
    (9, 3, 7, 1, 4, (3, 1), 1, (1, 0), 1, 1),  # planes one column wide
    (8, 2, 6, 40, 3, (1, 17), 1, (0, 7), 1, 1),  # 17 window columns: the scatter instead
    (16, 16, 32, 32, 8, 3, 1, 1, 1, 1),  # a column gradient of 0.6-1.2 MB an image
    # over 4 MiB of column gradient an image: bands of output rows, added into dx in turn
    (16, 40, 50, 50, 4, 5, 1, 2, 1, 1),   # 10-20 MB an image: bands of 20 or 10 rows
    (16, 32, 124, 124, 4, 3, 2, 1, 1, 1),  # stride 2 (col2im in pairs of taps)
    (16, 96, 3, 300, 3, (3, 7), 1, (2, 3), 1, 1),  # 2.4 MB a row: bands of one (float64:
                                                   # 4.8 MB, chunks of whole images)
], ids=lambda c: fmt(c))
def test_input_grad_image_by_image(c, dtype, isa):
    """Batches of small images: each thread computes one image's column gradient and
    scatters it into dx at once; results match the reference and do not depend on the
    thread count (bit for bit), with and without a bias (conv_transpose2d)."""
    N, C, H, W, K, kernel, stride, padding, dilation, groups = c
    kh, kw = ref.pair(kernel)
    rng = np.random.default_rng(N * C * H)
    w = rand(rng, (K, C // groups, kh, kw), dtype)
    y_shape = ref.conv2d(np.zeros((1, C, H, W)), np.zeros(w.shape), stride=stride,
                         padding=padding, dilation=dilation, groups=groups).shape
    dy = rand(rng, (N,) + y_shape[1:], dtype)
    args = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    want = ref.conv2d_input_grad((N, C, H, W), w, dy, **args)
    results = at_thread_counts(lambda: fastconv.conv2d_input_grad((N, C, H, W), w, dy, **args))
    assert_close(results[0], want, dtype, (K // groups) * kh * kw, fmt(c))
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0])
    if dilation == 1 and stride == 1:  # conv_transpose2d adds the bias in the same pass
        wt = rand(rng, (y_shape[1], C // groups, kh, kw), dtype)
        b = rand(rng, (C,), dtype)
        got_t = fastconv.conv_transpose2d(dy, wt, b, padding=padding, groups=groups)
        want_t = ref.conv_transpose2d(dy, wt, b, padding=padding, groups=groups)
        assert_close(got_t, want_t, dtype, (K // groups) * kh * kw, "conv_transpose2d")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("c", [  # N, C, H, W, K, kernel, stride, padding, dilation
    (2, 3, 41, 64, 20, 7, 2, 3, 1),    # the stem's geometry: output rows of 32
    (3, 1, 20, 62, 13, (5, 4), (1, 2), (2, 2), (2, 1)),  # vertical stride 1, dilation; even width
    (2, 2, 9, 32, 6, (1, 2), 2, 0, 1),  # one window row, no padding
    (1, 7, 20, 64, 9, 7, 2, 3, 1),     # C*R*S = 343: two reduction blocks
    (2, 3, 30, 31, 5, 3, 2, (0, 1), 1),  # Wo = 16: one panel of 16 per row, two of 8
], ids=lambda c: fmt(c))
def test_forward_parity_planes(c, dtype, isa):
    """Stride-2 layers with few channels whose output rows are whole panels: the input is
    split by column parity so that every panel row is read in place. Matches the reference,
    with the bias, and does not depend on the thread count (bit for bit)."""
    N, C, H, W, K, kernel, stride, padding, dilation = c
    kh, kw = ref.pair(kernel)
    rng = np.random.default_rng(N * C * H * W)
    x = rand(rng, (N, C, H, W), dtype)
    w = rand(rng, (K, C, kh, kw), dtype)
    b = rand(rng, (K,), dtype)
    args = dict(stride=stride, padding=padding, dilation=dilation)
    want = ref.conv2d(x, w, b, **args)
    assert want.shape[3] % 16 == 0  # the path's condition, for panels of 8 and of 16
    results = at_thread_counts(lambda: fastconv.conv2d(x, w, b, **args))
    assert_close(results[0], want, dtype, C * kh * kw, fmt(c))
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0])


def _weight_grad_case(c, dtype):
    """x, dy, the weight shape and the keyword arguments of a weight-gradient case
    (N, C, H, W, K, kernel, stride, padding, dilation)."""
    N, C, H, W, K, kernel, stride, padding, dilation = c
    kh, kw = ref.pair(kernel)
    rng = np.random.default_rng(N * C * H * W + K)
    x = rand(rng, (N, C, H, W), dtype)
    args = dict(stride=stride, padding=padding, dilation=dilation)
    y_shape = ref.conv2d(np.zeros((1, C, H, W)), np.zeros((K, C, kh, kw)), **args).shape
    dy = rand(rng, (N,) + y_shape[1:], dtype)
    return x, dy, (K, C, kh, kw), args


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("c", [  # N, C, H, W, K, kernel, stride, padding, dilation
    (2, 3, 41, 224, 16, 7, 2, 3, 1),   # the stem's geometry
    (2, 1, 9, 140, 20, (3, 4), (1, 2), (1, 2), (1, 2)),  # vertical stride 1, dilated, K = 20
    (3, 7, 260, 260, 17, 3, 2, 1, 1),  # float64: batch chunks of 2 images, slices across them
    (1, 2, 5, 140, 33, (1, 5), 2, 0, 1),  # one window row, no padding
    (1, 3, 4, 130, 300, 3, 2, 1, 1),   # K = 300: dW^T's rows summed in two blocks
], ids=lambda c: fmt(c))
def test_weight_grad_phase_planes(c, dtype, isa):
    """Few input channels, horizontal stride 2 and long output rows: the weight gradient runs
    transposed, the taps' runs of x read in place from its column-phase planes. Matches the
    reference and does not depend on the thread count (bit for bit)."""
    x, dy, w_shape, args = _weight_grad_case(c, dtype)
    N, _, Ho, Wo = dy.shape
    assert ref.pair(args["stride"])[1] == 2 and Wo >= 64  # the path's condition
    want = ref.conv2d_weight_grad(x, w_shape, dy, **args)
    results = at_thread_counts(lambda: fastconv.conv2d_weight_grad(x, w_shape, dy, **args))
    assert_close(results[0], want, dtype, N * Ho * Wo, fmt(c))
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("c", [  # N, C, H, W, K
    (3, 13, 20, 17, 21),   # P = 340: two reduction blocks; K = 21: a partial column panel
    (2, 128, 9, 9, 70),    # two tasks of 64 output channels, the second partial
    (1, 5, 1, 3, 16),      # one short block
    (4, 24, 20, 20, 48),   # 48 output channels: blocks of 32 (AVX2: 16) where threads wait
    (11, 40, 6, 7, 12),    # one column panel: 8 slices of the images, added in order
], ids=lambda c: fmt(c))
def test_weight_grad_pointwise(c, dtype, isa):
    """1x1 layers: the weight gradient runs as x (C x P) times dy^T, dy's panels packed by
    transposes. Matches the reference and does not depend on the thread count (bit for bit)."""
    N, C, H, W, K = c
    rng = np.random.default_rng(N * C * H * W * K)
    x = rand(rng, (N, C, H, W), dtype)
    dy = rand(rng, (N, K, H, W), dtype)
    want = ref.conv2d_weight_grad(x, (K, C, 1, 1), dy)
    results = at_thread_counts(lambda: fastconv.conv2d_weight_grad(x, (K, C, 1, 1), dy))
    assert_close(results[0], want, dtype, N * H * W, fmt(c))
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0])


def _check_weight_grad_at_thread_counts(x, dy, w_shape, args, dtype, what):
    """The weight gradient matches the reference at 1-4 threads, and each thread count gives
    the same result on every call."""
    N, _, Ho, Wo = dy.shape
    want = ref.conv2d_weight_grad(x, w_shape, dy, **args)
    call = lambda: fastconv.conv2d_weight_grad(x, w_shape, dy, **args)
    counts = (1, 2, 3, 4)
    for threads, got, again in zip(counts, at_thread_counts(call, counts),
                                   at_thread_counts(call, counts)):
        assert_close(got, want, dtype, N * Ho * Wo, f"{what} {threads} threads")
        np.testing.assert_array_equal(got, again)


PLANE_DOTS_CASES = [  # N, C, H, W, K, kernel, stride, padding, dilation
    (3, 3, 32, 32, 32, 3, 1, 1, 1),        # cifar_c1: K = 32 in blocks of 4 (AVX2: 3)
    (2, 1, 28, 28, 6, 5, 1, 2, 1),         # LeNet's first layer: 5 taps a window row
    (1, 1, 30, 33, 13, 7, 1, 3, 1),        # batch 1: dW's channels split; 7 taps as 4 + 3
    (2, 2, 20, 29, 5, (3, 6), 1, 1, 1),    # 6 taps as 3 + 3; rows of 26
    (2, 1, 18, 40, 7, (16, 1), 1, 0, 1),   # one tap a window row, 16 window rows
    (2, 3, 24, 30, 9, 3, 1, 2, 2),         # dilated
    (2, 5, 12, 26, 4, (2, 3), 1, 0, 1),    # C*S = 15; rows of 24 (3 float vectors exactly)
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("c", PLANE_DOTS_CASES, ids=lambda c: fmt(c))
def test_weight_grad_plane_dots(c, dtype, isa):
    """Few input channels at stride 1 with rows of 24+ outputs (float64: 16+): the weight
    gradient runs as dot products of dy's planes with the padded image's (rows_dots), in
    tiles of up to 4 planes and 5 taps. Matches the reference at 1-4 threads, and each thread
    count gives the same result on every call."""
    x, dy, w_shape, args = _weight_grad_case(c, dtype)
    Wo = dy.shape[3]
    C, kw = w_shape[1], w_shape[3]
    assert Wo >= 24 and C * kw < 16 <= C * w_shape[2] * kw  # the path's condition
    _check_weight_grad_at_thread_counts(x, dy, w_shape, args, dtype, fmt(c))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("c", PLANE_DOTS_CASES + [
    (3, 3, 14, 14, 32, 3, 1, 1, 1),        # rows of 14: the forward pass takes short rows too
    (2, 2, 9, 10, 7, 3, 1, 1, 1),          # rows of 10: two float vectors, overlapping
    (2, 3, 8, 8, 5, 3, 1, 1, 1),           # rows of one float vector
    # at most 12 output channels, any input channels (rows of two vectors or more; not on
    # the baseline ISA, which takes the GEMM)
    (2, 32, 18, 17, 8, 3, 1, 1, 1),        # rows of 17: one lane past two float vectors
    (1, 20, 12, 40, 12, (3, 5), 1, (1, 2), 1),  # 12 output channels: tiles of 4 and 3 planes
    (3, 9, 16, 36, 1, 5, 1, 2, (2, 1)),    # one output channel, dilated rows
    (2, 64, 9, 16, 5, 3, 1, 0, 1),         # 576 taps a plane
], ids=lambda c: fmt(c))
def test_forward_plane_taps(c, dtype, isa):
    """The same layers' forward pass, rows as short as one vector, and layers to at most 12
    output channels: tiles of up to 4 output planes by 4 vectors of a row (the row's last
    vectors shifted back), every tap summed in registers, the bias added.
    Matches the reference at 1-4 threads, bit for bit the same at each."""
    N, C, H, W, K, kernel, stride, padding, dilation = c
    kh, kw = ref.pair(kernel)
    rng = np.random.default_rng(N * C * H * W * K)
    x = rand(rng, (N, C, H, W), dtype)
    w = rand(rng, (K, C, kh, kw), dtype)
    b = rand(rng, (K,), dtype)
    args = dict(stride=stride, padding=padding, dilation=dilation)
    want = ref.conv2d(x, w, b, **args)
    results = at_thread_counts(lambda: fastconv.conv2d(x, w, b, **args), (1, 2, 3, 4))
    assert_close(results[0], want, dtype, C * kh * kw, fmt(c))
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("c", [c for c in PLANE_DOTS_CASES
                               if ref.pair(c[7])[1] <= (ref.pair(c[5])[1] - 1) * c[8]] + [
    # at most 12 input channels, padded at least as the flipped layer (AVX2, AVX-512)
    (2, 8, 17, 33, 24, 3, 1, 1, 1),        # rows of 33
    (1, 12, 16, 16, 20, 5, 1, 2, 1),       # 12 planes of dx: tiles of 4 (AVX2: 2)
    (2, 5, 12, 18, 40, (3, 5), 1, (2, 3), 1),  # more than the window's padding (1, 2)
    (2, 16, 20, 24, 2, 5, 1, 2, 1),        # 2 output channels: the flipped layer's few inputs
], ids=lambda c: fmt(c))
def test_input_grad_plane_taps(c, dtype, isa):
    """The same layers' input gradient (their padding at most the window's extent), and
    layers of at most 12 input channels whose padding is at least the flipped layer's: dx's
    few planes as a forward pass over the zero-padded dy with the flipped weights
    (rows_taps).
    Matches the reference at 1-4 threads, bit for bit the same at each."""
    x, dy, w_shape, args = _weight_grad_case(c, dtype)
    rng = np.random.default_rng(len(fmt(c)))
    w = rand(rng, w_shape, dtype)
    want = ref.conv2d_input_grad(x.shape, w, dy, **args)
    results = at_thread_counts(lambda: fastconv.conv2d_input_grad(x.shape, w, dy, **args),
                               (1, 2, 3, 4))
    assert_close(results[0], want, dtype, w_shape[0] * w_shape[2] * w_shape[3], fmt(c))
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_conv_transpose_plane_taps_bias(dtype, isa):
    """A transposed convolution to 3 channels (the input gradient's plane path) adds its bias
    to every output plane."""
    rng = np.random.default_rng(7)
    x = rand(rng, (2, 32, 30, 30), dtype)
    w = rand(rng, (32, 3, 3, 3), dtype)
    b = rand(rng, (3,), dtype)
    want = ref.conv_transpose2d(x, w, b, padding=1)
    got = fastconv.conv_transpose2d(x, w, b, padding=1)
    assert got.shape == (2, 3, 30, 30)
    assert_close(got, want, dtype, 32 * 9, "conv_transpose2d 32 -> 3")


# Strided layers with at most 4 input channels and phase rows of 24 or more (3 float
# vectors): the input gradient as stride-1 correlations per phase of dx (input_grad_phase_taps,
# on AVX-512; the other ISAs run these layers on the GEMM path).
# N, C, H, W, K, kernel, stride, padding
STRIDE_PHASE_CASES = [
    (2, 3, 56, 58, 16, 7, 2, 3),              # the stem's window, stride and padding
    (1, 2, 33, 61, 8, (3, 5), 2, (1, 2)),     # odd sizes: phases of unequal rows and columns
    (2, 1, 40, 80, 16, (4, 3), (3, 2), (0, 1)),
    (2, 4, 30, 75, 20, 3, 3, 1),              # one tap row and column per phase
    (2, 3, 20, 50, 8, (3, 4), (1, 2), 1),     # strided along the rows only
    (1, 3, 21, 30, 7, (5, 3), (2, 1), (2, 0)),  # along the columns only
    (2, 2, 30, 52, 4, 5, 2, 4),               # padding of the whole window's extent
    (3, 3, 96, 50, 5, (6, 4), 2, (2, 3)),     # several bands of rows an image
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("c", STRIDE_PHASE_CASES, ids=lambda c: fmt(c))
def test_input_grad_stride_phases(c, dtype, isa):
    """dx's stride phases, each a stride-1 correlation of the zero-padded dy over the taps
    that reach it, interleaved into dx.
    Matches the reference at 1-4 threads, bit for bit the same at each."""
    N, C, H, W, K, kernel, stride, padding = c
    (kh, kw), (sh, sw) = ref.pair(kernel), ref.pair(stride)
    assert C <= 4 and W // sw >= 24 and kh >= sh and kw >= sw  # the path's condition
    assert K * (kh // sh) * (kw // sw) >= 16
    rng = np.random.default_rng(N * C * H * W * K)
    w = rand(rng, (K, C, kh, kw), dtype)
    args = dict(stride=stride, padding=padding)
    Ho, Wo = ref.conv2d(np.zeros((1, C, H, W)), np.zeros((1, C, kh, kw)), **args).shape[2:]
    dy = rand(rng, (N, K, Ho, Wo), dtype)
    want = ref.conv2d_input_grad((N, C, H, W), w, dy, **args)
    results = at_thread_counts(lambda: fastconv.conv2d_input_grad((N, C, H, W), w, dy, **args),
                               (1, 2, 3, 4))
    assert_close(results[0], want, dtype, K * kh * kw, fmt(c))
    for got in results[1:]:
        np.testing.assert_array_equal(got, results[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_conv_transpose_stride_phases_bias(dtype, isa):
    """A stride-2 transposed convolution to 3 channels (the stride phases' path) adds its
    bias to every phase of every output plane."""
    rng = np.random.default_rng(8)
    x = rand(rng, (2, 16, 30, 30), dtype)
    w = rand(rng, (16, 3, 5, 5), dtype)
    b = rand(rng, (3,), dtype)
    args = dict(stride=2, padding=2, output_padding=1)
    want = ref.conv_transpose2d(x, w, b, **args)
    got = fastconv.conv_transpose2d(x, w, b, **args)
    assert got.shape == (2, 3, 60, 60)
    assert_close(got, want, dtype, 16 * 25, "conv_transpose2d 16 -> 3, stride 2")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_input_grad_stride_phases_infinite_weight(dtype, isa):
    """An infinite weight: the padded dy's zeros times it would be NaN where the true sum
    (over the taps inside dy only) is infinite, so such weights take the GEMM path."""
    rng = np.random.default_rng(9)
    w = rand(rng, (8, 3, 5, 5), dtype)
    w[2, 1, 0, 0] = np.inf
    dy = np.abs(rand(rng, (1, 8, 24, 32), dtype))
    args = dict(stride=2, padding=2)
    want = ref.conv2d_input_grad((1, 3, 48, 64), w, dy, **args)
    got = fastconv.conv2d_input_grad((1, 3, 48, 64), w, dy, **args)
    assert np.isinf(want).any() and not np.isnan(want).any()
    assert_close(got, want, dtype, 8 * 25, "infinite weight")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_weight_grad_plane_dots_infinity_in_a_zeroed_lane(dtype, isa):
    """Rows of 27: the last vector is shifted back over columns already counted, their lanes
    multiplied by zero. An infinity of x there would give 0 * inf = NaN where the true sum is
    an infinity; the path then recomputes dW exactly, and the infinities match the reference."""
    c = (2, 3, 16, 27, 8, 3, 1, 1, 1)
    x, dy, w_shape, args = _weight_grad_case(c, dtype)
    x[0, 0, 5, 20] = np.inf   # float32: padded column 21, read by zeroed lanes 19-21
    x[1, 2, 7, 23] = -np.inf  # float64: padded column 24, read by zeroed lane 23
    with np.errstate(invalid="ignore"):
        want = ref.conv2d_weight_grad(x, w_shape, dy, **args)
    got = fastconv.conv2d_weight_grad(x, w_shape, dy, **args)
    assert np.isinf(want).any() and not np.isnan(want).any()
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    finite = np.isfinite(want)
    assert np.isfinite(got[finite]).all()
    assert_close(got[finite], want[finite], dtype, 2 * 16 * 27, fmt(c))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("c", [  # N, C, H, W, K, kernel, stride, padding, dilation
    (3, 8, 100, 44, 17, 3, 2, 1, 1),       # L = 3300: splits end inside images at 2 threads
    (1, 8, 140, 64, 16, 3, 2, 1, 1),       # batch 1: two splits of one image
    (5, 2, 61, 40, 12, 5, 2, 2, 1),        # window rows stacked into the channels
    (2, 3, 120, 14, 32, 3, 1, 1, 1),       # stride 1, stacked (rows too short for the planes)
    (2, 3, 60, 61, 20, 11, 4, 2, 1),       # 11x11 stride 4, stacked: rows of 33 values
    (3, 8, 18, 19, 10, 5, 1, 2, 1),        # 8 channels 5x5, stacked (AVX-512 float32)
    (64, 1, 14, 14, 6, 5, 1, 2, 1),        # one input channel, stride 1, rows of 14
    (4, 1, 30, 30, 5, 3, 2, 1, 1),         # one input channel, stride 2
    (4, 16, 50, 50, 9, 3, 2, 1, 2),        # dilated width: a segment per tap
    (3, 16, 30, 30, 70, 3, 2, 1, 1),       # L = 675: one split, dW's rows split instead
], ids=lambda c: fmt(c))
def test_weight_grad_channels_last_splits(c, dtype, isa):
    """The channels-last weight gradient splits the batch's output positions between tasks
    (anywhere in an image; each task copies the rows its positions meet) and sums their
    partial dW in order; a short reduction splits dW's rows instead. Matches the reference at
    1-4 threads, and each thread count gives the same result on every call."""
    x, dy, w_shape, args = _weight_grad_case(c, dtype)
    Wo = dy.shape[3]
    assert Wo < 64  # not the phase-plane path
    _check_weight_grad_at_thread_counts(x, dy, w_shape, args, dtype, fmt(c))
