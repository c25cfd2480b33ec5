"""The out= argument: results written into a caller's array, equal to fresh results, checked."""

import numpy as np
import pytest

import fastconv

rng = np.random.default_rng(11)
X = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
W = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
WT = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
Y = fastconv.conv2d(X, W, None, 1, 1, 1, 2)
P, IDX = fastconv.max_pool2d(X, 2, return_indices=True)
A = rng.standard_normal((5, 7)).astype(np.float32)
B = rng.standard_normal((7, 3)).astype(np.float32)

CALLS = {
    "conv2d": lambda out: fastconv.conv2d(X, W, None, 1, 1, 1, 2, out=out),
    "conv2d unbatched": lambda out: fastconv.conv2d(X[0], W, None, 1, 1, 1, 2, out=out),
    "conv2d_input_grad": lambda out: fastconv.conv2d_input_grad(X.shape, W, Y, 1, 1, 1, 2,
                                                                out=out),
    "conv2d_weight_grad": lambda out: fastconv.conv2d_weight_grad(X, W.shape, Y, 1, 1, 1, 2,
                                                                  out=out),
    "conv_transpose2d": lambda out: fastconv.conv_transpose2d(X, WT, None, 2, 1, 1, out=out),
    "max_pool2d": lambda out: fastconv.max_pool2d(X, 2, out=out),
    "max_pool2d_backward": lambda out: fastconv.max_pool2d_backward(P, IDX, X.shape, out=out),
    "avg_pool2d": lambda out: fastconv.avg_pool2d(X, 3, 2, 1, out=out),
    "avg_pool2d_backward": lambda out: fastconv.avg_pool2d_backward(
        fastconv.avg_pool2d(X, 3, 2, 1), X.shape, 3, 2, 1, out=out),
    "matmul": lambda out: fastconv.matmul(A, B, out=out),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_out_is_written_and_returned(name):
    fresh = CALLS[name](None)
    out = np.full(fresh.shape, np.nan, dtype=fresh.dtype)  # kernels overwrite every element
    result = CALLS[name](out)
    assert result is out
    np.testing.assert_array_equal(out, fresh)
    again = CALLS[name](out)  # reused: same result
    np.testing.assert_array_equal(again, fresh)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_out_is_checked(name):
    fresh = CALLS[name](None)
    with pytest.raises(ValueError, match="out: expected shape"):
        CALLS[name](np.empty(fresh.shape[:-1] + (fresh.shape[-1] + 1,), fresh.dtype))
    with pytest.raises(TypeError, match="out: expected dtype"):
        CALLS[name](np.empty(fresh.shape, np.float64))
    with pytest.raises(TypeError, match="out: expected a numpy.ndarray"):
        CALLS[name](fresh.tolist())
    strided = np.empty(fresh.shape[:-1] + (2 * fresh.shape[-1],), fresh.dtype)[..., ::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        CALLS[name](strided)
    readonly = np.empty(fresh.shape, fresh.dtype)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        CALLS[name](readonly)


def test_out_may_not_alias_an_input():
    x = X.copy()
    with pytest.raises(ValueError, match="share memory"):
        fastconv.avg_pool2d(x, 1, out=x)
    square = (A @ A.T).astype(np.float32)
    with pytest.raises(ValueError, match="share memory"):
        fastconv.matmul(square, square, out=square)
