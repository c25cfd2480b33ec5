"""fastconv.matmul (the GEMM behind linear layers) against NumPy in float64, on every ISA."""

import numpy as np
import pytest

import fastconv

SHAPES = [(1, 1, 1), (5, 7, 3), (6, 16, 16), (7, 17, 15), (97, 300, 211), (32, 600, 257),
          (200, 3, 5), (0, 5, 3), (4, 0, 3), (3, 5, 0)]


@pytest.mark.parametrize("m,k,n", SHAPES)
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_matches_numpy(isa, m, k, n, transpose_a, transpose_b, dtype):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a = rng.standard_normal((k, m) if transpose_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if transpose_b else (k, n)).astype(dtype)
    expected = (a.T if transpose_a else a).astype(np.float64) @ \
        (b.T if transpose_b else b).astype(np.float64)
    got = fastconv.matmul(a, b, transpose_a, transpose_b)
    assert got.shape == (m, n) and got.dtype == dtype
    tol = 1e-5 * max(1.0, np.sqrt(k)) if dtype == np.float32 else 1e-12 * max(1.0, np.sqrt(k))
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


def test_matmul_threads_agree_and_views_are_read_in_place():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((300, 400)).astype(np.float32)
    b = rng.standard_normal((500, 400)).astype(np.float32)
    fastconv.set_num_threads(1)
    one = fastconv.matmul(a, b, transpose_b=True)
    fastconv.set_num_threads(2)
    two = fastconv.matmul(a, b, transpose_b=True)
    np.testing.assert_array_equal(one, two)  # disjoint tiles: independent of the threads
    np.testing.assert_allclose(fastconv.matmul(a[:, ::2], b[:, ::2], transpose_b=True),
                               a[:, ::2] @ b[:, ::2].T, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: fastconv.matmul(np.ones((2, 3)), np.ones((4, 2))), ValueError, "inner"),
    (lambda: fastconv.matmul(np.ones(3), np.ones((3, 2))), ValueError, "a:"),
    (lambda: fastconv.matmul(np.ones((2, 3), np.float32), np.ones((3, 2))), TypeError, "b:"),
    (lambda: fastconv.matmul(np.ones((2, 3), np.int64), np.ones((3, 2))), TypeError, "a:"),
])
def test_matmul_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
