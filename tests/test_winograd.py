"""The Winograd F(2x2, 3x3) path: forward, input gradient and weight gradient of 3x3, stride-1
layers vs the NumPy reference at tile and panel edges, its accuracy next to the GEMM path's, which layers
"auto" sends to it, and the algorithm setting (set_algorithm, FASTCONV_ALGORITHM)."""

import numpy as np
import pytest

import fastconv
import reference as ref
from helpers import assert_bitwise_equal, assert_close, child_report, rand, run_child


def _edge_cases():
    """Output planes of 1..70 rows/columns (odd: half tiles; tile rows shorter and longer than a
    panel of 4, 8, 16 or 32 tiles, and panels spanning rows and images; rows of 40 and 70, whose
    blocks of 16 tiles lie inside the image: AVX-512's unmasked loads), asymmetric padding."""
    rng = np.random.default_rng(3)
    cases = []
    for H, W in [(1, 1), (2, 2), (3, 5), (4, 4), (5, 7), (8, 9), (7, 16), (16, 17), (9, 33),
                 (34, 3), (6, 31), (12, 12), (5, 40), (3, 70)]:
        for padding in (0, 1, 2, (1, 0), (3, 2)):
            ph, pw = ref.pair(padding)
            if H + 2 * ph < 3 or W + 2 * pw < 3:
                continue
            N = int(rng.choice([1, 2, 3]))
            C = int(rng.choice([1, 5, 16, 19]))
            K = int(rng.choice([1, 7, 16, 21]))
            cases.append((N, C, H, W, K, padding))
    return cases


EDGE_CASES = _edge_cases()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", EDGE_CASES, ids=lambda c: "N{}C{}H{}W{}K{}p{}".format(*c))
def test_winograd_matches_reference(case, dtype, isa):
    N, C, H, W, K, padding = case
    fastconv.set_algorithm("winograd")
    rng = np.random.default_rng(abs(hash(case)) % 2**32)
    x = rand(rng, (N, C, H, W), dtype)
    w = rand(rng, (K, C, 3, 3), dtype)
    b = rand(rng, (K,), dtype)
    y = fastconv.conv2d(x, w, b, padding=padding)
    assert_close(y, ref.conv2d(x, w, b, padding=padding), dtype, C * 9, "forward")
    dy = rand(rng, y.shape, dtype)
    dx = fastconv.conv2d_input_grad(x.shape, w, dy, padding=padding)
    assert_close(dx, ref.conv2d_input_grad(x.shape, w, dy, padding=padding), dtype, K * 9,
                 "input_grad")
    dw = fastconv.conv2d_weight_grad(x, w.shape, dy, padding=padding)
    assert_close(dw, ref.conv2d_weight_grad(x, w.shape, dy, padding=padding), dtype,
                 N * y.shape[2] * y.shape[3], "weight_grad")


def test_winograd_same_padding_and_transpose(isa):
    fastconv.set_algorithm("winograd")
    rng = np.random.default_rng(11)
    x = rand(rng, (2, 17, 9, 10), np.float32)
    w = rand(rng, (18, 17, 3, 3), np.float32)
    b = rand(rng, (18,), np.float32)
    got = fastconv.conv2d(x, w, b, padding="same")
    assert_close(got, ref.conv2d(x, w, b, padding="same"), np.float32, 17 * 9)
    wt = rand(rng, (17, 18, 3, 3), np.float32)  # conv_transpose2d weight: (C_in, C_out, R, S)
    got = fastconv.conv_transpose2d(x, wt, b, padding=1)
    assert_close(got, ref.conv_transpose2d(x, wt, b, padding=1), np.float32, 17 * 9)


@pytest.mark.parametrize("shape", [(8, 32, 32, 32, 32), (2, 64, 28, 28, 64), (1, 128, 14, 14, 96)],
                         ids=lambda s: "x".join(map(str, s)))
def test_winograd_error_is_close_to_the_gemm_paths(shape, isa):
    """float32 error against a float64 reference, relative to the largest output: Winograd's
    stays within 3x the GEMM path's."""
    N, C, H, W, K = shape
    rng = np.random.default_rng(sum(shape))
    x = rand(rng, (N, C, H, W), np.float32)
    w = rand(rng, (K, C, 3, 3), np.float32)
    dy = rand(rng, (N, K, H, W), np.float32)
    x64, w64, dy64 = x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64)
    exact = (fastconv.conv2d(x64, w64, padding=1),
             fastconv.conv2d_input_grad(x.shape, w64, dy64, padding=1),
             fastconv.conv2d_weight_grad(x64, w.shape, dy64, padding=1))
    errors = {}
    for algorithm in ("gemm", "winograd"):
        fastconv.set_algorithm(algorithm)
        got = (fastconv.conv2d(x, w, padding=1),
               fastconv.conv2d_input_grad(x.shape, w, dy, padding=1),
               fastconv.conv2d_weight_grad(x, w.shape, dy, padding=1))
        errors[algorithm] = [np.abs(g - e).max() / np.abs(e).max() for g, e in zip(got, exact)]
    for i, what in enumerate(("forward", "input_grad", "weight_grad")):
        gemm_error, winograd_error = errors["gemm"][i], errors["winograd"][i]
        assert winograd_error <= 3 * gemm_error + 1e-7, (what, errors)
        assert winograd_error < 2e-6, (what, errors)


def test_auto_uses_winograd_only_where_it_pays():
    """Winograd rounds differently from the GEMM path, which shows which path "auto" took."""
    rng = np.random.default_rng(5)

    def results(C, K, **p):
        x = rand(rng, (2, C, 12, 12), np.float32)
        w = rand(rng, (K, C, p.pop("R", 3), 3), np.float32)
        out = {}
        for algorithm in ("auto", "gemm", "winograd"):
            fastconv.set_algorithm(algorithm)
            y = fastconv.conv2d(x, w, padding=1, **p)
            dy = np.ones_like(y)
            out[algorithm] = np.concatenate([
                y.ravel(), fastconv.conv2d_input_grad(x.shape, w, dy, padding=1, **p).ravel(),
                fastconv.conv2d_weight_grad(x, w.shape, dy, padding=1, **p).ravel()])
        return out

    big = results(32, 32)
    assert np.array_equal(big["auto"], big["winograd"])
    assert not np.array_equal(big["auto"], big["gemm"])
    for small in (results(4, 32), results(32, 8)):
        assert np.array_equal(small["auto"], small["gemm"])
        assert not np.array_equal(small["auto"], small["winograd"])
    # Where Winograd does not apply, "winograd" falls back to the GEMM path.
    for p in (dict(stride=2), dict(dilation=2), dict(R=5)):
        other = results(32, 32, **p)
        assert np.array_equal(other["winograd"], other["gemm"]), p


def test_winograd_is_deterministic():
    fastconv.set_algorithm("winograd")
    rng = np.random.default_rng(6)
    x = rand(rng, (3, 24, 20, 21), np.float32)
    w = rand(rng, (40, 24, 3, 3), np.float32)
    dy = rand(rng, (3, 40, 20, 21), np.float32)
    results = []
    for threads in (1, 2):
        fastconv.set_num_threads(threads)
        results.append((fastconv.conv2d(x, w, padding=1),
                        fastconv.conv2d_input_grad(x.shape, w, dy, padding=1)))
    assert_bitwise_equal(results[0][0], results[1][0], "forward")
    assert_bitwise_equal(results[0][1], results[1][1], "input_grad")
    # The weight gradient sums per-thread partials: repeatable for a thread count.
    fastconv.set_num_threads(2)
    first = fastconv.conv2d_weight_grad(x, w.shape, dy, padding=1)
    assert_bitwise_equal(first, fastconv.conv2d_weight_grad(x, w.shape, dy, padding=1),
                         "weight_grad")


def test_set_algorithm_checks_its_argument():
    assert fastconv.available_algorithms() == ["auto", "gemm", "winograd"]
    fastconv.set_algorithm("auto")
    with pytest.raises(ValueError, match="name: expected one of .*'fast'"):
        fastconv.set_algorithm("fast")
    with pytest.raises(TypeError, match="name: expected a str"):
        fastconv.set_algorithm(1)
    assert fastconv.get_algorithm() == "auto"
    fastconv.set_algorithm("gemm")
    assert fastconv.get_algorithm() == "gemm"


def test_algorithm_environment_variable():
    code = "import fastconv; print(fastconv.get_algorithm())"
    proc = run_child(code, {"FASTCONV_ALGORITHM": None})
    assert proc.returncode == 0 and proc.stdout.strip() == "auto", child_report(proc)
    proc = run_child(code, {"FASTCONV_ALGORITHM": "gemm"})
    assert proc.returncode == 0 and proc.stdout.strip() == "gemm", child_report(proc)
    proc = run_child(code, {"FASTCONV_ALGORITHM": "fastest"})
    assert proc.returncode != 0, child_report(proc)
    assert "FASTCONV_ALGORITHM='fastest' is not one of" in proc.stderr, child_report(proc)


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan], ids=["inf", "-inf", "nan"])
def test_non_finite_values_propagate_as_on_the_gemm_path(value):
    """Winograd would turn one infinity into NaNs around it; such inputs take the GEMM path."""
    rng = np.random.default_rng(7)
    x = rand(rng, (2, 16, 8, 8), np.float32)
    w = np.abs(rand(rng, (16, 16, 3, 3), np.float32))
    dy = np.ones((2, 16, 8, 8), np.float32)
    bad_x, bad_w, bad_dy = x.copy(), w.copy(), dy.copy()
    bad_x[1, 3, 2, 5] = value
    bad_w[4, 2, 1, 1] = value
    bad_dy[0, 7, 6, 1] = value
    calls = {
        "forward x": lambda: fastconv.conv2d(bad_x, w, padding=1),
        "forward w": lambda: fastconv.conv2d(x, bad_w, padding=1),
        "input_grad dy": lambda: fastconv.conv2d_input_grad(x.shape, w, bad_dy, padding=1),
        "input_grad w": lambda: fastconv.conv2d_input_grad(x.shape, bad_w, dy, padding=1),
        "weight_grad x": lambda: fastconv.conv2d_weight_grad(bad_x, w.shape, dy, padding=1),
        "weight_grad dy": lambda: fastconv.conv2d_weight_grad(x, w.shape, bad_dy, padding=1),
    }
    for what, call in calls.items():
        fastconv.set_algorithm("gemm")
        want = call()
        fastconv.set_algorithm("winograd")
        got = call()
        assert np.isinf(want).any() or np.isnan(want).any(), what
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=what)
        np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)], err_msg=what)
