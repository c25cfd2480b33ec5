"""Differentiable network operations: each a Function with its forward and backward together.

Convolution and pooling passes, forward and backward, run in the C++ kernels
(`fastconv.kernels`); the rest (linear, activations, normalisation, losses) are a few NumPy
expressions. Shapes use PyTorch's conventions: images (N, C, H, W), logits (N, classes).
"""

from __future__ import annotations

import numpy as np

from . import kernels
from .tensor import Function, unbroadcast

__all__ = [
    "Conv2d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Linear",
    "LeakyReLU", "Softmax", "LogSoftmax", "BatchNorm2dTrain", "Affine2d", "Dropout",
    "CrossEntropy", "NLL", "MSE",
]


# ---------------------------------------------------------------------------------------------
# Convolution and pooling
# ---------------------------------------------------------------------------------------------

class Conv2d(Function):
    """y = conv2d(x, weight) + bias.   x (N,C,H,W), weight (K,C/g,R,S), bias (K,) or None."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight)
        ctx.args = stride, padding, dilation, groups
        return kernels.conv2d(x, weight, bias, *ctx.args)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = kernels.conv2d_input_grad(x.shape, weight, grad, *ctx.args) if need_x else None
        grad_w = kernels.conv2d_weight_grad(x, weight.shape, grad, *ctx.args) if need_w else None
        grad_b = kernels.conv2d_bias_grad(grad) if need_b else None
        return grad_x, grad_w, grad_b


class ConvTranspose2d(Function):
    """y = conv_transpose2d(x, weight) + bias.   x (N,Cin,H,W), weight (Cin,Cout/g,R,S)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, output_padding, groups, dilation):
        ctx.save_for_backward(x, weight)
        ctx.conv_args = stride, padding, dilation, groups  # the convolution it transposes
        return kernels.conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups,
                                        dilation)

    @staticmethod
    def backward(ctx, grad):
        # y = conv2d_input_grad(x): so dL/dx = conv2d(dL/dy) and dL/dw = conv2d_weight_grad
        # with the roles of input and output exchanged.
        x, weight = ctx.saved
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = kernels.conv2d(grad, weight, None, *ctx.conv_args) if need_x else None
        grad_w = (kernels.conv2d_weight_grad(grad, weight.shape, x, *ctx.conv_args)
                  if need_w else None)
        grad_b = kernels.conv2d_bias_grad(grad) if need_b else None
        return grad_x, grad_w, grad_b


class MaxPool2d(Function):
    """y = max_pool2d(x); the indices of the maxima route the gradient back."""

    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        y, indices = kernels.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode,
                                        return_indices=True)
        ctx.input_shape, ctx.indices = x.shape, indices
        return y

    @staticmethod
    def backward(ctx, grad):
        return kernels.max_pool2d_backward(grad, ctx.indices, ctx.input_shape)


class AvgPool2d(Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                divisor_override):
        ctx.input_shape = x.shape
        ctx.args = kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        return kernels.avg_pool2d(x, *ctx.args)

    @staticmethod
    def backward(ctx, grad):
        return kernels.avg_pool2d_backward(grad, ctx.input_shape, *ctx.args)


def adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive pooling windows along one axis: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


class AdaptiveAvgPool2d(Function):
    """Average over PyTorch's adaptive windows. Sizes that divide evenly (including global
    pooling to 1x1) use the avg_pool2d kernel; others average each window with NumPy."""

    @staticmethod
    def forward(ctx, x, output_size):
        oh, ow = output_size
        h, w = x.shape[-2:]
        ctx.input_shape, ctx.output_size = x.shape, (oh, ow)
        ctx.uniform = h % oh == 0 and w % ow == 0
        if ctx.uniform:
            ctx.kernel = (h // oh, w // ow)
            return kernels.avg_pool2d(x, ctx.kernel)
        out = np.empty(x.shape[:-2] + (oh, ow), dtype=x.dtype)
        for i, (h0, h1) in enumerate(adaptive_windows(h, oh)):
            for j, (w0, w1) in enumerate(adaptive_windows(w, ow)):
                out[..., i, j] = x[..., h0:h1, w0:w1].mean(axis=(-2, -1))
        return out

    @staticmethod
    def backward(ctx, grad):
        if ctx.uniform:
            return kernels.avg_pool2d_backward(grad, ctx.input_shape, ctx.kernel)
        h, w = ctx.input_shape[-2:]
        oh, ow = ctx.output_size
        grad_x = np.zeros(ctx.input_shape, dtype=grad.dtype)
        for i, (h0, h1) in enumerate(adaptive_windows(h, oh)):
            for j, (w0, w1) in enumerate(adaptive_windows(w, ow)):
                area = grad.dtype.type((h1 - h0) * (w1 - w0))
                grad_x[..., h0:h1, w0:w1] += (grad[..., i, j] / area)[..., None, None]
        return grad_x


# ---------------------------------------------------------------------------------------------
# Dense layers and activations
# ---------------------------------------------------------------------------------------------

class Linear(Function):
    """y = x @ weight.T + bias.   x (..., in), weight (out, in), bias (out,) or None.
    The products run in the C++ GEMM (kernels.matmul) on fastconv's threads."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        x2 = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(x2, weight)
        ctx.input_shape = x.shape
        y = kernels.matmul(x2, weight, transpose_b=True)
        if bias is not None:
            y += bias
        return y.reshape(x.shape[:-1] + (weight.shape[0],))

    @staticmethod
    def backward(ctx, grad):
        x2, weight = ctx.saved
        need_x, need_w, need_b = ctx.needs_input_grad
        grad2 = grad.reshape(-1, grad.shape[-1])
        grad_x = kernels.matmul(grad2, weight).reshape(ctx.input_shape) if need_x else None
        grad_w = kernels.matmul(grad2, x2, transpose_a=True) if need_w else None
        grad_b = grad2.sum(axis=0) if need_b else None
        return grad_x, grad_w, grad_b


class LeakyReLU(Function):
    @staticmethod
    def forward(ctx, x, negative_slope):
        ctx.save_for_backward(x)
        ctx.slope = x.dtype.type(negative_slope)
        return np.where(x > 0, x, x * ctx.slope)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved
        return np.where(x > 0, grad, grad * ctx.slope)


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, x, dim):
        y = _log_softmax(x, dim)
        ctx.save_for_backward(y)
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        return grad - np.exp(y) * grad.sum(axis=ctx.dim, keepdims=True)


class Softmax(Function):
    @staticmethod
    def forward(ctx, x, dim):
        y = np.exp(_log_softmax(x, dim))
        ctx.save_for_backward(y)
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved
        return y * (grad - (grad * y).sum(axis=ctx.dim, keepdims=True))


class Dropout(Function):
    """y = x * mask / (1 - p), mask ~ Bernoulli(1 - p) drawn from `generator`."""

    @staticmethod
    def forward(ctx, x, p, generator):
        keep = generator.random(x.shape, dtype=np.float32 if x.dtype == np.float32 else np.float64)
        ctx.mask = (keep >= p).astype(x.dtype) / x.dtype.type(1 - p)
        return x * ctx.mask

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.mask


# ---------------------------------------------------------------------------------------------
# Batch normalisation
# ---------------------------------------------------------------------------------------------

_CHANNEL_AXES = (0, 2, 3)


def _per_channel(v: np.ndarray) -> np.ndarray:
    return v.reshape(1, -1, 1, 1)


class BatchNorm2dTrain(Function):
    """Normalise each channel by the batch's mean and biased variance, then scale and shift.
    The batch mean, variance and count are appended to `statistics_out`, from which the layer
    updates its running averages.

    `reduce` (SyncBatchNorm) sums float64 per-channel arrays across processes in place: the
    statistics are then those of the global batch, from (count, sum, sum of squares) in
    forward and (sum g, sum g * x_hat) in backward; None keeps them local."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, statistics_out, reduce=None):
        count = x.size // x.shape[1]
        if reduce is None:
            mean = x.mean(axis=_CHANNEL_AXES)
            centred = x - _per_channel(mean)
            var = (centred * centred).mean(axis=_CHANNEL_AXES)
        else:
            channels = x.shape[1]
            sums = np.empty(1 + 2 * channels)
            sums[0] = count
            sums[1:1 + channels] = x.sum(axis=_CHANNEL_AXES, dtype=np.float64)
            sums[1 + channels:] = np.einsum("nchw,nchw->c", x, x, dtype=np.float64)
            reduce(sums)
            count = int(sums[0])
            if count == 0:
                raise ValueError("input: SyncBatchNorm got no sample on any process")
            mean64 = sums[1:1 + channels] / count
            var64 = np.maximum(sums[1 + channels:] / count - mean64 * mean64, 0.0)
            mean, var = mean64.astype(x.dtype), var64.astype(x.dtype)
            centred = x - _per_channel(mean)
        inv_std = 1 / np.sqrt(var + x.dtype.type(eps))
        x_hat = centred * _per_channel(inv_std)
        ctx.save_for_backward(x_hat, inv_std, weight)
        ctx.reduce, ctx.count = reduce, count
        statistics_out.extend((mean, var, count))
        y = x_hat
        if weight is not None:
            y = y * _per_channel(weight)
        if bias is not None:
            y = y + _per_channel(bias)
        return y

    @staticmethod
    def backward(ctx, grad):
        x_hat, inv_std, weight = ctx.saved
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_w = (grad * x_hat).sum(axis=_CHANNEL_AXES) if need_w else None
        grad_b = grad.sum(axis=_CHANNEL_AXES) if need_b else None
        grad_x = None
        if need_x:
            g = grad * _per_channel(weight) if weight is not None else grad
            sum_g = g.sum(axis=_CHANNEL_AXES)
            sum_gx = (g * x_hat).sum(axis=_CHANNEL_AXES)
            if ctx.reduce is not None:
                sums = np.concatenate([sum_g, sum_gx]).astype(np.float64)
                ctx.reduce(sums)
                sum_g, sum_gx = (part.astype(g.dtype) for part in np.split(sums, 2))
            count = g.dtype.type(ctx.count)
            grad_x = (g - _per_channel(sum_g / count) - x_hat * _per_channel(sum_gx / count)) \
                * _per_channel(inv_std)
        return grad_x, grad_w, grad_b


class Affine2d(Function):
    """y = x * scale + shift per channel (batch norm in eval mode: scale and shift folded from
    the running statistics and the affine parameters, which get gradients through them)."""

    @staticmethod
    def forward(ctx, x, scale, shift):
        ctx.save_for_backward(x, scale)
        return x * _per_channel(scale) + _per_channel(shift)

    @staticmethod
    def backward(ctx, grad):
        x, scale = ctx.saved
        need_x, need_scale, need_shift = ctx.needs_input_grad
        grad_x = grad * _per_channel(scale) if need_x else None
        grad_scale = (grad * x).sum(axis=_CHANNEL_AXES) if need_scale else None
        grad_shift = grad.sum(axis=_CHANNEL_AXES) if need_shift else None
        return grad_x, grad_scale, grad_shift


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------

def _reduce(per_sample: np.ndarray, reduction: str, count) -> np.ndarray:
    if reduction == "none":
        return per_sample
    total = per_sample.sum()
    return np.asarray(total / per_sample.dtype.type(count) if reduction == "mean" else total)


def _reduction_grad(grad: np.ndarray, reduction: str, count, shape, dtype) -> np.ndarray:
    """d(reduced)/d(per-sample) times the incoming gradient, as a per-sample array."""
    if reduction == "none":
        return grad
    scale = grad / dtype.type(count) if reduction == "mean" else grad
    return np.broadcast_to(scale, shape)


def check_class_targets(target: np.ndarray, classes: int, batch: int, ignore_index: int,
                        name: str) -> np.ndarray:
    """Validated integer class labels: shape (batch,), each in [0, classes) or ignore_index."""
    if target.dtype.kind not in "iu":
        raise TypeError(f"{name}: target must hold integer class labels, got dtype {target.dtype}")
    if target.shape != (batch,):
        raise ValueError(f"{name}: target must have shape ({batch},), got {target.shape}")
    bad = (target != ignore_index) & ((target < 0) | (target >= classes))
    if bad.any():
        raise ValueError(f"{name}: target labels must lie in [0, {classes}), got "
                         f"{target[bad][:5].tolist()}")
    return target.astype(np.int64, copy=False)


class CrossEntropy(Function):
    """Cross-entropy of logits (N, C) against class labels (N,), with optional label smoothing:
    loss_i = (1 - s) * -log p[i, y_i] + s * mean_c(-log p[i, c]); ignored labels count for
    nothing; 'mean' divides by the number of labels not ignored."""

    @staticmethod
    def forward(ctx, logits, target, reduction, label_smoothing, ignore_index):
        n, classes = logits.shape
        log_p = _log_softmax(logits, 1)
        keep = target != ignore_index
        safe_target = np.where(keep, target, 0)
        nll = -log_p[np.arange(n), safe_target]
        s = logits.dtype.type(label_smoothing)
        per_sample = (1 - s) * nll - s * log_p.mean(axis=1) if label_smoothing else nll
        per_sample = np.where(keep, per_sample, 0).astype(logits.dtype, copy=False)
        ctx.save_for_backward(log_p)
        ctx.target, ctx.keep, ctx.count = safe_target, keep, max(int(keep.sum()), 0)
        ctx.reduction, ctx.smoothing = reduction, s
        return _reduce(per_sample, reduction, ctx.count)

    @staticmethod
    def backward(ctx, grad):
        (log_p,) = ctx.saved
        n, classes = log_p.shape
        per_sample = _reduction_grad(grad, ctx.reduction, ctx.count, (n,), log_p.dtype)
        # d loss_i / d logits_i = softmax - (1 - s) * onehot - s / C
        grad_logits = np.exp(log_p)
        grad_logits[np.arange(n), ctx.target] -= 1 - ctx.smoothing
        if ctx.smoothing:
            grad_logits -= ctx.smoothing / classes
        grad_logits *= (per_sample * ctx.keep)[:, None]
        return grad_logits, None


class NLL(Function):
    """Negative log-likelihood of log-probabilities (N, C) against class labels (N,)."""

    @staticmethod
    def forward(ctx, log_p, target, reduction, ignore_index):
        n = log_p.shape[0]
        keep = target != ignore_index
        safe_target = np.where(keep, target, 0)
        per_sample = np.where(keep, -log_p[np.arange(n), safe_target], 0).astype(log_p.dtype)
        ctx.shape, ctx.dtype = log_p.shape, log_p.dtype
        ctx.target, ctx.keep, ctx.count = safe_target, keep, int(keep.sum())
        ctx.reduction = reduction
        return _reduce(per_sample, reduction, ctx.count)

    @staticmethod
    def backward(ctx, grad):
        n = ctx.shape[0]
        per_sample = _reduction_grad(grad, ctx.reduction, ctx.count, (n,), ctx.dtype)
        grad_log_p = np.zeros(ctx.shape, dtype=ctx.dtype)
        grad_log_p[np.arange(n), ctx.target] = -(per_sample * ctx.keep)
        return grad_log_p, None


class MSE(Function):
    @staticmethod
    def forward(ctx, prediction, target, reduction):
        diff = prediction - target
        ctx.save_for_backward(diff)
        ctx.reduction, ctx.shapes = reduction, (prediction.shape, target.shape)
        return _reduce(diff * diff, reduction, diff.size)

    @staticmethod
    def backward(ctx, grad):
        (diff,) = ctx.saved
        g = 2 * diff * _reduction_grad(grad, ctx.reduction, diff.size, diff.shape, diff.dtype)
        grad_prediction = unbroadcast(g, ctx.shapes[0]) if ctx.needs_input_grad[0] else None
        grad_target = unbroadcast(-g, ctx.shapes[1]) if ctx.needs_input_grad[1] else None
        return grad_prediction, grad_target
