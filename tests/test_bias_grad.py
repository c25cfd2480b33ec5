"""conv2d_bias_grad vs a float64 NumPy sum over (batch, height, width), on planes around its
8-wide partial sums, every layout, both float types; its argument checks."""

import numpy as np
import pytest

import fastconv
from helpers import LAYOUTS, with_layout

SHAPES = [(0, 3, 4, 4), (1, 1, 1, 1), (2, 5, 3, 7), (3, 16, 8, 8), (4, 7, 17, 3),
          (2, 64, 1, 9), (5, 3, 33, 31),
          (3, 300, 5, 6)]  # channels in blocks of at most 64, the last one partial


def reference(dy):
    return dy.astype(np.float64).sum(axis=(0, 2, 3))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_bias_grad_matches_a_float64_sum(shape, dtype, rng):
    dy = rng.standard_normal(shape).astype(dtype) + 0.5  # a nonzero mean: sums grow
    got = fastconv.conv2d_bias_grad(dy)
    assert got.shape == (shape[1],) and got.dtype == dtype
    want = reference(dy)
    # Error bound of a float sum: a few units of the dtype's epsilon times the sum of |terms|.
    scale = np.abs(dy).astype(np.float64).sum(axis=(0, 2, 3))
    eps = np.finfo(dtype).eps
    assert np.all(np.abs(got - want) <= 4 * eps * scale + np.finfo(dtype).tiny), (got, want)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bias_grad_any_layout_and_unbatched(layout, rng):
    dy = rng.standard_normal((3, 6, 5, 9)).astype(np.float32)
    want = fastconv.conv2d_bias_grad(dy)
    np.testing.assert_array_equal(fastconv.conv2d_bias_grad(with_layout(dy, layout)), want)
    np.testing.assert_allclose(fastconv.conv2d_bias_grad(dy[1]), reference(dy[1:2]),
                               rtol=1e-5, atol=1e-5)


def test_bias_grad_does_not_depend_on_the_thread_count(rng):
    dy = rng.standard_normal((8, 300, 16, 16)).astype(np.float32)
    fastconv.set_num_threads(1)
    one = fastconv.conv2d_bias_grad(dy)
    fastconv.set_num_threads(2)
    np.testing.assert_array_equal(fastconv.conv2d_bias_grad(dy), one)


def test_bias_grad_out_and_errors():
    dy = np.ones((2, 3, 4, 5), np.float32)
    out = np.full(3, np.nan, np.float32)
    assert fastconv.conv2d_bias_grad(dy, out=out) is out
    np.testing.assert_array_equal(out, np.full(3, 40, np.float32))
    with pytest.raises(TypeError, match="grad_output: expected a float32 or float64 array"):
        fastconv.conv2d_bias_grad(np.ones((2, 3, 4, 5), np.int32))
    with pytest.raises(ValueError, match=r"grad_output: expected a 3-D .* or 4-D"):
        fastconv.conv2d_bias_grad(np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"out: expected shape \(3,\)"):
        fastconv.conv2d_bias_grad(dy, out=np.empty(4, np.float32))
    with pytest.raises(TypeError, match="out: expected dtype float32"):
        fastconv.conv2d_bias_grad(dy, out=np.empty(3))
