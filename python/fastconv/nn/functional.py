"""Network operations on Tensors, with torch.nn.functional's names and signatures.

Inputs may be Tensors or NumPy arrays; results are Tensors that record the graph when an input
requires grad.
"""

from __future__ import annotations

import numpy as np

from .. import functions as fn
from ..random import default_generator
from ..tensor import Tensor

__all__ = [
    "conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "linear",
    "relu", "leaky_relu", "sigmoid", "tanh", "softmax", "log_softmax", "dropout", "batch_norm",
    "flatten", "cross_entropy", "nll_loss", "mse_loss",
]

_REDUCTIONS = ("mean", "sum", "none")


def _tensor(x, name: str = "input") -> Tensor:
    if isinstance(x, Tensor):
        return x
    array = np.asarray(x)
    if array.dtype.kind not in "fiub":
        raise TypeError(f"{name}: expected a Tensor or a numeric array, got dtype {array.dtype}")
    return Tensor(array)


def _optional(x, name):
    return None if x is None else _tensor(x, name)


def _image_op(x: Tensor, apply):
    """Run `apply` on x as a batch; a 3-D (C, H, W) input is one image, as in PyTorch."""
    if x.ndim == 3:
        y = apply(x.reshape((1,) + x.shape))
        return y.reshape(y.shape[1:])
    return apply(x)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    x, w, b = _tensor(input), _tensor(weight, "weight"), _optional(bias, "bias")
    return _image_op(x, lambda x4: fn.Conv2d.apply(x4, w, b, stride, padding, dilation, groups))


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1) -> Tensor:
    x, w, b = _tensor(input), _tensor(weight, "weight"), _optional(bias, "bias")
    return _image_op(x, lambda x4: fn.ConvTranspose2d.apply(
        x4, w, b, stride, padding, output_padding, groups, dilation))


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    if return_indices:
        raise NotImplementedError("max_pool2d: return_indices on Tensors is not supported; use "
                                  "fastconv.max_pool2d on arrays for the indices")
    x = _tensor(input)
    return _image_op(x, lambda x4: fn.MaxPool2d.apply(x4, kernel_size, stride, padding, dilation,
                                                      ceil_mode))


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None) -> Tensor:
    x = _tensor(input)
    return _image_op(x, lambda x4: fn.AvgPool2d.apply(x4, kernel_size, stride, padding, ceil_mode,
                                                      count_include_pad, divisor_override))


def adaptive_avg_pool2d(input, output_size) -> Tensor:
    x = _tensor(input)
    if isinstance(output_size, int):
        output_size = (output_size, output_size)
    output_size = tuple(x.shape[-2 + i] if s is None else int(s)
                        for i, s in enumerate(output_size))
    if len(output_size) != 2 or min(output_size) < 1:
        raise ValueError(f"output_size: expected one or two sizes >= 1, got {output_size}")
    if x.ndim not in (3, 4):
        raise ValueError(f"input: expected a 3-D or 4-D tensor, got shape {x.shape}")
    return _image_op(x, lambda x4: fn.AdaptiveAvgPool2d.apply(x4, output_size))


def linear(input, weight, bias=None) -> Tensor:
    return fn.Linear.apply(_tensor(input), _tensor(weight, "weight"), _optional(bias, "bias"))


def relu(input) -> Tensor:
    return _tensor(input).relu()


def leaky_relu(input, negative_slope: float = 0.01) -> Tensor:
    return fn.LeakyReLU.apply(_tensor(input), negative_slope)


def sigmoid(input) -> Tensor:
    return _tensor(input).sigmoid()


def tanh(input) -> Tensor:
    return _tensor(input).tanh()


def softmax(input, dim: int) -> Tensor:
    return fn.Softmax.apply(_tensor(input), dim)


def log_softmax(input, dim: int) -> Tensor:
    return fn.LogSoftmax.apply(_tensor(input), dim)


def dropout(input, p: float = 0.5, training: bool = True, generator=None) -> Tensor:
    if not 0 <= p <= 1:
        raise ValueError(f"p: dropout probability must be in [0, 1], got {p}")
    x = _tensor(input)
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0.0
    return fn.Dropout.apply(x, p, generator if generator is not None else default_generator())


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, num_batches_tracked=None, reduce=None) -> Tensor:
    """Batch normalisation over (N, H, W) per channel, as torch.nn.functional.batch_norm.

    In training, the running statistics (NumPy arrays) are updated in place with the batch
    mean and unbiased variance: r = (1 - momentum) * r + momentum * batch (momentum None:
    cumulative average over num_batches_tracked, a 0-d int64 array, which is incremented).
    reduce: for SyncBatchNorm, a function summing a float64 array across processes in place;
    the batch statistics are then those of all processes' batches together.
    """
    x = _tensor(input)
    w, b = _optional(weight, "weight"), _optional(bias, "bias")
    if x.ndim != 4:
        raise ValueError(f"input: batch_norm expects (N, C, H, W), got shape {x.shape}")
    if training or running_mean is None:
        statistics = []
        y = fn.BatchNorm2dTrain.apply(x, w, b, eps, statistics, reduce)
        if training and running_mean is not None:
            mean, var, count = statistics
            if count < 2:
                raise ValueError(f"input: expected more than 1 value per channel when training, "
                                 f"got input shape {x.shape}")
            if num_batches_tracked is not None:
                num_batches_tracked += 1
            factor = (1.0 / float(num_batches_tracked) if momentum is None
                      else float(momentum))
            unbiased = var * var.dtype.type(count / (count - 1))
            running_mean *= 1 - factor
            running_mean += factor * mean
            running_var *= 1 - factor
            running_var += factor * unbiased
        return y
    inv_std = 1 / np.sqrt(running_var + running_var.dtype.type(eps))
    # y = (x - mean) * inv_std * weight + bias, as one per-channel affine map
    scale = Tensor(inv_std.astype(x.dtype))
    if w is not None:
        scale = w * scale
    shift = -Tensor(running_mean.astype(x.dtype)) * scale
    if b is not None:
        shift = b + shift
    return fn.Affine2d.apply(x, scale, shift)


def flatten(input, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    return _tensor(input).flatten(start_dim, end_dim)


def _check_reduction(reduction: str, name: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _logits_and_target(input, target, name: str, ignore_index: int):
    logits = _tensor(input)
    if logits.ndim != 2:
        raise ValueError(f"{name}: input must be (N, classes), got shape {logits.shape}")
    labels = np.asarray(target.data if isinstance(target, Tensor) else target)
    labels = fn.check_class_targets(labels, logits.shape[1], logits.shape[0], ignore_index, name)
    return logits, labels


def cross_entropy(input, target, reduction: str = "mean", label_smoothing: float = 0.0,
                  ignore_index: int = -100) -> Tensor:
    """Cross-entropy of logits (N, C) against integer class labels (N,)."""
    _check_reduction(reduction, "cross_entropy")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing: must be in [0, 1], got {label_smoothing}")
    logits, labels = _logits_and_target(input, target, "cross_entropy", ignore_index)
    return fn.CrossEntropy.apply(logits, labels, reduction, label_smoothing, ignore_index)


def nll_loss(input, target, reduction: str = "mean", ignore_index: int = -100) -> Tensor:
    """Negative log-likelihood of log-probabilities (N, C) against integer labels (N,)."""
    _check_reduction(reduction, "nll_loss")
    log_p, labels = _logits_and_target(input, target, "nll_loss", ignore_index)
    return fn.NLL.apply(log_p, labels, reduction, ignore_index)


def mse_loss(input, target, reduction: str = "mean") -> Tensor:
    _check_reduction(reduction, "mse_loss")
    prediction, target = _tensor(input), _tensor(target, "target")
    try:
        np.broadcast_shapes(prediction.shape, target.shape)
    except ValueError:
        raise ValueError(f"mse_loss: input shape {prediction.shape} and target shape "
                         f"{target.shape} do not broadcast") from None
    return fn.MSE.apply(prediction, target, reduction)
