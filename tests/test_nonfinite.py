"""Infinities and NaNs propagate as in PyTorch (an IEEE sum of the same products, whatever its
order): conv2d, its gradients and pooling against the float64 NumPy references, on shapes
that reach every kernel path, under every ISA and convolution algorithm. Non-finite values sit
in the inputs and output gradients, also on border rows and columns that strided windows skip.
The weights stay finite, and the weight gradient's non-finite output gradients sit where
windows are whole: where padding meets an infinity, PyTorch's own backends disagree."""

import numpy as np
import pytest

import fastconv
import reference as ref

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the references' inf - inf

PATHS = {
    # name: (N, C, H, W, K, R, S, stride, padding, dilation, groups)
    "few_channels": (2, 3, 10, 11, 8, 3, 3, 1, 1, 1, 1),
    "winograd_size": (2, 16, 12, 12, 16, 3, 3, 1, 1, 1, 1),
    "strided": (2, 8, 13, 12, 24, 3, 3, 2, 1, 1, 1),
    "dilated": (1, 8, 14, 14, 16, 3, 3, 1, 2, 2, 1),
    "pointwise": (2, 12, 9, 9, 10, 1, 1, 1, 0, 1, 1),
    "depthwise": (2, 8, 10, 10, 8, 3, 3, 1, 1, 1, 8),
    "grouped": (1, 8, 10, 10, 6, 3, 3, 1, 1, 1, 2),
    "single_channel": (2, 1, 12, 12, 6, 5, 5, 1, 2, 1, 1),
    "short_rows": (4, 6, 14, 14, 16, 5, 5, 1, 0, 1, 1),  # input grad image by image
    "stem": (1, 3, 21, 20, 16, 7, 7, 2, 3, 1, 1),
}
BAD = (np.inf, -np.inf, np.nan)


def spoil(rng, a, allowed=None):
    """a with +inf, -inf and NaN at random places of the (H, W) mask `allowed` (default: all,
    and then also in the last row and column)."""
    a = a.copy()
    N, C, H, W = a.shape
    rows, cols = np.nonzero(np.ones((H, W), bool) if allowed is None else allowed)
    for value in BAD:
        i = int(rng.integers(rows.size))
        a[int(rng.integers(N)), int(rng.integers(C)), rows[i], cols[i]] = value
    if allowed is None:
        a[..., -1, -1] = BAD[int(rng.integers(3))]
    return a


def full_windows(H, W, Ho, Wo, R, S, stride, padding, dilation):
    """The outputs whose windows lie inside the image. Elsewhere a non-finite output gradient
    meets the zero padding in the weight gradient, where PyTorch itself differs by backend:
    float32 oneDNN skips padded taps, float64 im2col gives inf * 0 = NaN."""
    def inside(n_out, n_in, k):
        o = np.arange(n_out) * stride - padding
        return (o >= 0) & (o + (k - 1) * dilation < n_in)
    return inside(Ho, H, R)[:, None] & inside(Wo, W, S)[None, :]


def assert_same_nonfinite(got, want, what):
    """The same NaNs and the same signed infinities; finite elsewhere."""
    assert np.isnan(want).any() or np.isinf(want).any(), f"{what}: nothing to compare"
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what}: NaNs")
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want), err_msg=f"{what}: +inf")
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want), err_msg=f"{what}: -inf")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", sorted(PATHS))
def test_conv_passes_propagate_like_pytorch(name, dtype, isa, algorithm):
    N, C, H, W, K, R, S, stride, padding, dilation, groups = PATHS[name]
    rng = np.random.default_rng(len(name))
    p = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // groups, R, S)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    bad_x = spoil(rng, x)
    assert_same_nonfinite(fastconv.conv2d(bad_x, w, b, **p), ref.conv2d(bad_x, w, b, **p),
                          f"{name} conv2d")
    dy = rng.standard_normal(ref.conv2d(x, w, None, **p).shape).astype(dtype)
    bad_dy = spoil(rng, dy)
    assert_same_nonfinite(fastconv.conv2d_input_grad(x.shape, w, bad_dy, **p),
                          ref.conv2d_input_grad(x.shape, w, bad_dy, **p), f"{name} input_grad")
    assert_same_nonfinite(fastconv.conv2d_weight_grad(bad_x, w.shape, dy, **p),
                          ref.conv2d_weight_grad(bad_x, w.shape, dy, **p),
                          f"{name} weight_grad (x)")
    interior_dy = spoil(rng, dy, full_windows(H, W, *dy.shape[2:], R, S, stride, padding,
                                              dilation))
    assert_same_nonfinite(fastconv.conv2d_weight_grad(x, w.shape, interior_dy, **p),
                          ref.conv2d_weight_grad(x, w.shape, interior_dy, **p),
                          f"{name} weight_grad (dy)")
    assert_same_nonfinite(fastconv.conv2d_bias_grad(bad_dy), bad_dy.astype(np.float64).sum(
        axis=(0, 2, 3)), f"{name} bias_grad")


POOLS = [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
         dict(kernel_size=3, stride=2, ceil_mode=True)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("options", POOLS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_pooling_propagates_like_pytorch(options, dtype, isa):
    rng = np.random.default_rng(11)
    x = spoil(rng, rng.standard_normal((2, 3, 11, 12)).astype(dtype))
    y, idx = fastconv.max_pool2d(x, return_indices=True, **options)
    want_y, want_idx = ref.max_pool2d(x, return_indices=True, **options)
    np.testing.assert_array_equal(y, want_y)  # NaN wins the max, as in PyTorch
    np.testing.assert_array_equal(idx, want_idx)
    dy = spoil(rng, rng.standard_normal(y.shape).astype(dtype))
    assert_same_nonfinite(fastconv.max_pool2d_backward(dy, idx, x.shape),
                          ref.max_pool2d_backward(dy, idx, x.shape), "max_pool2d_backward")
    assert_same_nonfinite(fastconv.avg_pool2d(x, **options), ref.avg_pool2d(x, **options),
                          "avg_pool2d")
    dy = spoil(rng, rng.standard_normal(ref.avg_pool2d(x, **options).shape).astype(dtype))
    assert_same_nonfinite(fastconv.avg_pool2d_backward(dy, x.shape, **options),
                          ref.avg_pool2d_backward(dy, x.shape, **options), "avg_pool2d_backward")
