"""Parameter initialisation with PyTorch's default schemes (torch.nn.init), in place."""

from __future__ import annotations

import math

import numpy as np

from ..random import default_generator

__all__ = ["calculate_fan_in_and_fan_out", "calculate_gain", "uniform_", "normal_", "zeros_",
           "ones_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_"]


def _array(tensor) -> np.ndarray:
    return tensor.data if hasattr(tensor, "data") and not isinstance(tensor, np.ndarray) else tensor


def calculate_fan_in_and_fan_out(shape) -> tuple[int, int]:
    """fan_in = shape[1] * receptive field, fan_out = shape[0] * receptive field (PyTorch's)."""
    if len(shape) < 2:
        raise ValueError(f"fan in and fan out need at least 2 dimensions, got shape {shape}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    if nonlinearity in ("linear", "conv2d", "sigmoid", "conv_transpose2d"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    raise ValueError(f"nonlinearity: unsupported {nonlinearity!r}")


def uniform_(tensor, a: float = 0.0, b: float = 1.0, generator=None):
    data = _array(tensor)
    data[...] = (generator or default_generator()).uniform(a, b, size=data.shape)
    return tensor


def normal_(tensor, mean: float = 0.0, std: float = 1.0, generator=None):
    data = _array(tensor)
    data[...] = (generator or default_generator()).normal(mean, std, size=data.shape)
    return tensor


def zeros_(tensor):
    _array(tensor)[...] = 0
    return tensor


def ones_(tensor):
    _array(tensor)[...] = 1
    return tensor


def _fan(shape, mode: str) -> int:
    fan_in, fan_out = calculate_fan_in_and_fan_out(shape)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode: expected 'fan_in' or 'fan_out', got {mode!r}")
    return fan_in if mode == "fan_in" else fan_out


def kaiming_uniform_(tensor, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", generator=None):
    """U(-bound, bound), bound = gain * sqrt(3 / fan). PyTorch's layers use a = sqrt(5), which
    gives bound = 1 / sqrt(fan_in)."""
    data = _array(tensor)
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(data.shape, mode))
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", generator=None):
    data = _array(tensor)
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(data.shape, mode))
    return normal_(tensor, 0.0, std, generator)


def xavier_uniform_(tensor, gain: float = 1.0, generator=None):
    fan_in, fan_out = calculate_fan_in_and_fan_out(_array(tensor).shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)
