"""relu and relu_backward vs NumPy (and PyTorch's rules for NaN and infinities), on sizes
around the kernels' block size, every layout, both float types; their argument checks."""

import numpy as np
import pytest

import fastconv
from helpers import LAYOUTS, with_layout

SIZES = [(0,), (1,), (7,), (2, 3, 5), (32767,), (32768,), (32769,), (3, 4, 101, 103)]


def _data(rng, shape, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    if flat.size >= 8:  # the special values PyTorch defines the result for
        flat[:6] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30]
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SIZES, ids=lambda s: "x".join(map(str, s)))
def test_relu_forward_and_backward(shape, dtype, rng):
    x = _data(rng, shape, dtype)
    y = fastconv.relu(x)
    want = np.where(x < 0, dtype(0), x)  # NaN stays NaN
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, want)
    dy = rng.standard_normal(shape).astype(dtype)
    dx = fastconv.relu_backward(dy, y)
    np.testing.assert_array_equal(dx, np.where(y <= 0, dtype(0), dy))  # NaN output: passes


@pytest.mark.parametrize("layout", LAYOUTS)
def test_relu_any_layout(layout, rng):
    x = _data(rng, (3, 5, 7, 9), np.float32)
    view = with_layout(x, layout)
    np.testing.assert_array_equal(fastconv.relu(view), np.where(view < 0, 0, view))
    dy = with_layout(rng.standard_normal(x.shape).astype(np.float32), layout)
    y = fastconv.relu(view)
    np.testing.assert_array_equal(fastconv.relu_backward(dy, y), np.where(y <= 0, 0, dy))


def test_relu_matches_torch_rules():
    torch = pytest.importorskip("torch")
    x = np.array([np.nan, np.inf, -np.inf, 0.0, 2.0, -3.0], np.float32)
    y = fastconv.relu(x)
    np.testing.assert_array_equal(y, torch.relu(torch.from_numpy(x)).numpy())
    dy = np.arange(1, 7, dtype=np.float32)
    want = torch.ops.aten.threshold_backward(torch.from_numpy(dy), torch.from_numpy(y), 0)
    np.testing.assert_array_equal(fastconv.relu_backward(dy, y), want.numpy())


def test_relu_out_and_errors():
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    out = np.empty_like(x)
    assert fastconv.relu(x, out=out) is out
    np.testing.assert_array_equal(out, np.maximum(x, 0))
    with pytest.raises(TypeError, match="input: expected a float32 or float64 array"):
        fastconv.relu(np.arange(4))
    with pytest.raises(ValueError, match=r"out: expected shape \(3, 4\)"):
        fastconv.relu(x, out=np.empty((4, 3), np.float32))
    with pytest.raises(TypeError, match="out: expected dtype float32"):
        fastconv.relu(x, out=np.empty((3, 4)))
    with pytest.raises(ValueError, match=r"output: expected shape \(3, 4\)"):
        fastconv.relu_backward(x, x[:2])
    with pytest.raises(TypeError, match="output: dtype float64 differs from grad_output's"):
        fastconv.relu_backward(x, x.astype(np.float64))
