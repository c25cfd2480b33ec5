"""The NumPy-level kernels API: conv2d and pooling, forward and gradients.

Semantics, argument names and defaults follow ``torch.nn.functional`` and ``torch.nn.grad``.
Arrays are NCHW (a 3-D CHW array is taken as one unbatched image where PyTorch allows it),
float32 or float64; results are fresh arrays of the input's dtype. This module checks every
argument, computes output shapes (with the formulas of ``_shapes``) and allocates the outputs;
``_core`` only computes.
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
import sys

import numpy as np

from . import _core
from ._shapes import conv_output_size, conv_transpose_output_size, pool_output_size, same_padding

__all__ = [
    "conv2d",
    "conv2d_input_grad",
    "conv2d_weight_grad",
    "conv2d_bias_grad",
    "conv_transpose2d",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "matmul",
    "sgd_update",
    "sgd_update_many",
]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ----------------------------------------------------------------------------------------------
# Argument checking
# ----------------------------------------------------------------------------------------------

def _is_int(value) -> bool:
    # A plain int first: the ABC check alone costs about 1 us per value (8 us per shape).
    return type(value) is int or (isinstance(value, numbers.Integral)
                                  and not isinstance(value, (bool, np.bool_)))


# Bound on every integer argument, so that the kernels' 64-bit index arithmetic cannot overflow.
_MAX_INT = 2**62


def _int(value, name: str, minimum: int | None = None) -> int:
    if not _is_int(value):
        raise TypeError(f"{name}: expected an int, got {value!r}")
    value = operator.index(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    if value > _MAX_INT:
        raise ValueError(f"{name}: expected an int <= 2**62, got {value}")
    return value


def _pair(value, name: str, minimum: int) -> tuple[int, int]:
    """An int or a sequence of one or two ints, as PyTorch accepts, each >= minimum."""
    if _is_int(value):
        items = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) in (1, 2) and all(map(_is_int, value)):
        items = tuple(value) * (3 - len(value))  # (a,) -> (a, a)
    else:
        raise TypeError(f"{name}: expected an int or a pair of ints, got {value!r}")
    pair = (operator.index(items[0]), operator.index(items[1]))
    if min(pair) < minimum:
        raise ValueError(f"{name}: expected values >= {minimum}, got {value!r}")
    if max(pair) > _MAX_INT:
        raise ValueError(f"{name}: expected values <= 2**62, got {value!r}")
    return pair


def _shape(value, name: str, ndim: int) -> tuple[int, ...]:
    if type(value) is tuple and len(value) == ndim and set(map(type, value)) == {int}:
        # an array's .shape, the common case: no conversion (1.1 -> 0.6 us a call)
        if min(value) < 0 or max(value) > _MAX_INT:
            raise ValueError(f"{name}: sizes must be in [0, 2**62], got {value!r}")
        return value
    if not isinstance(value, (tuple, list)) or len(value) != ndim or not all(map(_is_int, value)):
        raise ValueError(f"{name}: expected a sequence of {ndim} ints, got {value!r}")
    shape = tuple(operator.index(v) for v in value)
    if min(shape) < 0 or max(shape) > _MAX_INT:
        raise ValueError(f"{name}: sizes must be in [0, 2**62], got {value!r}")
    return shape


def _float_array(value, name: str) -> np.ndarray:
    if type(value) is np.ndarray and value.dtype in _FLOAT_DTYPES:  # native float32/float64
        return value
    array = np.asarray(value)
    if array.dtype.kind != "f" or array.dtype.itemsize not in (4, 8):
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {array.dtype}")
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


def _same_dtype(reference: np.ndarray, reference_name: str, array: np.ndarray, name: str) -> None:
    if array.dtype != reference.dtype:
        raise TypeError(
            f"{name}: dtype {array.dtype} differs from {reference_name}'s {reference.dtype};"
            " mixing float32 and float64 is not allowed")


def _ndim(array: np.ndarray, name: str, allowed: tuple[int, ...], layout: str) -> None:
    if array.ndim not in allowed:
        raise ValueError(f"{name}: expected a {layout} array, got shape {array.shape}")


def _check_image_shape(shape: tuple[int, ...], name: str) -> None:
    """Only the batch may be empty (as in PyTorch): channels, height and width must be >= 1."""
    if min(shape[-3:]) < 1:
        raise ValueError(f"{name}: only the batch dimension may be 0, got shape {tuple(shape)}")


def _batched(array: np.ndarray, name: str) -> tuple[np.ndarray, bool]:
    """(N, C, H, W) view of a 3-D or 4-D image array, and whether it was unbatched."""
    _ndim(array, name, (3, 4), "3-D (C, H, W) or 4-D (N, C, H, W)")
    _check_image_shape(array.shape, name)
    return (array[None], True) if array.ndim == 3 else (array, False)


def _contiguous(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array)


def _empty(shape, dtype) -> np.ndarray:
    """A fresh uninitialised array from the buffer pool: memory of arrays that died is handed
    out again, so a training step's activations and gradients do not page-fault every step
    (``set_buffer_pool_limit``)."""
    if not isinstance(dtype, np.dtype):  # the kernels pass arrays' dtypes
        dtype = np.dtype(dtype)
    if math.prod(shape) * dtype.itemsize > sys.maxsize:  # as np.empty would refuse it
        raise ValueError(f"output: an array of shape {tuple(shape)} and dtype {dtype} is too "
                         f"big (more than {sys.maxsize} bytes)")
    return _core.pooled_empty(shape, dtype)


def _output(out, shape, dtype, inputs) -> np.ndarray:
    """The array to write the result into: a fresh one, or `out` once it is checked to be a
    C-contiguous, writeable ndarray of exactly `shape` and `dtype` sharing no memory with the
    inputs (kernels overwrite it; reusing it between calls avoids page faults on fresh memory)."""
    shape = tuple(shape)
    if out is None:
        return _empty(shape, dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out: expected a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out: expected dtype {np.dtype(dtype)}, got {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"out: expected shape {shape}, got {out.shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out: must be a C-contiguous, writeable array")
    if any(a is not None and np.may_share_memory(out, a) for a in inputs):
        raise ValueError("out: must not share memory with an input")
    return out


def _bias(bias, input_: np.ndarray, length: int) -> np.ndarray | None:
    if bias is None:
        return None
    bias = _float_array(bias, "bias")
    _same_dtype(input_, "input", bias, "bias")
    if bias.shape != (length,):
        raise ValueError(f"bias: expected shape ({length},), got {bias.shape}")
    return _contiguous(bias)


def _groups(groups, in_channels: int, out_channels: int) -> int:
    groups = _int(groups, "groups", minimum=1)
    if in_channels % groups:
        raise ValueError(
            f"groups: input channels ({in_channels}) must be divisible by groups ({groups})")
    if out_channels % groups:
        raise ValueError(
            f"groups: output channels ({out_channels}) must be divisible by groups ({groups})")
    return groups


def _check_kernel_size(weight_shape: tuple[int, ...], name: str) -> None:
    if weight_shape[2] < 1 or weight_shape[3] < 1:
        raise ValueError(f"{name}: kernel size must be >= 1, got {weight_shape[2:]}")


def _plain(value) -> bool:
    """Whether `value` is an int, bool, str or None, or a tuple of ints: arguments whose checks
    can be looked up by value (a tuple holding a bool, which compares equal to an int, cannot)."""
    if value is None or type(value) in (int, bool, str):
        return True
    return type(value) is tuple and all(type(v) is int for v in value)


def _memoized(cls, shapes: int = 0):
    """cls(*args) for checked-argument classes, looked up by value when every argument is
    plain: a training step calls the kernels with the same shapes and options every time, and
    checking them again took about half of a small conv2d call's time (13 of 27 us). The
    first `shapes` arguments are always tuples of ints (arrays' shapes, or shapes _shape
    checked), so only the others are looked at (a small conv2d's lookup 1.7 -> 1.0 us)."""
    cached = functools.lru_cache(maxsize=512, typed=True)(cls)

    def make(*args, **kwargs):
        if not kwargs and all(map(_plain, args[shapes:])):
            return cached(*args)
        return cls(*args, **kwargs)
    return make


# ----------------------------------------------------------------------------------------------
# Convolution
# ----------------------------------------------------------------------------------------------

class _ConvGeometry:
    """Checked arguments of a convolution with input (N, C, H, W) and weight (K, C/g, R, S)."""

    def __init__(self, input_shape, weight_shape, stride, padding, dilation, groups,
                 input_name="input", weight_name="weight"):
        n, c, h, w = input_shape
        k, c_per_group, r, s = weight_shape
        _check_kernel_size(weight_shape, weight_name)
        if k < 1:
            raise ValueError(f"{weight_name}: expected at least 1 output channel, "
                             f"got shape {tuple(weight_shape)}")
        self.groups = _groups(groups, c, k)
        if c_per_group * self.groups != c:
            raise ValueError(
                f"{weight_name}: expected shape[1] == input channels / groups = "
                f"{c} / {self.groups} = {c // self.groups}, got weight shape {tuple(weight_shape)}")
        self.stride = _pair(stride, "stride", minimum=1)
        self.dilation = _pair(dilation, "dilation", minimum=1)
        if isinstance(padding, str):
            if padding == "valid":
                pads = ((0, 0), (0, 0))
            elif padding == "same":
                if self.stride != (1, 1):
                    raise ValueError(
                        f"padding: 'same' is not supported for strided convolutions, "
                        f"got stride {self.stride}")
                pads = (same_padding(r, self.dilation[0]), same_padding(s, self.dilation[1]))
            else:
                raise ValueError(
                    f"padding: expected an int, a pair, 'valid' or 'same', got {padding!r}")
        else:
            ph, pw = _pair(padding, "padding", minimum=0)
            pads = ((ph, ph), (pw, pw))
        self.pad_begin = (pads[0][0], pads[1][0])
        ho = conv_output_size(h, r, self.stride[0], *pads[0], self.dilation[0])
        wo = conv_output_size(w, s, self.stride[1], *pads[1], self.dilation[1])
        if ho < 1 or wo < 1:
            raise ValueError(
                f"{input_name}: spatial size {(h, w)} padded by {pads} is smaller than the "
                f"dilated kernel {((r - 1) * self.dilation[0] + 1, (s - 1) * self.dilation[1] + 1)}"
                f" (output size would be {(ho, wo)})")
        self.output_shape = (n, k, ho, wo)

    def core_args(self):
        return self.stride, self.pad_begin, self.dilation, self.groups


_conv_geometry = _memoized(_ConvGeometry, shapes=2)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, out=None):
    """2-D cross-correlation, as ``torch.nn.functional.conv2d``.

    input (N, C, H, W) or (C, H, W); weight (K, C/groups, R, S); bias (K,) or None.
    padding: int, pair, 'valid' or 'same' (stride 1 only). out: optional array to write into.
    """
    x = _float_array(input, "input")
    w = _float_array(weight, "weight")
    _same_dtype(x, "input", w, "weight")
    x4, unbatched = _batched(x, "input")
    _ndim(w, "weight", (4,), "4-D (K, C/groups, R, S)")
    geometry = _conv_geometry(x4.shape, w.shape, stride, padding, dilation, groups)
    b = _bias(bias, x, w.shape[0])
    shape = geometry.output_shape[1:] if unbatched else geometry.output_shape
    out = _output(out, shape, x.dtype, (x, w, b))
    _core.conv2d_forward(_contiguous(x4), _contiguous(w), b, out[None] if unbatched else out,
                         *geometry.core_args())
    return out


def conv2d_input_grad(input_shape, weight, grad_output, stride=1, padding=0, dilation=1,
                      groups=1, out=None):
    """Gradient of conv2d with respect to its input, as ``torch.nn.grad.conv2d_input``."""
    input_shape = _shape(input_shape, "input_shape", 4)
    _check_image_shape(input_shape, "input_shape")
    w = _float_array(weight, "weight")
    dy = _float_array(grad_output, "grad_output")
    _same_dtype(w, "weight", dy, "grad_output")
    _ndim(w, "weight", (4,), "4-D (K, C/groups, R, S)")
    _ndim(dy, "grad_output", (4,), "4-D (N, K, Ho, Wo)")
    geometry = _conv_geometry(input_shape, w.shape, stride, padding, dilation, groups,
                              "input_shape")
    if dy.shape != geometry.output_shape:
        raise ValueError(f"grad_output: expected shape {geometry.output_shape} (the conv2d output "
                         f"for input_shape {input_shape}), got {dy.shape}")
    out = _output(out, input_shape, w.dtype, (w, dy))
    _core.conv2d_input_grad(_contiguous(w), _contiguous(dy), None, out, *geometry.core_args())
    return out


def conv2d_weight_grad(input, weight_shape, grad_output, stride=1, padding=0, dilation=1,
                       groups=1, out=None):
    """Gradient of conv2d with respect to its weight, as ``torch.nn.grad.conv2d_weight``."""
    x = _float_array(input, "input")
    weight_shape = _shape(weight_shape, "weight_shape", 4)
    dy = _float_array(grad_output, "grad_output")
    _same_dtype(x, "input", dy, "grad_output")
    _ndim(x, "input", (4,), "4-D (N, C, H, W)")
    _check_image_shape(x.shape, "input")
    _ndim(dy, "grad_output", (4,), "4-D (N, K, Ho, Wo)")
    geometry = _conv_geometry(x.shape, weight_shape, stride, padding, dilation, groups,
                              "input", "weight_shape")
    if dy.shape != geometry.output_shape:
        raise ValueError(f"grad_output: expected shape {geometry.output_shape} (the conv2d output "
                         f"for input {x.shape}), got {dy.shape}")
    out = _output(out, weight_shape, x.dtype, (x, dy))
    _core.conv2d_weight_grad(_contiguous(x), _contiguous(dy), out, *geometry.core_args())
    return out


def conv2d_bias_grad(grad_output, out=None):
    """Gradient of conv2d with respect to its bias: ``grad_output.sum((0, 2, 3))`` (a 3-D,
    unbatched ``grad_output`` is summed over its plane), on fastconv's threads."""
    dy, _ = _batched(_float_array(grad_output, "grad_output"), "grad_output")
    out = _output(out, (dy.shape[1],), dy.dtype, (dy,))
    _core.conv2d_bias_grad(_contiguous(dy), out)
    return out


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, out=None):
    """2-D transposed convolution, as ``torch.nn.functional.conv_transpose2d``.

    input (N, C_in, H, W) or (C_in, H, W); weight (C_in, C_out/groups, R, S); bias (C_out,).
    """
    x = _float_array(input, "input")
    w = _float_array(weight, "weight")
    _same_dtype(x, "input", w, "weight")
    x4, unbatched = _batched(x, "input")
    _ndim(w, "weight", (4,), "4-D (C_in, C_out/groups, R, S)")
    n, c_in, h, w_in = x4.shape
    _check_kernel_size(w.shape, "weight")
    if w.shape[1] < 1:
        raise ValueError(f"weight: expected at least 1 output channel, got shape {w.shape}")
    if w.shape[0] != c_in:
        raise ValueError(f"weight: expected shape[0] == input channels = {c_in}, "
                         f"got weight shape {w.shape}")
    groups = _groups(groups, c_in, c_in)
    c_out = w.shape[1] * groups
    stride = _pair(stride, "stride", minimum=1)
    dilation = _pair(dilation, "dilation", minimum=1)
    if isinstance(padding, str):
        raise ValueError(f"padding: conv_transpose2d takes an int or a pair, got {padding!r}")
    padding = _pair(padding, "padding", minimum=0)
    output_padding = _pair(output_padding, "output_padding", minimum=0)
    for axis in range(2):
        if output_padding[axis] >= max(stride[axis], dilation[axis]):
            raise ValueError(
                f"output_padding: must be smaller than either stride or dilation, got "
                f"output_padding {output_padding}, stride {stride}, dilation {dilation}")
    size = tuple(conv_transpose_output_size((h, w_in)[axis], w.shape[2 + axis], stride[axis],
                                            padding[axis], output_padding[axis], dilation[axis])
                 for axis in range(2))
    if min(size) < 1:
        raise ValueError(f"input: output size would be {size}, which is too small "
                         f"(padding {padding} too large for input {(h, w_in)})")
    b = _bias(bias, x, c_out)
    shape = (c_out,) + size if unbatched else (n, c_out) + size
    out = _output(out, shape, x.dtype, (x, w, b))
    # The transposed convolution is the input gradient of the convolution it transposes.
    _core.conv2d_input_grad(_contiguous(w), _contiguous(x4), b, out[None] if unbatched else out,
                            stride, padding, dilation, groups)
    return out


# ----------------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------------

class _PoolGeometry:
    """Checked arguments of a pooling over an input of shape (N, C, H, W)."""

    def __init__(self, input_shape, kernel_size, stride, padding, dilation, ceil_mode,
                 input_name="input"):
        n, c, h, w = input_shape
        self.kernel = _pair(kernel_size, "kernel_size", minimum=1)
        if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
            self.stride = self.kernel
        else:
            self.stride = _pair(stride, "stride", minimum=1)
        self.padding = _pair(padding, "padding", minimum=0)
        self.dilation = _pair(dilation, "dilation", minimum=1)
        if not isinstance(ceil_mode, (bool, np.bool_)):
            raise TypeError(f"ceil_mode: expected a bool, got {ceil_mode!r}")
        for axis in range(2):
            if self.padding[axis] > self.kernel[axis] // 2:
                raise ValueError(
                    f"padding: must be at most half of kernel_size, got padding {self.padding} "
                    f"and kernel_size {self.kernel}")
        ho, wo = (pool_output_size((h, w)[axis], self.kernel[axis], self.stride[axis],
                                   self.padding[axis], self.dilation[axis], bool(ceil_mode))
                  for axis in range(2))
        if ho < 1 or wo < 1:
            raise ValueError(
                f"{input_name}: spatial size {(h, w)} is too small for kernel_size {self.kernel}, "
                f"padding {self.padding}, dilation {self.dilation} (output size would be "
                f"{(ho, wo)})")
        self.output_shape = (n, c, ho, wo)


_pool_geometry = _memoized(_PoolGeometry, shapes=1)


def _avg_options(count_include_pad, divisor_override) -> tuple[bool, int]:
    if not isinstance(count_include_pad, (bool, np.bool_)):
        raise TypeError(f"count_include_pad: expected a bool, got {count_include_pad!r}")
    if divisor_override is None:
        return bool(count_include_pad), 0
    return bool(count_include_pad), _int(divisor_override, "divisor_override", minimum=1)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, out=None):
    """2-D max pooling, as ``torch.nn.functional.max_pool2d``.

    With return_indices, also returns int64 indices: the flat position h*W + w of each maximum
    within its input plane. Ties pick the first maximum in row-major order; NaN propagates.
    """
    x = _float_array(input, "input")
    x4, unbatched = _batched(x, "input")
    geometry = _pool_geometry(x4.shape, kernel_size, stride, padding, dilation, ceil_mode)
    shape = geometry.output_shape[1:] if unbatched else geometry.output_shape
    out = _output(out, shape, x.dtype, (x,))
    indices = _empty(shape, np.int64) if return_indices else None
    _core.max_pool2d_forward(_contiguous(x4), out[None] if unbatched else out,
                             None if indices is None else (indices[None] if unbatched else indices),
                             geometry.kernel, geometry.stride, geometry.padding,
                             geometry.dilation)
    return (out, indices) if return_indices else out


def max_pool2d_backward(grad_output, indices, input_shape, out=None):
    """Gradient of max_pool2d with respect to its input, given the indices it returned."""
    dy = _float_array(grad_output, "grad_output")
    dy4, unbatched = _batched(dy, "grad_output")
    input_shape = _shape(input_shape, "input_shape", dy.ndim)
    _check_image_shape(input_shape, "input_shape")
    input4 = (1,) + input_shape if unbatched else input_shape
    indices = np.asarray(indices)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"indices: expected an integer array, got dtype {indices.dtype}")
    if indices.shape != dy.shape:
        raise ValueError(f"indices: expected the shape of grad_output {dy.shape}, "
                         f"got {indices.shape}")
    if input4[:2] != dy4.shape[:2]:
        raise ValueError(f"input_shape: batch and channels {input_shape[:-2]} differ from "
                         f"grad_output's {dy.shape[:-2]}")
    indices4 = np.ascontiguousarray(indices.reshape(dy4.shape), dtype=np.int64)
    out = _output(out, input_shape, dy.dtype, (dy, indices))
    _core.max_pool2d_backward(_contiguous(dy4), indices4, out[None] if unbatched else out)
    return out


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None, out=None):
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``."""
    x = _float_array(input, "input")
    x4, unbatched = _batched(x, "input")
    geometry = _pool_geometry(x4.shape, kernel_size, stride, padding, 1, ceil_mode)
    include_pad, divisor = _avg_options(count_include_pad, divisor_override)
    shape = geometry.output_shape[1:] if unbatched else geometry.output_shape
    out = _output(out, shape, x.dtype, (x,))
    _core.avg_pool2d_forward(_contiguous(x4), out[None] if unbatched else out, geometry.kernel,
                             geometry.stride, geometry.padding, include_pad, divisor)
    return out


def avg_pool2d_backward(grad_output, input_shape, kernel_size, stride=None, padding=0,
                        ceil_mode=False, count_include_pad=True, divisor_override=None,
                        out=None):
    """Gradient of avg_pool2d with respect to its input."""
    dy = _float_array(grad_output, "grad_output")
    dy4, unbatched = _batched(dy, "grad_output")
    input_shape = _shape(input_shape, "input_shape", dy.ndim)
    _check_image_shape(input_shape, "input_shape")
    input4 = (1,) + input_shape if unbatched else input_shape
    geometry = _pool_geometry(input4, kernel_size, stride, padding, 1, ceil_mode,
                              "input_shape")
    include_pad, divisor = _avg_options(count_include_pad, divisor_override)
    if dy4.shape != geometry.output_shape:
        expected = geometry.output_shape[1:] if unbatched else geometry.output_shape
        raise ValueError(f"grad_output: expected shape {expected} (the avg_pool2d output for "
                         f"input_shape {input_shape}), got {dy.shape}")
    out = _output(out, input_shape, dy.dtype, (dy,))
    _core.avg_pool2d_backward(_contiguous(dy4), out[None] if unbatched else out,
                              geometry.kernel, geometry.stride, geometry.padding, include_pad,
                              divisor)
    return out


# ----------------------------------------------------------------------------------------------
# Activations
# ----------------------------------------------------------------------------------------------

def relu(input, out=None):
    """max(input, 0) elementwise (NaN stays NaN, as in torch.relu), on fastconv's threads."""
    x = _float_array(input, "input")
    out = _output(out, x.shape, x.dtype, (x,))
    _core.relu_forward(_contiguous(x).reshape(-1), out.reshape(-1))
    return out


def relu_backward(grad_output, output, out=None):
    """The gradient of relu from its output: grad_output where output > 0, else 0 (PyTorch's
    threshold_backward; where output is NaN the gradient passes)."""
    dy = _float_array(grad_output, "grad_output")
    y = _float_array(output, "output")
    _same_dtype(dy, "grad_output", y, "output")
    if y.shape != dy.shape:
        raise ValueError(f"output: expected shape {dy.shape} (grad_output's), got {y.shape}")
    out = _output(out, dy.shape, dy.dtype, (dy, y))
    _core.relu_backward(_contiguous(y).reshape(-1), _contiguous(dy).reshape(-1),
                        out.reshape(-1))
    return out


# ----------------------------------------------------------------------------------------------
# Dense products
# ----------------------------------------------------------------------------------------------

def matmul(a, b, transpose_a=False, transpose_b=False, out=None):
    """op(a) @ op(b) for 2-D float arrays, op transposing when asked, on fastconv's threads.

    Linear layers use it so that their work shares the convolutions' thread pool instead of
    starting NumPy's BLAS pool beside it. A transposed operand is read in place, not copied.
    """
    a = _float_array(a, "a")
    b = _float_array(b, "b")
    _same_dtype(a, "a", b, "b")
    _ndim(a, "a", (2,), "2-D")
    _ndim(b, "b", (2,), "2-D")
    m, k = a.shape[::-1] if transpose_a else a.shape
    k_b, n = b.shape[::-1] if transpose_b else b.shape
    if k != k_b:
        raise ValueError(f"b: inner dimensions differ: op(a) is {(m, k)}, op(b) is {(k_b, n)}")
    out = _output(out, (m, n), a.dtype, (a, b))
    _core.matmul(_contiguous(a), _contiguous(b), out, bool(transpose_a), bool(transpose_b))
    return out


# ----------------------------------------------------------------------------------------------
# Optimizer updates
# ----------------------------------------------------------------------------------------------

def _in_place(array, name, like=None):
    """`array` as a C-contiguous, writeable float array (of like's shape and dtype) to update."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(array).__name__}")
    _float_array(array, name)
    if like is not None:
        _same_dtype(like, "param", array, name)
        if array.shape != like.shape:
            raise ValueError(f"{name}: expected shape {like.shape} (param's), got {array.shape}")
    if not array.flags.c_contiguous or not array.flags.writeable:
        raise ValueError(f"{name}: must be a C-contiguous, writeable array (it is updated in "
                         "place)")
    return array


def sgd_update(param, grad, momentum_buffer=None, lr=1e-3, momentum=0.0, dampening=0.0,
               weight_decay=0.0, nesterov=False, maximize=False, first_step=False):
    """One step of PyTorch's SGD on ``param`` in place, in one threaded pass::

        g = -grad if maximize else grad
        g = g + weight_decay * param                           if weight_decay != 0
        buf = g (first_step) | momentum * buf + (1 - dampening) * g    if momentum != 0
        g = g + momentum * buf if nesterov else buf                    if momentum != 0
        param -= lr * g

    each operation rounded in param's dtype as ``fastconv.optim.SGD``'s NumPy code rounds it.
    ``momentum_buffer`` (updated in place) is required when momentum != 0.
    """
    param = _in_place(param, "param")
    g = _float_array(grad, "grad")
    _same_dtype(param, "param", g, "grad")
    if g.shape != param.shape:
        raise ValueError(f"grad: expected shape {param.shape} (param's), got {g.shape}")
    arrays = [param, g]
    if momentum_buffer is not None:
        arrays.append(_in_place(momentum_buffer, "momentum_buffer", param))
    elif momentum != 0:
        raise ValueError("momentum_buffer: required when momentum != 0")
    for i, a in enumerate(arrays):
        if any(np.may_share_memory(a, b) for b in arrays[i + 1:]):
            raise ValueError("param, grad and momentum_buffer must not share memory")
    _core.sgd_update([param], [_contiguous(g)], None if momentum_buffer is None else
                     [momentum_buffer], float(lr), float(momentum), float(dampening),
                     float(weight_decay), bool(nesterov), bool(maximize), bool(first_step))


def sgd_update_many(params, grads, momentum_buffers=None, lr=1e-3, momentum=0.0,
                    dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False,
                    first_step=False):
    """``sgd_update`` of every ``params[i]`` with ``grads[i]`` (and ``momentum_buffers[i]``),
    all with the same options, in one threaded pass over all of them: what an optimizer step
    over a model's many small parameters costs once instead of once per parameter.

    params and momentum_buffers: C-contiguous, writeable float arrays, updated in place;
    grads[i]: params[i]'s shape and dtype. No array updated may share memory with another
    array of the call (ValueError, before anything is updated).
    """
    params, grads = list(params), list(grads)
    if len(grads) != len(params):
        raise ValueError(f"grads: expected {len(params)} arrays (one per param), got {len(grads)}")
    buffers = None
    if momentum_buffers is not None:
        buffers = list(momentum_buffers)
        if len(buffers) != len(params):
            raise ValueError(f"momentum_buffers: expected {len(params)} arrays (one per param), "
                             f"got {len(buffers)}")
    elif momentum != 0:
        raise ValueError("momentum_buffers: required when momentum != 0")
    for i, param in enumerate(params):
        _in_place(param, f"params[{i}]")
        _same_dtype(params[0], "params[0]", param, f"params[{i}]")
        g = grads[i]
        if not isinstance(g, np.ndarray):
            raise TypeError(f"grads[{i}]: expected a numpy.ndarray, got {type(g).__name__}")
        if g.dtype != param.dtype or g.shape != param.shape:
            raise ValueError(f"grads[{i}]: expected shape {param.shape} and dtype {param.dtype} "
                             f"(params[{i}]'s), got {g.shape} and {g.dtype}")
        if not g.flags.c_contiguous:
            grads[i] = np.ascontiguousarray(g)
        if buffers is not None:
            _in_place(buffers[i], f"momentum_buffers[{i}]", param)
    _core.sgd_update(params, grads, buffers, float(lr), float(momentum), float(dampening),
                     float(weight_decay), bool(nesterov), bool(maximize), bool(first_step))
