"""The autograd engine of fastconv.Tensor: gradients of the generic Functions (checked against
float64 central finite differences), graph bookkeeping (accumulation, reuse, freeing), grad
modes, dtypes and error messages."""

import sys

import numpy as np
import pytest

import fastconv
from fastconv import Tensor, enable_grad, is_grad_enabled, no_grad
from fastconv.tensor import Function


# ---------------------------------------------------------------------------------------------
# finite-difference gradient check (shared with test_nn.py)
# ---------------------------------------------------------------------------------------------

def gradcheck(fn, tensors, rng, eps=1e-6, rtol=1e-6, atol=1e-8, what=""):
    """Check the gradients that backward puts into every tensor of `tensors` (float64 leaves
    with requires_grad) against central finite differences of sum(fn() * R), R random.

    `fn` takes no arguments and recomputes the output from the current values of `tensors`.
    """
    for t in tensors:
        assert t.dtype == np.float64, f"{what}: gradcheck needs float64, got {t.dtype}"
        assert t.requires_grad and t.is_leaf
        t.grad = None
    out = fn()
    assert out.dtype == np.float64, f"{what}: output dtype {out.dtype}"
    assert out.requires_grad, f"{what}: output does not require grad"
    weights = rng.standard_normal(out.shape)
    # Rounding noise of a finite difference of two float64 sums of these terms (NumPy
    # versions sum in different orders): the check cannot be stricter than that.
    noise = 4 * np.finfo(np.float64).eps * float(np.abs(out.data * weights).sum()) / (2 * eps)
    atol = max(atol, noise)
    out.backward(weights)
    for k, t in enumerate(tensors):
        assert t.grad is not None, f"{what}: tensor {k} got no gradient"
        assert t.grad.shape == t.shape and t.grad.dtype == t.dtype
        analytic = t.grad.data.copy()
        numeric = np.zeros(t.shape)
        with no_grad():
            for idx in np.ndindex(*t.shape):
                original = t.data[idx]
                t.data[idx] = original + eps
                plus = float((fn().data * weights).sum())
                t.data[idx] = original - eps
                minus = float((fn().data * weights).sum())
                t.data[idx] = original
                numeric[idx] = (plus - minus) / (2 * eps)
        np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol,
                                   err_msg=f"{what}: gradient of tensor {k} {t.shape}")


def leaf(rng, *shape, low=None, high=None, away_from=None):
    """A float64 leaf requiring grad; `away_from`: keep every value at least 0.05 from it."""
    if low is not None:
        data = rng.uniform(low, high, size=shape)
    else:
        data = rng.standard_normal(shape)
    if away_from is not None:
        close = np.abs(data - away_from) < 0.05
        data[close] = away_from + np.where(data[close] >= away_from, 0.1, -0.1)
    return Tensor(data, requires_grad=True)


# ---------------------------------------------------------------------------------------------
# elementwise ops with broadcasting
# ---------------------------------------------------------------------------------------------

BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}

BROADCAST_SHAPES = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1,), (2, 3)),
                    ((), (2, 3)), ((2, 3, 1), (1, 1, 5))]


@pytest.mark.parametrize("shapes", BROADCAST_SHAPES, ids=str)
@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary_broadcasting_gradients(op, shapes, rng):
    a = leaf(rng, *shapes[0])
    b = leaf(rng, *shapes[1], low=0.5, high=2.0) if op == "div" else leaf(rng, *shapes[1])
    out = BINARY[op](a, b)
    assert out.shape == np.broadcast_shapes(*shapes)
    np.testing.assert_array_equal(out.data, BINARY[op](a.data, b.data))
    gradcheck(lambda: BINARY[op](a, b), [a, b], rng, what=op)


@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary_with_python_scalar_and_reflected(op, rng):
    a = leaf(rng, 2, 3, low=0.5, high=2.0)
    gradcheck(lambda: BINARY[op](a, 1.7), [a], rng, what=op)
    gradcheck(lambda: BINARY[op](1.7, a), [a], rng, what="r" + op)
    np.testing.assert_allclose(BINARY[op](1.7, a).data, BINARY[op](1.7, a.data))


def test_binary_one_side_constant(rng):
    a = leaf(rng, 3, 4)
    c = Tensor(rng.standard_normal(4))
    gradcheck(lambda: a * c - c / (a * a + 1), [a], rng)
    assert c.grad is None


UNARY = {
    "neg": (lambda x: -x, {}),
    "pow2": (lambda x: x ** 2, {}),
    "pow3": (lambda x: x ** 3, {}),
    "pow_half": (lambda x: x ** 0.5, dict(low=0.5, high=2.0)),
    "pow_neg": (lambda x: x ** -1.5, dict(low=0.5, high=2.0)),
    "sqrt": (lambda x: x.sqrt(), dict(low=0.5, high=2.0)),
    "exp": (lambda x: x.exp(), {}),
    "log": (lambda x: x.log(), dict(low=0.2, high=3.0)),
    "abs": (lambda x: x.abs(), dict(away_from=0.0)),
    "relu": (lambda x: x.relu(), dict(away_from=0.0)),
    "sigmoid": (lambda x: x.sigmoid(), {}),
    "tanh": (lambda x: x.tanh(), {}),
    "clamp_both": (lambda x: x.clamp(-0.5, 0.5), dict(low=-2, high=2)),
    "clamp_min": (lambda x: x.clamp(min=-0.3), dict(low=-2, high=2)),
    "clamp_max": (lambda x: x.clamp(max=0.2), dict(low=-2, high=2)),
}

UNARY_REFERENCE = {
    "neg": np.negative, "pow2": np.square, "pow3": lambda x: x ** 3,
    "pow_half": np.sqrt, "pow_neg": lambda x: x ** -1.5, "sqrt": np.sqrt, "exp": np.exp,
    "log": np.log, "abs": np.abs, "relu": lambda x: np.maximum(x, 0),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)), "tanh": np.tanh,
    "clamp_both": lambda x: np.clip(x, -0.5, 0.5), "clamp_min": lambda x: np.maximum(x, -0.3),
    "clamp_max": lambda x: np.minimum(x, 0.2),
}


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary_gradients(op, rng):
    f, kwargs = UNARY[op]
    x = leaf(rng, 3, 5, **kwargs)
    if op.startswith("clamp"):  # keep away from the clamp bounds
        for bound in (-0.5, 0.5, -0.3, 0.2):
            close = np.abs(x.data - bound) < 0.05
            x.data[close] = bound + 0.1
    np.testing.assert_allclose(f(x).data, UNARY_REFERENCE[op](x.data), rtol=1e-12)
    gradcheck(lambda: f(x), [x], rng, what=op)


def test_sigmoid_extreme_values_no_overflow():
    x = Tensor(np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0], dtype=np.float32),
               requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = x.sigmoid()
        y.backward(np.ones(5, dtype=np.float32))
    np.testing.assert_allclose(y.data, [0, 1 / (1 + np.exp(50.0)), 0.5, 1 / (1 + np.exp(-50.0)),
                                        1], rtol=1e-6, atol=1e-30)
    assert y.dtype == np.float32 and np.all(np.isfinite(x.grad.data))


# ---------------------------------------------------------------------------------------------
# reductions
# ---------------------------------------------------------------------------------------------

REDUCTION_DIMS = [None, 0, 1, -1, (0, 2), [1, 2], (-1, -3)]


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", REDUCTION_DIMS, ids=str)
@pytest.mark.parametrize("op", ["sum", "mean", "max"])
def test_reduction_gradients(op, dim, keepdim, rng):
    # distinct values (a permutation, then noise far smaller than the spacing): no ties for max
    x = Tensor(rng.permutation(24).reshape(2, 3, 4) + 0.01 * rng.standard_normal((2, 3, 4)),
               requires_grad=True)
    f = lambda: getattr(x, op)(dim=dim, keepdim=keepdim)  # noqa: E731
    axis = tuple(dim) if isinstance(dim, list) else dim
    want = getattr(np, op if op != "max" else "amax")(x.data, axis=axis, keepdims=keepdim)
    got = f()
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got.data, want, rtol=1e-12)
    gradcheck(f, [x], rng, what=f"{op} dim={dim} keepdim={keepdim}")


def test_max_ties_share_gradient():
    x = Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 0.0, -1.0]]), requires_grad=True)
    x.max(dim=1).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [[0, 0.5, 0.5], [1, 0, 0]])


def test_sum_of_everything_is_zero_dimensional():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    s = x.sum()
    assert s.shape == () and s.item() == 6
    s.backward()
    np.testing.assert_array_equal(x.grad.data, np.ones((2, 3)))


# ---------------------------------------------------------------------------------------------
# shape ops and indexing
# ---------------------------------------------------------------------------------------------

SHAPE_OPS = {
    "reshape_tuple": (lambda x: x.reshape((4, 6)), (4, 6)),
    "reshape_args": (lambda x: x.reshape(2, -1), (2, 12)),
    "view": (lambda x: x.view(24), (24,)),
    "flatten": (lambda x: x.flatten(), (24,)),
    "flatten_1": (lambda x: x.flatten(1), (2, 12)),
    "flatten_0_1": (lambda x: x.flatten(0, 1), (6, 4)),
    "permute": (lambda x: x.permute(2, 0, 1), (4, 2, 3)),
    "permute_tuple": (lambda x: x.permute((1, 2, 0)), (3, 4, 2)),
    "transpose": (lambda x: x.transpose(0, 2), (4, 3, 2)),
    "transpose_neg": (lambda x: x.transpose(-1, -2), (2, 4, 3)),
    "T": (lambda x: x.T, (4, 3, 2)),
}

SHAPE_REFERENCE = {
    "reshape_tuple": lambda a: a.reshape(4, 6), "reshape_args": lambda a: a.reshape(2, 12),
    "view": lambda a: a.reshape(24), "flatten": lambda a: a.reshape(24),
    "flatten_1": lambda a: a.reshape(2, 12), "flatten_0_1": lambda a: a.reshape(6, 4),
    "permute": lambda a: a.transpose(2, 0, 1), "permute_tuple": lambda a: a.transpose(1, 2, 0),
    "transpose": lambda a: a.transpose(2, 1, 0), "transpose_neg": lambda a: a.transpose(0, 2, 1),
    "T": lambda a: a.T,
}


@pytest.mark.parametrize("op", sorted(SHAPE_OPS))
def test_shape_op_gradients(op, rng):
    f, shape = SHAPE_OPS[op]
    x = leaf(rng, 2, 3, 4)
    y = f(x)
    assert y.shape == shape
    np.testing.assert_array_equal(y.data, SHAPE_REFERENCE[op](x.data))
    gradcheck(lambda: f(x), [x], rng, what=op)


INDICES = {
    "int": 1,
    "negative_int": -1,
    "slice": (slice(None), slice(1, 3)),
    "step_slice": (slice(None, None, 2), slice(None, None, -1)),
    "int_array_repeats": np.array([2, 0, 2, 2]),
    "list_repeats": [0, 0, 1],
    "tuple_arrays": (np.array([0, 2, 0]), np.array([1, 1, 1])),
    "mixed": (slice(1, None), np.array([3, 3, 0])),
    "bool_mask": np.array([True, False, True]),
    "ellipsis_newaxis": (Ellipsis, None, 1),
    "tensor_index": Tensor(np.array([1, 1, 2])),
}


@pytest.mark.parametrize("name", sorted(INDICES))
def test_getitem_gradients(name, rng):
    index = INDICES[name]
    x = leaf(rng, 3, 4)
    np_index = index.data if isinstance(index, Tensor) else index
    np.testing.assert_array_equal(x[index].data, x.data[np_index])
    gradcheck(lambda: x[index], [x], rng, what=name)


def test_getitem_repeated_indices_accumulate():
    x = Tensor(np.zeros(4), requires_grad=True)
    x[np.array([1, 1, 1, 3])].sum().backward()
    np.testing.assert_array_equal(x.grad.data, [0, 3, 0, 1])


# ---------------------------------------------------------------------------------------------
# matmul
# ---------------------------------------------------------------------------------------------

MATMUL_SHAPES = [((4,), (4,)), ((3, 4), (4,)), ((4,), (4, 5)), ((3, 4), (4, 5)),
                 ((2, 3, 4), (2, 4, 5)), ((2, 3, 4), (4, 5)), ((4,), (2, 4, 5)),
                 ((2, 1, 3, 4), (3, 4, 2)), ((3, 4), (2, 4, 5)), ((2, 3, 4), (4,))]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul_gradients(shapes, rng):
    a, b = leaf(rng, *shapes[0]), leaf(rng, *shapes[1])
    out = a @ b
    want = a.data @ b.data
    assert out.shape == np.shape(want)
    np.testing.assert_allclose(out.data, want, rtol=1e-12)
    gradcheck(lambda: a @ b, [a, b], rng, what=str(shapes))


def test_matmul_with_ndarray_operand(rng):
    a = leaf(rng, 3, 4)
    m = rng.standard_normal((4, 2))
    gradcheck(lambda: a @ m, [a], rng)
    gradcheck(lambda: m.T @ a.T, [a], rng)


def test_composite_expression(rng):
    a, b, c = leaf(rng, 3, 4), leaf(rng, 4), leaf(rng, 4, 2)

    def f():
        h = ((a * b).tanh() @ c).sigmoid().sum(dim=1)
        return h / (1 + (a ** 2).mean()) - b.max()

    gradcheck(f, [a, b, c], rng)


# ---------------------------------------------------------------------------------------------
# graph bookkeeping
# ---------------------------------------------------------------------------------------------

def test_accumulation_across_two_backward_calls(rng):
    x = leaf(rng, 3)
    (x * 2).sum().backward()
    first = x.grad
    np.testing.assert_array_equal(first.data, [2, 2, 2])
    (x * x).sum().backward()  # a separate graph into the same leaf
    np.testing.assert_allclose(x.grad.data, 2 + 2 * x.data, rtol=1e-15)
    assert x.grad is first  # accumulated in place


def test_leaf_used_twice_in_one_graph(rng):
    x = leaf(rng, 4)
    (x * x + x).sum().backward()
    np.testing.assert_allclose(x.grad.data, 2 * x.data + 1, rtol=1e-15)
    y = leaf(rng, 4)
    z = y * 3
    (z + z * z).sum().backward()  # an intermediate used twice
    np.testing.assert_allclose(y.grad.data, 3 + 18 * y.data, rtol=1e-14)
    w = leaf(rng, 2)
    (w + w).sum().backward()  # both inputs of one op are the same tensor
    np.testing.assert_array_equal(w.grad.data, [2, 2])


def test_diamond_graph(rng):
    x = leaf(rng, 3)

    def f():
        e = x.exp()
        return e * 2 + e * e

    gradcheck(f, [x], rng)


def test_grad_not_kept_for_non_leaves(rng):
    x = leaf(rng, 3)
    y = x * 2
    y.sum().backward()
    assert y.grad is None and not y.is_leaf and x.is_leaf
    assert x.grad is not None


def test_backward_on_leaf_itself():
    x = Tensor(np.array(3.0), requires_grad=True)
    x.backward()
    assert x.grad.item() == 1.0


def test_backward_explicit_gradient(rng):
    x = leaf(rng, 2, 3)
    g = rng.standard_normal((2, 3))
    (x * 3).backward(Tensor(g))
    np.testing.assert_allclose(x.grad.data, 3 * g, rtol=1e-15)
    with pytest.raises(ValueError, match="gradient shape"):
        (x * 3).backward(np.ones((3, 2)))


def test_only_inputs_requiring_grad_get_gradients(rng):
    a, b = leaf(rng, 3), Tensor(rng.standard_normal(3))
    (a * b).sum().backward()
    assert a.grad is not None and b.grad is None and not b.requires_grad


def test_deep_graph_no_recursion_limit():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x
    n = max(5000, sys.getrecursionlimit() + 100)
    for _ in range(n):
        y = y + 1.0
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.data, [1, 1])
    np.testing.assert_array_equal(y.data, [1.0 + n, 2.0 + n])


def test_backward_non_scalar_without_gradient_raises(rng):
    y = leaf(rng, 3) * 2
    with pytest.raises(RuntimeError, match="single-element"):
        y.backward()


def test_backward_without_graph_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(1)).backward()


def test_second_backward_through_freed_graph_raises(rng):
    x = leaf(rng, 3)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()
    # a new graph on the same leaf is fine
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.data, 4 * x.data, rtol=1e-15)


def test_backward_shape_assertion_names_the_op():
    class BadShape(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            return grad[:-1]

    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(AssertionError, match=r"BadShape\.backward.*\(2,\).*\(3,\)"):
        BadShape.apply(x).sum().backward()


def test_custom_function_needs_input_grad():
    seen = {}

    class Scale(Function):
        @staticmethod
        def forward(ctx, x, y, factor):
            seen["needs"] = ctx.needs_input_grad
            return x * y * factor

        @staticmethod
        def backward(ctx, grad):
            return grad, None, None

    x, y = Tensor(np.ones(2), requires_grad=True), Tensor(np.ones(2))
    out = Scale.apply(x, y, 3.0)
    assert seen["needs"] == (True, False, False)
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.data, [1, 1])


# ---------------------------------------------------------------------------------------------
# grad modes and detach
# ---------------------------------------------------------------------------------------------

def test_no_grad_records_nothing(rng):
    x = leaf(rng, 3)
    with no_grad():
        assert not is_grad_enabled()
        y = x * 2 + 1
        z = (x @ x).exp()
    assert is_grad_enabled()
    assert not y.requires_grad and y.is_leaf and y._node is None
    assert not z.requires_grad and z.is_leaf
    with pytest.raises(RuntimeError):
        y.sum().backward()


def test_enable_grad_nested_in_no_grad(rng):
    x = leaf(rng, 3)
    with no_grad():
        with enable_grad():
            assert is_grad_enabled()
            y = x * 2
        assert not is_grad_enabled()
        z = x * 2
        with no_grad():
            assert not is_grad_enabled()
        assert not is_grad_enabled()
    assert is_grad_enabled()
    assert y.requires_grad and not z.requires_grad
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.data, [2, 2, 2])


def test_grad_mode_restored_after_exception():
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            1 / 0
    assert is_grad_enabled()


def test_no_grad_and_enable_grad_as_decorators(rng):
    x = leaf(rng, 3)

    @no_grad()
    def double(t):
        assert not is_grad_enabled()
        return t * 2

    @enable_grad()
    def triple(t):
        assert is_grad_enabled()
        return t * 3

    assert double.__name__ == "double"
    assert not double(x).requires_grad
    assert is_grad_enabled()
    with no_grad():
        assert triple(x).requires_grad
        assert not is_grad_enabled()
    # the decorated function can be called repeatedly and nested
    assert not double(double(x)).requires_grad


def test_grad_mode_is_per_thread():
    import threading
    seen = []
    with no_grad():
        thread = threading.Thread(target=lambda: seen.append(is_grad_enabled()))
        thread.start()
        thread.join()
    assert seen == [True]


def test_detach(rng):
    x = leaf(rng, 3)
    y = x * 2
    d = y.detach()
    assert not d.requires_grad and d.is_leaf
    assert np.shares_memory(d.data, y.data)
    (d * x).sum().backward()
    np.testing.assert_allclose(x.grad.data, d.data, rtol=1e-15)  # no gradient through d


def test_requires_grad_on_int_tensor_raises():
    with pytest.raises(TypeError, match="floating point"):
        Tensor(np.array([1, 2, 3]), requires_grad=True)
    with pytest.raises(TypeError, match="floating point"):
        Tensor([1, 2]).requires_grad_()
    t = Tensor(np.ones(2)).requires_grad_()
    assert t.requires_grad


# ---------------------------------------------------------------------------------------------
# dtypes and interoperability
# ---------------------------------------------------------------------------------------------

def test_python_scalars_keep_float32():
    x = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    for y in (x + 1, 1 + x, x - 2.5, 2.5 - x, x * 3, 3.0 * x, x / 7, 7 / x, x ** 2, x ** 0.5,
              -x, x.clamp(-0.5, 0.5), x.mean(), x * np.float64(2.0), x + True):
        assert y.dtype == np.float32, y
    y = (x * 3.0 + 1).sum()
    y.backward()
    assert x.grad.dtype == np.float32


def test_python_floats_and_lists_become_float32():
    assert Tensor(1.5).dtype == np.float32
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert fastconv.tensor([[1.0]]).dtype == np.float32
    assert Tensor(np.array([1.0])).dtype == np.float64
    assert Tensor([1.0], dtype=np.float64).dtype == np.float64


def test_integer_labels_stay_int64():
    labels = Tensor(np.array([3, 1, 4], dtype=np.int64))
    assert labels.dtype == np.int64
    assert Tensor([3, 1, 4]).dtype == np.int64
    assert labels.long().dtype == np.int64
    assert not labels.requires_grad


def test_ndarray_op_tensor_returns_tensor(rng):
    a = rng.standard_normal((2, 3))
    t = leaf(rng, 2, 3)
    for result in (a + t, a - t, a * t, a / t, a @ t.T):
        assert isinstance(result, Tensor), type(result)
        assert result.requires_grad
    np.testing.assert_allclose((a - t).data, a - t.data)
    np.testing.assert_allclose((a / t).data, a / t.data)
    (a * t).sum().backward()
    np.testing.assert_allclose(t.grad.data, a)


def test_cast_gradients(rng):
    x = leaf(rng, 3)
    y = x.float()
    assert y.dtype == np.float32 and y.requires_grad
    (y * 2).sum().backward()
    assert x.grad.dtype == np.float64
    np.testing.assert_array_equal(x.grad.data, [2, 2, 2])
    x.grad = None
    (x.float().double() * x).sum().backward()  # d/dx (f32(x) * x) = f32(x) + x
    np.testing.assert_allclose(x.grad.data, 2 * x.data, rtol=1e-6)


def test_comparisons_are_outside_the_graph(rng):
    x = leaf(rng, 4)
    m = x > 0
    assert isinstance(m, Tensor) and m.dtype == bool and not m.requires_grad
    np.testing.assert_array_equal(m.data, x.data > 0)
    np.testing.assert_array_equal((x == x).data, np.ones(4, bool))


def test_basic_properties():
    t = Tensor(np.arange(6.0).reshape(2, 3))
    assert t.shape == (2, 3) and t.size() == (2, 3) and t.size(1) == 3 and t.ndim == 2
    assert t.dim() == 2 and t.numel() == 6 and len(t) == 2
    assert t.numpy() is t.data and np.asarray(t) is t.data
    assert t.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert t.argmax(dim=1).tolist() == [2, 2]
    assert "tensor(" in repr(t) and "float64" in repr(t)
    assert "requires_grad=True" in repr(Tensor(np.ones(1), requires_grad=True))
    z = Tensor(np.ones(2)).zero_()
    np.testing.assert_array_equal(z.data, [0, 0])


def test_truth_value():
    assert not Tensor(np.array([0.0]))
    assert not (Tensor(np.array([1.0])) > 2)  # a one-element False, not "non-empty"
    assert Tensor(np.array(2.0)) > 1  # 0-d results of comparisons work in `if`
    assert not (Tensor(np.array(0.5)) > 1)
    with pytest.raises(ValueError, match="ambiguous"):
        bool(Tensor(np.array([1.0, 2.0])) > 0)


def test_retain_graph_allows_a_second_backward(rng):
    x = leaf(rng, 3)
    y = (x * x * x).sum()
    y.backward(retain_graph=True)
    y.backward()  # accumulates a second time, as in PyTorch
    np.testing.assert_allclose(x.grad.data, 2 * 3 * x.data ** 2, rtol=1e-14)
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_number_to_the_power_of_a_tensor(rng):
    x = leaf(rng, 4, 3)
    gradcheck(lambda: 2.5 ** x, [x], rng, what="rpow")
    np.testing.assert_allclose((3.0 ** x).data, 3.0 ** x.data, rtol=1e-15)
    with pytest.raises(TypeError, match="__pow__"):
        x ** x


@pytest.mark.parametrize("shape,start,end", [((3,), 1, -1), ((2, 3), 0, 2), ((2, 3), -3, -1)])
def test_flatten_rejects_dims_out_of_range(shape, start, end):
    with pytest.raises(IndexError, match="out of range"):
        Tensor(np.ones(shape)).flatten(start, end)


def test_flatten_rejects_start_after_end():
    with pytest.raises(ValueError, match="start_dim"):
        Tensor(np.ones((2, 3, 4))).flatten(2, 1)
    assert Tensor(np.ones((2, 3, 4))).flatten(1).shape == (2, 12)
    assert Tensor(np.ones((2, 3, 4))).flatten(-2, -1).shape == (2, 12)


# ---------------------------------------------------------------------------------------------
# post-accumulate hooks: when a leaf's gradient is final (what distributed training overlaps)
# ---------------------------------------------------------------------------------------------

def test_post_accumulate_hook_sees_the_final_gradient_once_per_backward():
    rng = np.random.default_rng(0)
    w = Tensor(rng.normal(size=(3,)), requires_grad=True)
    x = Tensor(rng.normal(size=(3,)))
    seen = []
    handle = w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.data.copy()))
    # w is used three times: the hook must run once, after all three contributions.
    ((w * x).sum() + (w * w).sum() + w.sum()).backward()
    expected = x.data + 2 * w.data + 1
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], expected)
    (w.sum()).backward()  # accumulates: the hook sees the sum
    np.testing.assert_allclose(seen[1], expected + 1)
    handle.remove()
    w.sum().backward()
    assert len(seen) == 2


def test_post_accumulate_hooks_of_later_layers_run_before_earlier_layers_finish():
    rng = np.random.default_rng(1)
    weights = [Tensor(rng.normal(size=(4, 4)), requires_grad=True) for _ in range(4)]
    order = []
    for index, w in enumerate(weights):
        w.register_post_accumulate_grad_hook(lambda t, i=index: order.append(i))
    h = Tensor(rng.normal(size=(2, 4)))
    for w in weights:
        h = (h @ w).relu()
    h.sum().backward()
    assert order == [3, 2, 1, 0]


def test_post_accumulate_hook_only_on_leaves_that_require_grad():
    leaf = Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        (leaf * 2).register_post_accumulate_grad_hook(lambda t: None)
    with pytest.raises(RuntimeError, match="leaf"):
        Tensor(np.ones(2)).register_post_accumulate_grad_hook(lambda t: None)
    with pytest.raises(TypeError, match="callable"):
        leaf.register_post_accumulate_grad_hook(3)


def test_node_backward_hook_runs_after_every_operation_until_removed():
    from fastconv.tensor import register_node_backward_hook
    w = Tensor(np.ones(3), requires_grad=True)
    calls = []
    handle = register_node_backward_hook(lambda: calls.append(w.grad is None))
    try:
        ((w * 2).relu().sum()).backward()  # three operations: mul, relu, sum
        assert calls == [True, True, True]  # all before the leaf's gradient is written
    finally:
        handle.remove()
    w.sum().backward()
    assert len(calls) == 3
    with pytest.raises(TypeError, match="callable"):
        register_node_backward_hook("poll")
