"""A NumPy-backed Tensor with a small reverse-mode autograd.

Each differentiable operation is a `Function` subclass with `forward` and `backward` next to
each other: forward computes the result from NumPy arrays and saves what backward needs on a
context; backward maps the gradient of the result to one gradient per input. `Function.apply`
records the inputs and the context on the result; `Tensor.backward()` walks that graph once in
reverse topological order, accumulating gradients, and frees each node's saved arrays as it goes.

Generic math lives here (elementwise with broadcasting, reductions, shape ops, matmul); the
network operations (convolution, pooling, normalisation, losses) are Functions in
`fastconv.functions`, built on `fastconv.kernels`.
"""

from __future__ import annotations

import threading

import numpy as np

from . import kernels

__all__ = ["Tensor", "Function", "no_grad", "enable_grad", "is_grad_enabled", "tensor"]

_state = threading.local()


def is_grad_enabled() -> bool:
    """Whether operations record the graph for backward (per thread, as in PyTorch)."""
    return getattr(_state, "grad_enabled", True)


class _GradMode:
    """Context manager / decorator setting whether the graph is recorded."""

    enabled: bool

    def __enter__(self):
        self._previous = is_grad_enabled()
        _state.grad_enabled = self.enabled
        return self

    def __exit__(self, *exc):
        _state.grad_enabled = self._previous
        return False

    def __call__(self, function):
        import functools

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with type(self)():
                return function(*args, **kwargs)
        return wrapper


class no_grad(_GradMode):
    """Disable graph recording: `with fastconv.no_grad(): ...` or as a decorator."""

    enabled = False


class enable_grad(_GradMode):
    """Re-enable graph recording inside a no_grad block."""

    enabled = True


class Context:
    """What a Function's forward saves for its backward."""

    def save_for_backward(self, *arrays):
        self.saved = arrays


class _Node:
    """A recorded application of a Function: its context and inputs (None for non-tensors)."""

    __slots__ = ("function", "ctx", "inputs")

    def __init__(self, function, ctx, inputs):
        self.function = function
        self.ctx = ctx
        self.inputs = inputs


class Function:
    """A differentiable operation. Subclasses define

        forward(ctx, *args, **kwargs) -> np.ndarray      (args: arrays where Tensors were passed)
        backward(ctx, grad) -> gradient per positional argument (np.ndarray or None)

    `ctx.needs_input_grad[i]` tells backward whether argument i wants a gradient.
    """

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs) -> Tensor:
        # One pass over the arguments (this runs for every operation of a training step).
        ctx = Context()
        values, needs = [], []
        for a in args:
            tensor = isinstance(a, Tensor)
            values.append(a.data if tensor else a)
            needs.append(tensor and a.requires_grad)
        ctx.needs_input_grad = tuple(needs)
        data = cls.forward(ctx, *values, **kwargs)
        record = any(needs) and is_grad_enabled()
        out = Tensor(data, requires_grad=record)
        if record:
            out._node = _Node(cls, ctx, tuple(a if isinstance(a, Tensor) else None for a in args))
        return out


def _as_tensor(value, like: Tensor) -> Tensor:
    """A Tensor for an operand: Tensors as they are, Python numbers in `like`'s dtype."""
    if isinstance(value, Tensor):
        return value
    array = np.asarray(value)
    python_number = not isinstance(value, np.ndarray)
    if python_number and array.dtype.kind in "biuf" and like.data.dtype.kind == "f":
        array = array.astype(like.data.dtype)
    return Tensor(array)


class Tensor:
    """An n-dimensional array that can record the operations applied to it for backward.

    Tensor(data, requires_grad=False, dtype=None): floating arrays keep float32 or float64;
    integer arrays (class labels) keep their integer dtype; Python floats and lists of floats
    become float32, as in PyTorch. The array is not copied when it need not be.
    """

    __slots__ = ("data", "requires_grad", "grad", "_node", "_post_accumulate_hooks",
                 "__weakref__")
    __array_priority__ = 1000  # ndarray (op) Tensor defers to Tensor's reflected operators

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        if type(data) is np.ndarray and dtype is None:  # what every operation makes
            array = data
        else:
            if isinstance(data, Tensor):
                data = data.data
            from_python = not isinstance(data, (np.ndarray, np.generic))
            array = np.asarray(data, dtype=dtype)
            if from_python and dtype is None and array.dtype == np.float64:
                array = array.astype(np.float32)
        if requires_grad and array.dtype.kind != "f":
            raise TypeError(f"requires_grad: only floating point tensors can require gradients, "
                            f"got dtype {array.dtype}")
        self.data = array
        self.requires_grad = bool(requires_grad)
        self.grad: Tensor | None = None
        self._node: _Node | None = None
        self._post_accumulate_hooks: list | None = None

    # ------------------------------------------------------------------ basic properties
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    def size(self, dim: int | None = None):
        return self.data.shape if dim is None else self.data.shape[dim]

    def numel(self) -> int:
        return int(self.data.size)

    def dim(self) -> int:
        return self.data.ndim

    def __len__(self) -> int:
        return len(self.data)

    def __bool__(self) -> bool:
        """The truth of a one-element tensor; ambiguous for more (ValueError, as NumPy)."""
        return bool(self.data)

    def numpy(self) -> np.ndarray:
        """The underlying array (shared, not copied), as `torch.Tensor.numpy()`."""
        return self.data

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)

    def item(self):
        return self.data.item()

    def tolist(self):
        return self.data.tolist()

    def detach(self) -> Tensor:
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"requires_grad: only floating point tensors can require gradients, "
                            f"got dtype {self.data.dtype}")
        self.requires_grad = bool(requires_grad)
        return self

    def float(self) -> Tensor:
        return Cast.apply(self, dtype=np.float32)

    def double(self) -> Tensor:
        return Cast.apply(self, dtype=np.float64)

    def long(self) -> Tensor:
        return Tensor(self.data.astype(np.int64))

    def astype(self, dtype) -> Tensor:
        return Cast.apply(self, dtype=np.dtype(dtype))

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        body = np.array2string(self.data, separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self.data.dtype}{grad})"

    # ------------------------------------------------------------------ autograd
    def backward(self, gradient=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) * gradient into the .grad of every leaf needing it.

        The graph's saved arrays are freed on the way unless retain_graph is True (then a
        second backward through the same graph is allowed, as in PyTorch)."""
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad and has no graph")
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward: gradient can be implicit only for a single-element "
                                   f"tensor, got shape {self.shape}")
            gradient = np.ones_like(self.data)
        else:
            gradient = np.asarray(gradient.data if isinstance(gradient, Tensor) else gradient,
                                  dtype=self.data.dtype)
            if gradient.shape != self.shape:
                raise ValueError(f"backward: gradient shape {gradient.shape} differs from the "
                                 f"tensor's {self.shape}")
        # Dependency counts (as PyTorch's engine keeps them): a tensor is ready once every
        # tensor computed from it has passed its gradient down. Ready tensors are taken last in,
        # first out, so a leaf's gradient is final, and its post-accumulate hooks run, as soon
        # as its last consumer is done: a layer's gradients are ready while the layers before
        # it are still differentiated (what distributed training overlaps its all-reduces with).
        pending = _consumer_counts(self)
        grads = {id(self): gradient}
        ready = [self]
        while ready:
            tensor = ready.pop()
            grad = grads.pop(id(tensor), None)
            node = tensor._node
            if node is None:  # a leaf: accumulate
                if grad is not None and tensor.requires_grad:
                    if tensor.grad is None:
                        tensor.grad = Tensor(np.array(grad, dtype=tensor.data.dtype, copy=True))
                    else:
                        tensor.grad.data += grad
                    for hook in tensor._post_accumulate_hooks or ():
                        hook(tensor)
                continue
            input_grads = ()
            if grad is not None:
                if node.ctx is None:
                    raise RuntimeError("backward: trying to go through the graph a second time; "
                                       "its saved arrays were freed by the first backward")
                input_grads = node.function.backward(node.ctx, grad)
                if not isinstance(input_grads, tuple):
                    input_grads = (input_grads,)
                if not retain_graph:
                    node.ctx = None  # free what forward saved
                for hook in _node_backward_hooks:
                    hook()
            for index, parent in enumerate(node.inputs):
                if parent is None or not parent.requires_grad:
                    continue
                parent_grad = input_grads[index] if index < len(input_grads) else None
                if parent_grad is not None:
                    if parent_grad.shape != parent.shape:
                        raise AssertionError(
                            f"{node.function.__name__}.backward: gradient shape "
                            f"{parent_grad.shape} differs from its input's shape {parent.shape}")
                    key = id(parent)
                    grads[key] = parent_grad if key not in grads else grads[key] + parent_grad
                pending[id(parent)] -= 1
                if pending[id(parent)] == 0:
                    ready.append(parent)

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(tensor)`` each time backward has finished accumulating this leaf's
        ``.grad`` (PyTorch's name and meaning). Returns a handle whose ``remove()`` undoes it."""
        if not self.is_leaf or not self.requires_grad:
            raise RuntimeError("register_post_accumulate_grad_hook: only leaf tensors that "
                               "require grad accumulate a .grad")
        if not callable(hook):
            raise TypeError(f"hook: expected a callable, got {type(hook).__name__}")
        if self._post_accumulate_hooks is None:
            self._post_accumulate_hooks = []
        self._post_accumulate_hooks.append(hook)
        return _HookHandle(self._post_accumulate_hooks, hook)

    # ------------------------------------------------------------------ arithmetic
    def __add__(self, other):
        return Add.apply(self, _as_tensor(other, self))

    def __radd__(self, other):
        return Add.apply(_as_tensor(other, self), self)

    def __sub__(self, other):
        return Sub.apply(self, _as_tensor(other, self))

    def __rsub__(self, other):
        return Sub.apply(_as_tensor(other, self), self)

    def __mul__(self, other):
        return Mul.apply(self, _as_tensor(other, self))

    def __rmul__(self, other):
        return Mul.apply(_as_tensor(other, self), self)

    def __truediv__(self, other):
        return Div.apply(self, _as_tensor(other, self))

    def __rtruediv__(self, other):
        return Div.apply(_as_tensor(other, self), self)

    def __neg__(self):
        return Neg.apply(self)

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor):
            raise TypeError("__pow__: only a Python number exponent is supported")
        return Pow.apply(self, exponent=float(exponent))

    def __rpow__(self, base):
        """number ** tensor."""
        if isinstance(base, Tensor):
            raise TypeError("__rpow__: only a Python number base is supported")
        return PowBase.apply(self, base=float(base))

    def __matmul__(self, other):
        return MatMul.apply(self, _as_tensor(other, self))

    def __rmatmul__(self, other):
        return MatMul.apply(_as_tensor(other, self), self)

    # comparisons give boolean tensors outside the graph
    def __eq__(self, other):  # noqa: D105
        return Tensor(self.data == _data(other))

    def __ne__(self, other):
        return Tensor(self.data != _data(other))

    def __lt__(self, other):
        return Tensor(self.data < _data(other))

    def __le__(self, other):
        return Tensor(self.data <= _data(other))

    def __gt__(self, other):
        return Tensor(self.data > _data(other))

    def __ge__(self, other):
        return Tensor(self.data >= _data(other))

    __hash__ = object.__hash__

    def __getitem__(self, index):
        return GetItem.apply(self, index=_data_index(index))

    # ------------------------------------------------------------------ math
    def exp(self):
        return Exp.apply(self)

    def log(self):
        return Log.apply(self)

    def sqrt(self):
        return Pow.apply(self, exponent=0.5)

    def abs(self):
        return Abs.apply(self)

    def relu(self):
        return ReLU.apply(self)

    def sigmoid(self):
        return Sigmoid.apply(self)

    def tanh(self):
        return Tanh.apply(self)

    def clamp(self, min=None, max=None):
        return Clamp.apply(self, low=min, high=max)

    def sum(self, dim=None, keepdim: bool = False):
        return Sum.apply(self, axis=_axis(dim), keepdims=keepdim)

    def mean(self, dim=None, keepdim: bool = False):
        return Mean.apply(self, axis=_axis(dim), keepdims=keepdim)

    def max(self, dim=None, keepdim: bool = False):
        return Max.apply(self, axis=_axis(dim), keepdims=keepdim)

    def argmax(self, dim=None, keepdim: bool = False):
        return Tensor(np.argmax(self.data, axis=dim, keepdims=keepdim))

    # ------------------------------------------------------------------ shape
    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return Reshape.apply(self, shape=tuple(shape))

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        shape = self.shape
        ndim = max(len(shape), 1)  # a 0-d tensor flattens like a 1-element 1-d one
        for name, d in (("start_dim", start_dim), ("end_dim", end_dim)):
            if not -ndim <= d < ndim:
                raise IndexError(f"flatten: {name} {d} is out of range for a tensor of shape "
                                 f"{shape} (expected -{ndim} <= {name} < {ndim})")
        start, end = start_dim % ndim, end_dim % ndim
        if start > end:
            raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
        new_shape = shape[:start] + (int(np.prod(shape[start:end + 1])),) + shape[end + 1:]
        return Reshape.apply(self, shape=new_shape)

    def permute(self, *dims):
        dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        return Permute.apply(self, axes=tuple(dims))

    def transpose(self, dim0: int, dim1: int):
        axes = list(range(self.ndim))
        axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
        return Permute.apply(self, axes=tuple(axes))

    @property
    def T(self):
        return Permute.apply(self, axes=tuple(reversed(range(self.ndim))))

    def zero_(self) -> Tensor:
        """Zero in place (for gradients; does not record)."""
        self.data[...] = 0
        return self


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """Build a Tensor (as torch.tensor)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def _data(value):
    return value.data if isinstance(value, Tensor) else value


def _data_index(index):
    if isinstance(index, tuple):
        return tuple(_data(i) for i in index)
    return _data(index)


def _axis(dim):
    if isinstance(dim, list):
        return tuple(dim)
    return dim


# Called with no argument after each recorded operation's backward, by every backward pass:
# what lets non-blocking communication started by post-accumulate hooks progress while the
# rest of the graph is differentiated (MPI moves a message along only inside its calls).
_node_backward_hooks: list = []


def register_node_backward_hook(hook) -> _HookHandle:
    """Call ``hook()`` after every operation's backward in every backward pass (until the
    returned handle's ``remove()``). Meant for short work such as polling communication."""
    if not callable(hook):
        raise TypeError(f"hook: expected a callable, got {type(hook).__name__}")
    _node_backward_hooks.append(hook)
    return _HookHandle(_node_backward_hooks, hook)


class _HookHandle:
    """What register_post_accumulate_grad_hook returns: ``remove()`` takes the hook off."""

    def __init__(self, hooks: list, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def _consumer_counts(root: Tensor) -> dict[int, int]:
    """For each tensor of root's graph (by id), how many recorded inputs it is of: the
    gradients backward must collect before the tensor is ready (iterative, no recursion)."""
    counts, stack = {id(root): 0}, [root]
    while stack:
        tensor = stack.pop()
        if tensor._node is None:
            continue
        for parent in tensor._node.inputs:
            if parent is None or not parent.requires_grad:
                continue
            key = id(parent)
            if key not in counts:
                counts[key] = 0
                stack.append(parent)
            counts[key] += 1
    return counts


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a broadcast gradient back down to `shape`."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


# ---------------------------------------------------------------------------------------------
# Generic Functions
# ---------------------------------------------------------------------------------------------

class Cast(Function):
    @staticmethod
    def forward(ctx, x, dtype):
        ctx.dtype = x.dtype
        return x.astype(dtype, copy=False)

    @staticmethod
    def backward(ctx, grad):
        return grad.astype(ctx.dtype, copy=False)


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = a.shape, b.shape
        return a + b

    @staticmethod
    def backward(ctx, grad):
        return unbroadcast(grad, ctx.shapes[0]), unbroadcast(grad, ctx.shapes[1])


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = a.shape, b.shape
        return a - b

    @staticmethod
    def backward(ctx, grad):
        return unbroadcast(grad, ctx.shapes[0]), unbroadcast(-grad, ctx.shapes[1])


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        grad_a = unbroadcast(grad * b, a.shape) if ctx.needs_input_grad[0] else None
        grad_b = unbroadcast(grad * a, b.shape) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        grad_a = unbroadcast(grad / b, a.shape) if ctx.needs_input_grad[0] else None
        grad_b = unbroadcast(-grad * a / (b * b), b.shape) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b


class Neg(Function):
    @staticmethod
    def forward(ctx, x):
        return -x

    @staticmethod
    def backward(ctx, grad):
        return -grad


class Pow(Function):
    @staticmethod
    def forward(ctx, x, exponent):
        ctx.save_for_backward(x)
        ctx.exponent = exponent
        return np.power(x, x.dtype.type(exponent))

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved
        e = x.dtype.type(ctx.exponent)
        return grad * e * np.power(x, e - 1)


class PowBase(Function):
    """base ** x for a number base: d/dx = base ** x * log(base)."""

    @staticmethod
    def forward(ctx, x, base):
        y = np.power(x.dtype.type(base), x)
        ctx.save_for_backward(y)
        ctx.log_base = x.dtype.type(np.log(base))
        return y

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved[0] * ctx.log_base


class Exp(Function):
    @staticmethod
    def forward(ctx, x):
        y = np.exp(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved[0]


class Log(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.log(x)

    @staticmethod
    def backward(ctx, grad):
        return grad / ctx.saved[0]


class Abs(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.abs(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * np.sign(ctx.saved[0])


def _kernel_float(array: np.ndarray) -> bool:
    """Whether fastconv's kernels take this array's dtype (float32, float64)."""
    return array.dtype == np.float32 or array.dtype == np.float64


class ReLU(Function):
    # Float arrays go to fastconv's threaded kernels (5x NumPy's single-threaded passes on a
    # 4 MB activation here); other dtypes to NumPy.
    @staticmethod
    def forward(ctx, x):
        y = kernels.relu(x) if _kernel_float(x) else np.maximum(x, 0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y = ctx.saved[0]
        if _kernel_float(y) and grad.dtype == y.dtype and grad.shape == y.shape:
            return kernels.relu_backward(grad, y)
        return grad * (y > 0)


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        # exp of a non-positive number only: no overflow warnings for large |x|
        e = np.exp(-np.abs(x))
        y = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y = ctx.saved[0]
        return grad * y * (1 - y)


class Tanh(Function):
    @staticmethod
    def forward(ctx, x):
        y = np.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y = ctx.saved[0]
        return grad * (1 - y * y)


class Clamp(Function):
    @staticmethod
    def forward(ctx, x, low, high):
        ctx.save_for_backward(x)
        ctx.bounds = low, high
        return np.clip(x, low, high).astype(x.dtype, copy=False)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved
        low, high = ctx.bounds
        keep = np.ones(x.shape, dtype=bool)
        if low is not None:
            keep &= x >= low
        if high is not None:
            keep &= x <= high
        return grad * keep


class Sum(Function):
    @staticmethod
    def forward(ctx, x, axis, keepdims):
        ctx.shape, ctx.axis, ctx.keepdims = x.shape, axis, keepdims
        return np.asarray(x.sum(axis=axis, keepdims=keepdims))

    @staticmethod
    def backward(ctx, grad):
        if not ctx.keepdims and ctx.axis is not None:
            grad = np.expand_dims(grad, ctx.axis)
        return np.broadcast_to(grad, ctx.shape).copy()


class Mean(Function):
    @staticmethod
    def forward(ctx, x, axis, keepdims):
        ctx.shape, ctx.axis, ctx.keepdims = x.shape, axis, keepdims
        result = np.asarray(x.mean(axis=axis, keepdims=keepdims))
        ctx.count = x.size // max(result.size, 1) if x.size else 1
        return result

    @staticmethod
    def backward(ctx, grad):
        if not ctx.keepdims and ctx.axis is not None:
            grad = np.expand_dims(grad, ctx.axis)
        return np.broadcast_to(grad / grad.dtype.type(ctx.count), ctx.shape).copy()


class Max(Function):
    @staticmethod
    def forward(ctx, x, axis, keepdims):
        result = np.asarray(x.max(axis=axis, keepdims=True))
        ctx.save_for_backward(x, result)
        ctx.axis, ctx.keepdims = axis, keepdims
        return result if keepdims else np.asarray(np.squeeze(result, axis=axis))

    @staticmethod
    def backward(ctx, grad):
        x, result = ctx.saved
        if not ctx.keepdims and ctx.axis is not None:
            grad = np.expand_dims(grad, ctx.axis)
        # ties share the gradient equally
        mask = (x == result).astype(x.dtype)
        mask /= mask.sum(axis=ctx.axis, keepdims=True)
        return grad * mask


class Reshape(Function):
    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        return x.reshape(shape)

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.shape)


class Permute(Function):
    @staticmethod
    def forward(ctx, x, axes):
        ctx.axes = axes
        return np.transpose(x, axes)

    @staticmethod
    def backward(ctx, grad):
        return np.transpose(grad, np.argsort(ctx.axes))


class GetItem(Function):
    @staticmethod
    def forward(ctx, x, index):
        ctx.shape, ctx.dtype, ctx.index = x.shape, x.dtype, index
        return np.asarray(x[index])

    @staticmethod
    def backward(ctx, grad):
        full = np.zeros(ctx.shape, dtype=ctx.dtype)
        np.add.at(full, ctx.index, grad)  # repeated indices accumulate
        return full


class MatMul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a @ b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g = grad
        if a.ndim == 1:
            g = np.expand_dims(g, -2 if g.ndim else 0)  # 1-D @ 1-D: grad is 0-d
        if b.ndim == 1:
            g = np.expand_dims(g, -1)
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = unbroadcast(g @ np.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
        if ctx.needs_input_grad[1]:
            grad_b = unbroadcast(np.swapaxes(a2, -1, -2) @ g, b2.shape).reshape(b.shape)
        return grad_a, grad_b
