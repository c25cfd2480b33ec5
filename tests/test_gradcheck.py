"""Finite-difference gradient checks (float64).

For f(x) = <g, op(x)> with a fixed random projection g, the gradient returned
by the fastconv backward function is compared with central differences
(f(x + eps e_i) - f(x - eps e_i)) / (2 eps) computed with the fastconv forward
function, for every element of x (the tensors are small).  This checks the
backward kernels against the forward kernels, independently of reference.py.
"""

import zlib

import numpy as np
import pytest

import fastconv

EPS = 1e-6


def numeric_grad(f, x, eps=EPS):
    x = np.array(x, dtype=np.float64, copy=True)
    g = np.zeros_like(x)
    flat = x.reshape(-1)
    gflat = g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f(x)
        flat[i] = old - eps
        fm = f(x)
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return g


def check(analytic, numeric, what):
    assert analytic.shape == numeric.shape, what
    assert analytic.dtype == np.float64, what
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-6, err_msg=what)
    # guard against a trivially-zero gradient passing
    assert np.abs(numeric).max() > 1e-3, what


CONV_COMBOS = [
    # N, C, H, W, K, R, S, stride, padding, dilation, groups
    (2, 3, 6, 7, 4, 3, 3, 1, 0, 1, 1),
    (1, 2, 7, 8, 3, 3, 3, 2, 1, 1, 1),
    (2, 4, 7, 7, 6, 3, 2, (2, 1), (1, 0), (1, 2), 2),
    (1, 3, 8, 6, 3, 3, 3, 1, 2, 2, 3),       # depthwise, dilated
    (1, 2, 5, 9, 5, 1, 4, (1, 3), (0, 2), 1, 1),
    (1, 4, 6, 6, 4, 2, 2, 3, 1, 1, 2),       # stride 3, windows skip pixels
]


def _ids(c):
    return "_".join(str(v).replace(" ", "") for v in c)


@pytest.mark.parametrize("combo", CONV_COMBOS, ids=_ids)
def test_conv2d_gradients(combo, isa):
    N, C, H, W, K, R, S, st, pad, dil, G = combo
    rng = np.random.default_rng(zlib.crc32(_ids(combo).encode()))
    p = dict(stride=st, padding=pad, dilation=dil, groups=G)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((K, C // G, R, S))
    b = rng.standard_normal(K)
    y = fastconv.conv2d(x, w, b, **p)
    g = rng.standard_normal(y.shape)

    gx = fastconv.conv2d_input_grad(x.shape, w, g, **p)
    check(gx, numeric_grad(lambda xx: np.vdot(g, fastconv.conv2d(xx, w, b, **p)), x), "input")

    gw = fastconv.conv2d_weight_grad(x, w.shape, g, **p)
    check(gw, numeric_grad(lambda ww: np.vdot(g, fastconv.conv2d(x, ww, b, **p)), w), "weight")

    gb = g.sum(axis=(0, 2, 3))
    check(gb, numeric_grad(lambda bb: np.vdot(g, fastconv.conv2d(x, w, bb, **p)), b), "bias")


CONVT_COMBOS = [
    # N, C, H, W, O, R, S, stride, padding, output_padding, groups, dilation
    (2, 3, 4, 5, 2, 3, 3, 1, 0, 0, 1, 1),
    (1, 2, 4, 4, 3, 3, 3, 2, 1, 1, 1, 1),
    (1, 4, 3, 5, 4, 3, 2, (2, 3), (1, 0), (1, 2), 2, 1),
    (1, 2, 4, 3, 2, 2, 3, 1, 1, (1, 0), 1, (2, 1)),
    (2, 3, 3, 3, 3, 3, 3, 3, 0, 2, 3, 1),
]


@pytest.mark.parametrize("combo", CONVT_COMBOS, ids=_ids)
def test_conv_transpose2d_gradients(combo, isa):
    N, C, H, W, O, R, S, st, pad, op, G, dil = combo
    rng = np.random.default_rng(zlib.crc32(_ids(combo).encode()))
    p = dict(stride=st, padding=pad, output_padding=op, groups=G, dilation=dil)
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((C, O // G, R, S))
    b = rng.standard_normal(O)
    y = fastconv.conv_transpose2d(x, w, b, **p)
    g = rng.standard_normal(y.shape)
    cp = dict(stride=st, padding=pad, dilation=dil, groups=G)

    # conv2d maps the convT output size back to H + output_padding // stride rows (only
    # equal to H when output_padding < stride); the extra rows/cols belong to no input pixel
    sh, sw = (st, st) if isinstance(st, int) else st
    oph, opw = (op, op) if isinstance(op, int) else op
    eh, ew = oph // sh, opw // sw

    f_x = numeric_grad(lambda xx: np.vdot(g, fastconv.conv_transpose2d(xx, w, b, **p)), x)
    # d/dx <g, convT(x, w)> = conv2d(g, w)  (cropped to x's size)
    gx = fastconv.conv2d(g, w, None, **cp)
    assert gx.shape == (N, C, H + eh, W + ew)
    check(gx[:, :, :H, :W].copy(), f_x, "convT input")
    f_w = numeric_grad(lambda ww: np.vdot(g, fastconv.conv_transpose2d(x, ww, b, **p)), w)
    # d/dw <g, convT(x, w)> = conv2d_weight_grad(g, w.shape, x)  (x zero-extended)
    x_ext = np.zeros((N, C, H + eh, W + ew))
    x_ext[:, :, :H, :W] = x
    check(fastconv.conv2d_weight_grad(g, w.shape, x_ext, **cp), f_w, "convT weight")
    f_b = numeric_grad(lambda bb: np.vdot(g, fastconv.conv_transpose2d(x, w, bb, **p)), b)
    check(g.sum(axis=(0, 2, 3)), f_b, "convT bias")


POOL_COMBOS = [
    # H, W, kernel, stride, padding, dilation, ceil_mode
    (6, 7, 2, None, 0, 1, False),
    (7, 7, 3, 2, 1, 1, True),
    (8, 6, (3, 2), (1, 2), (1, 1), 1, False),   # overlapping windows
    (9, 9, 3, 2, 1, 2, False),
    (7, 8, (2, 3), 3, (1, 0), (2, 1), True),
]


@pytest.mark.parametrize("combo", POOL_COMBOS, ids=_ids)
def test_max_pool2d_gradients(combo, isa):
    H, W, k, st, pad, dil, ceil = combo
    rng = np.random.default_rng(zlib.crc32(_ids(combo).encode()))
    shape = (2, 2, H, W)
    # distinct values spaced by 1e-2 >> EPS: no ties, the argmax cannot flip
    x = (rng.permutation(int(np.prod(shape))).reshape(shape) * 1e-2
         + rng.uniform(0, 1e-3, shape))
    kw = dict(kernel_size=k, stride=st, padding=pad, dilation=dil, ceil_mode=ceil)
    y, idx = fastconv.max_pool2d(x, return_indices=True, **kw)
    g = rng.standard_normal(y.shape)
    gx = fastconv.max_pool2d_backward(g, idx, x.shape)
    check(gx, numeric_grad(lambda xx: np.vdot(g, fastconv.max_pool2d(xx, **kw)), x), "max")


AVG_COMBOS = [
    # H, W, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override
    (6, 7, 2, None, 0, False, True, None),
    (7, 7, 3, 2, 1, True, True, None),
    (7, 7, 3, 2, 1, True, False, None),
    (8, 6, (3, 2), (1, 2), (1, 1), False, False, None),
    (6, 6, 3, 2, 1, True, True, 5),
]


@pytest.mark.parametrize("combo", AVG_COMBOS, ids=_ids)
def test_avg_pool2d_gradients(combo, isa):
    H, W, k, st, pad, ceil, cip, div = combo
    rng = np.random.default_rng(zlib.crc32(_ids(combo).encode()))
    x = rng.standard_normal((2, 2, H, W))
    kw = dict(kernel_size=k, stride=st, padding=pad, ceil_mode=ceil, count_include_pad=cip,
              divisor_override=div)
    y = fastconv.avg_pool2d(x, **kw)
    g = rng.standard_normal(y.shape)
    gx = fastconv.avg_pool2d_backward(g, x.shape, **kw)
    check(gx, numeric_grad(lambda xx: np.vdot(g, fastconv.avg_pool2d(xx, **kw)), x), "avg")
