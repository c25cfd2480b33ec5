"""Optional parity tests against PyTorch (skipped when torch is not installed).

Also validates reference.py itself against torch, so that the reference used by
the main (torch-free) tests is known to follow torch semantics.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import fastconv  # noqa: E402
import reference as ref  # noqa: E402
from helpers import assert_close, fmt  # noqa: E402

torch.set_num_threads(1)


def T(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def _rand_conv(rng):
    G = int(rng.choice([1, 1, 2, 3]))
    if rng.random() < 0.2:
        C = int(rng.choice([2, 3, 4])); G = C; K = C * int(rng.integers(1, 3))  # noqa: E702
    else:
        C = G * int(rng.integers(1, 4)); K = G * int(rng.integers(1, 6))  # noqa: E702
    R, S = int(rng.choice([1, 2, 3, 4, 5, 7])), int(rng.choice([1, 2, 3, 5, 7]))
    st = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    dl = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    u = rng.random()
    pad = ((int(rng.integers(0, 3)), int(rng.integers(0, 3))) if u < 0.6 else
           ("valid" if u < 0.75 else "same"))
    if pad == "same":
        st = (1, 1)
    N, H, W = int(rng.integers(1, 3)), int(rng.integers(1, 16)), int(rng.integers(1, 16))
    return N, C, H, W, K, R, S, st, pad, dl, G


def _conv_cases(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        c = _rand_conv(rng)
        N, C, H, W, K, R, S, st, pad, dl, G = c
        (pt, pb), (pl, pr) = ref.resolve_conv_padding(pad, (R, S), dl)
        if (ref.conv_out_size(H, pt, pb, R, st[0], dl[0]) < 1 or
                ref.conv_out_size(W, pl, pr, S, st[1], dl[1]) < 1):
            continue
        out.append(c + (int(rng.integers(2**31)),))
    return out


CONV = _conv_cases(60, 123)


def _cid(c):
    return "_".join(fmt(v) for v in c)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("case", CONV, ids=_cid)
def test_reference_conv_matches_torch(case):
    N, C, H, W, K, R, S, st, pad, dl, G, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((K, C // G, R, S))
    b = rng.standard_normal(K)
    p = dict(stride=st, padding=pad, dilation=dl, groups=G)
    y = F.conv2d(T(x), T(w), T(b), **p).numpy()
    np.testing.assert_allclose(ref.conv2d(x, w, b, **p), y, rtol=1e-10, atol=1e-10)
    if isinstance(pad, str):
        return  # torch.nn.grad does not take string padding
    go = rng.standard_normal(y.shape)
    np.testing.assert_allclose(ref.conv2d_input_grad(x.shape, w, go, **p),
                               torch.nn.grad.conv2d_input(x.shape, T(w), T(go), **p).numpy(),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ref.conv2d_weight_grad(x, w.shape, go, **p),
                               torch.nn.grad.conv2d_weight(T(x), w.shape, T(go), **p).numpy(),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CONV[:40], ids=_cid)
def test_conv2d_parity(case, dtype, isa):
    N, C, H, W, K, R, S, st, pad, dl, G, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // G, R, S)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    p = dict(stride=st, padding=pad, dilation=dl, groups=G)
    red = (C // G) * R * S
    y = F.conv2d(T(x), T(w), T(b), **p).numpy()
    assert_close(fastconv.conv2d(x, w, b, **p), y.astype(np.float64), dtype, red, "conv2d")
    if isinstance(pad, str):
        return
    go = rng.standard_normal(y.shape).astype(dtype)
    gi = torch.nn.grad.conv2d_input(x.shape, T(w), T(go), **p).numpy()
    assert_close(fastconv.conv2d_input_grad(x.shape, w, go, **p), gi.astype(np.float64), dtype,
                 (K // G) * R * S, "input_grad")
    gw = torch.nn.grad.conv2d_weight(T(x), w.shape, T(go), **p).numpy()
    assert_close(fastconv.conv2d_weight_grad(x, w.shape, go, **p), gw.astype(np.float64),
                 dtype, N * y.shape[2] * y.shape[3], "weight_grad")
    # autograd agrees as well (bias gradient = sum of grad_output)
    xt, wt, bt = (T(a).clone().requires_grad_() for a in (x, w, b))
    F.conv2d(xt, wt, bt, **p).backward(T(go))
    assert_close(fastconv.conv2d_weight_grad(x, w.shape, go, **p),
                 wt.grad.numpy().astype(np.float64), dtype, N * y.shape[2] * y.shape[3],
                 "weight_grad (autograd)")
    np.testing.assert_allclose(go.astype(np.float64).sum(axis=(0, 2, 3)),
                               bt.grad.numpy().astype(np.float64), rtol=1e-4, atol=1e-3)


def _convT_cases(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        G = int(rng.choice([1, 1, 2, 3]))
        C, O = G * int(rng.integers(1, 4)), G * int(rng.integers(1, 4))
        R, S = int(rng.choice([1, 2, 3, 4, 5])), int(rng.choice([1, 2, 3, 5]))
        st = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        dl = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        pad = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
        op = (int(rng.integers(0, max(st[0], dl[0]))), int(rng.integers(0, max(st[1], dl[1]))))
        N, H, W = int(rng.integers(1, 3)), int(rng.integers(1, 9)), int(rng.integers(1, 9))
        if (ref.conv_transpose_out_size(H, R, st[0], pad[0], op[0], dl[0]) < 1 or
                ref.conv_transpose_out_size(W, S, st[1], pad[1], op[1], dl[1]) < 1):
            continue
        out.append((N, C, H, W, O, R, S, st, pad, op, G, dl, int(rng.integers(2**31))))
    return out


CONVT = _convT_cases(50, 99)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CONVT, ids=_cid)
def test_conv_transpose2d_parity(case, dtype, isa):
    N, C, H, W, O, R, S, st, pad, op, G, dl, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((C, O // G, R, S)).astype(dtype)
    b = rng.standard_normal(O).astype(dtype)
    p = dict(stride=st, padding=pad, output_padding=op, groups=G, dilation=dl)
    y = F.conv_transpose2d(T(x), T(w), T(b), **p).numpy().astype(np.float64)
    if dtype == np.float64:
        np.testing.assert_allclose(ref.conv_transpose2d(x, w, b, **p), y, rtol=1e-10,
                                   atol=1e-10)
    assert_close(fastconv.conv_transpose2d(x, w, b, **p), y, dtype, (C // G) * R * S)


KINDS = ("normal", "ties", "nan", "neginf")


def _pool_cases(n, seed, with_dilation):
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        kh, kw = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        st = None if rng.random() < 0.3 else (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        pad = (int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1)))
        dl = (int(rng.integers(1, 4)), int(rng.integers(1, 4))) if with_dilation else (1, 1)
        ceil = bool(rng.random() < 0.5)
        H, W = int(rng.integers(1, 15)), int(rng.integers(1, 15))
        if ref.max_pool_has_empty_window(H, W, (kh, kw), st, pad, dl, ceil):
            continue
        out.append((H, W, (kh, kw), st, pad, dl, ceil, KINDS[len(out) % len(KINDS)],
                    int(rng.integers(2**31))))
    return out


def _pool_data(rng, shape, kind, dtype):
    if kind == "normal":
        x = rng.standard_normal(shape)
    elif kind == "ties":
        x = rng.integers(-1, 2, shape).astype(np.float64)
    elif kind == "nan":
        x = rng.standard_normal(shape)
        x[rng.random(shape) < 0.2] = np.nan
    else:
        x = rng.standard_normal(shape)
        x[rng.random(shape) < 0.7] = -np.inf
    return x.astype(dtype)


MAXP = _pool_cases(60, 5, True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", MAXP, ids=_cid)
def test_max_pool2d_parity(case, dtype, isa):
    H, W, k, st, pad, dl, ceil, kind, seed = case
    rng = np.random.default_rng(seed)
    x = _pool_data(rng, (2, 3, H, W), kind, dtype)
    kw = dict(kernel_size=k, stride=st, padding=pad, dilation=dl, ceil_mode=ceil)
    yt, it = F.max_pool2d(T(x), return_indices=True, **kw)
    yt, it = yt.numpy(), it.numpy()
    ry, ri = ref.max_pool2d(x, return_indices=True, **kw)
    np.testing.assert_array_equal(ry.astype(dtype), yt, err_msg="reference vs torch")
    np.testing.assert_array_equal(ri, it, err_msg="reference indices vs torch")
    y, i = fastconv.max_pool2d(x, return_indices=True, **kw)
    np.testing.assert_array_equal(y, yt)
    assert i.dtype == np.int64
    np.testing.assert_array_equal(i, it)
    if kind in ("normal", "ties"):
        go = rng.standard_normal(yt.shape).astype(dtype)
        xt = T(x).clone().requires_grad_()
        F.max_pool2d(xt, **kw).backward(T(go))
        assert_close(fastconv.max_pool2d_backward(go, i, x.shape),
                     xt.grad.numpy().astype(np.float64), dtype, k[0] * k[1])


AVGP = _pool_cases(60, 6, False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cip", [True, False], ids=["cip", "nocip"])
@pytest.mark.parametrize("case", AVGP, ids=_cid)
def test_avg_pool2d_parity(case, cip, dtype, isa):
    H, W, k, st, pad, _, ceil, _, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, H, W)).astype(dtype)
    div = None if seed % 3 else int(seed % 7) + 1
    kw = dict(kernel_size=k, stride=st, padding=pad, ceil_mode=ceil, count_include_pad=cip,
              divisor_override=div)
    yt = F.avg_pool2d(T(x), **kw).numpy().astype(np.float64)
    if dtype == np.float64:
        np.testing.assert_allclose(ref.avg_pool2d(x, **kw), yt, rtol=1e-12, atol=1e-12)
    assert_close(fastconv.avg_pool2d(x, **kw), yt, dtype, k[0] * k[1])
    go = rng.standard_normal(yt.shape).astype(dtype)
    xt = T(x).clone().requires_grad_()
    F.avg_pool2d(xt, **kw).backward(T(go))
    gt = xt.grad.numpy().astype(np.float64)
    if dtype == np.float64:
        np.testing.assert_allclose(ref.avg_pool2d_backward(go, x.shape, **kw), gt, rtol=1e-12,
                                   atol=1e-12)
    assert_close(fastconv.avg_pool2d_backward(go, x.shape, **kw), gt, dtype, k[0] * k[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_nan_index_parity(dtype, isa):
    """Several NaNs in one window, NaN before / after the max, NaN in padding rows."""
    x = np.array([[[[1.0, np.nan, 3.0, 0.0],
                    [np.nan, 9.0, np.nan, 2.0],
                    [4.0, 5.0, 6.0, np.nan],
                    [np.nan, -np.inf, 8.0, 7.0]]]], dtype)
    for kw in (dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1),
               dict(kernel_size=2, stride=1, dilation=2), dict(kernel_size=4),
               dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)):
        yt, it = F.max_pool2d(T(x), return_indices=True, **kw)
        y, i = fastconv.max_pool2d(x, return_indices=True, **kw)
        np.testing.assert_array_equal(y, yt.numpy(), err_msg=str(kw))
        np.testing.assert_array_equal(i, it.numpy(), err_msg=str(kw))
