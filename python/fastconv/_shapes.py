"""Output-size and padding formulas: the one place they are written (PyTorch's definitions).

The C++ kernels never compute an output size; they take the sizes these functions give.
"""

from __future__ import annotations


def conv_output_size(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int,
                     dilation: int) -> int:
    """Output length of a convolution along one axis (may be < 1 for invalid arguments)."""
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


def same_padding(kernel: int, dilation: int) -> tuple[int, int]:
    """(begin, end) padding of padding='same' at stride 1; an odd total puts the extra at the end."""
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2


def conv_transpose_output_size(size: int, kernel: int, stride: int, padding: int,
                               output_padding: int, dilation: int) -> int:
    """Output length of a transposed convolution along one axis."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def pool_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int,
                     ceil_mode: bool) -> int:
    """Output length of max/avg pooling along one axis (PyTorch's pooling_output_shape)."""
    numerator = size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = numerator // stride + 1
    # With ceil_mode the last window must start inside the input or its left padding.
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out
