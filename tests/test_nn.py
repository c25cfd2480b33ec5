"""fastconv.nn: gradients of every layer and loss w.r.t. the input and every parameter
(float64 central finite differences), forward values against NumPy references, and Module
behaviour (registration, state_dict, modes, errors, initialisation)."""

import math
import zlib
from collections import OrderedDict

import numpy as np
import pytest

import fastconv
from fastconv import Tensor, nn
from fastconv.nn import functional as F

from test_autograd import gradcheck


@pytest.fixture(autouse=True)
def _seed(request):
    """Layer initialisation (the default generator) seeded per test."""
    seed = zlib.crc32(request.node.nodeid.encode())
    fastconv.manual_seed(seed)


def inputs(rng, *shape):
    return Tensor(rng.standard_normal(shape), requires_grad=True)


def check_layer(layer, x, rng, **tolerances):
    """Gradients of layer(x) w.r.t. x and every parameter."""
    params = list(layer.parameters())
    for p in params:
        assert p.dtype == np.float64, p.dtype
    gradcheck(lambda: layer(x), [x] + params, rng, what=repr(layer), **tolerances)


def distinct(rng, *shape):
    """Values with no ties (and spacing far above the finite-difference step)."""
    n = int(np.prod(shape))
    data = rng.permutation(n).reshape(shape) * 0.1 + 0.001 * rng.standard_normal(shape)
    return Tensor(data, requires_grad=True)


# ---------------------------------------------------------------------------------------------
# convolution layers
# ---------------------------------------------------------------------------------------------

CONV_CASES = {
    "plain": (dict(in_channels=3, out_channels=4, kernel_size=3), (2, 3, 6, 5)),
    "stride_padding": (dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1),
                       (2, 2, 7, 6)),
    "rect": (dict(in_channels=2, out_channels=3, kernel_size=(2, 3), stride=(2, 1),
                  padding=(1, 0)), (1, 2, 5, 6)),
    "same": (dict(in_channels=2, out_channels=3, kernel_size=3, padding="same"), (2, 2, 5, 4)),
    "same_even_dilated": (dict(in_channels=2, out_channels=2, kernel_size=(2, 4),
                               padding="same", dilation=2), (1, 2, 6, 7)),
    "valid": (dict(in_channels=2, out_channels=2, kernel_size=2, padding="valid"),
              (1, 2, 4, 4)),
    "dilation": (dict(in_channels=2, out_channels=3, kernel_size=3, dilation=2, padding=1),
                 (2, 2, 7, 7)),
    "groups_no_bias": (dict(in_channels=4, out_channels=6, kernel_size=3, groups=2,
                            bias=False), (2, 4, 5, 5)),
    "depthwise": (dict(in_channels=3, out_channels=3, kernel_size=3, groups=3, padding=1),
                  (1, 3, 4, 4)),
    "unbatched": (dict(in_channels=2, out_channels=3, kernel_size=3, padding=1), (2, 5, 4)),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv2d_gradients(case, rng):
    kwargs, shape = CONV_CASES[case]
    layer = nn.Conv2d(**kwargs, dtype=np.float64)
    x = inputs(rng, *shape)
    y = layer(x)
    x4 = x.data if x.ndim == 4 else x.data[None]
    want = fastconv.conv2d(x4, layer.weight.data,
                           None if layer.bias is None else layer.bias.data, layer.stride,
                           layer.padding, layer.dilation, layer.groups)
    if x.ndim == 3:
        want = want[0]
    np.testing.assert_allclose(y.data, want, rtol=1e-12)
    if kwargs.get("padding") == "same":
        assert y.shape[-2:] == x.shape[-2:]
    assert (layer.bias is None) == (kwargs.get("bias") is False)
    check_layer(layer, x, rng)


CONV_T_CASES = {
    "plain": (dict(in_channels=3, out_channels=2, kernel_size=3), (2, 3, 4, 3)),
    "stride_output_padding": (dict(in_channels=2, out_channels=3, kernel_size=3, stride=2,
                                   padding=1, output_padding=1), (2, 2, 3, 4)),
    "groups": (dict(in_channels=4, out_channels=6, kernel_size=(2, 3), stride=(2, 1),
                    groups=2), (1, 4, 3, 3)),
    "dilation_no_bias": (dict(in_channels=2, out_channels=2, kernel_size=2, dilation=2,
                              bias=False), (2, 2, 3, 3)),
    "unbatched": (dict(in_channels=2, out_channels=3, kernel_size=3, stride=2,
                       output_padding=1), (2, 3, 3)),
}


@pytest.mark.parametrize("case", sorted(CONV_T_CASES))
def test_conv_transpose2d_gradients(case, rng):
    kwargs, shape = CONV_T_CASES[case]
    layer = nn.ConvTranspose2d(**kwargs, dtype=np.float64)
    x = inputs(rng, *shape)
    y = layer(x)
    assert layer.weight.shape[:2] == (kwargs["in_channels"],
                                  kwargs["out_channels"] // kwargs.get("groups", 1))
    assert y.shape[-3] == kwargs["out_channels"]
    check_layer(layer, x, rng)


def test_conv_transpose2d_output_size(rng):
    layer = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1)
    y = layer(Tensor(rng.standard_normal((1, 2, 5, 4)).astype(np.float32)))
    # (H - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1
    assert y.shape == (1, 3, 10, 8) and y.dtype == np.float32


@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 5), (5,)], ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradients(shape, bias, rng):
    layer = nn.Linear(5, 3, bias=bias, dtype=np.float64)
    x = inputs(rng, *shape)
    y = layer(x)
    want = x.data @ layer.weight.data.T + (layer.bias.data if bias else 0)
    assert y.shape == shape[:-1] + (3,)
    np.testing.assert_allclose(y.data, want, rtol=1e-12)
    check_layer(layer, x, rng)


# ---------------------------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------------------------

MAXPOOL_CASES = {
    "k2": (dict(kernel_size=2), (2, 3, 6, 6)),
    "k3s2p1": (dict(kernel_size=3, stride=2, padding=1), (1, 2, 7, 6)),
    "ceil": (dict(kernel_size=2, stride=2, ceil_mode=True), (1, 2, 5, 5)),
    "dilation": (dict(kernel_size=2, stride=1, dilation=2), (1, 2, 5, 5)),
    "rect": (dict(kernel_size=(2, 3), stride=(1, 2)), (2, 1, 4, 7)),
    "unbatched": (dict(kernel_size=2), (3, 4, 4)),
}


@pytest.mark.parametrize("case", sorted(MAXPOOL_CASES))
def test_max_pool2d_gradients(case, rng):
    kwargs, shape = MAXPOOL_CASES[case]
    layer = nn.MaxPool2d(**kwargs)
    x = distinct(rng, *shape)
    np.testing.assert_array_equal(layer(x).data, fastconv.max_pool2d(x.data, **kwargs))
    check_layer(layer, x, rng)


AVGPOOL_CASES = {
    "k2": (dict(kernel_size=2), (2, 3, 6, 6)),
    "k3s2p1": (dict(kernel_size=3, stride=2, padding=1), (1, 2, 7, 6)),
    "ceil": (dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), (1, 2, 6, 6)),
    "no_pad_count": (dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
                     (2, 1, 5, 6)),
    "ceil_no_pad_count": (dict(kernel_size=2, stride=2, padding=1, ceil_mode=True,
                               count_include_pad=False), (1, 2, 5, 4)),
    "divisor_override": (dict(kernel_size=2, divisor_override=3), (1, 2, 4, 4)),
    "unbatched": (dict(kernel_size=2, stride=1), (2, 3, 3)),
}


@pytest.mark.parametrize("case", sorted(AVGPOOL_CASES))
def test_avg_pool2d_gradients(case, rng):
    kwargs, shape = AVGPOOL_CASES[case]
    layer = nn.AvgPool2d(**kwargs)
    x = inputs(rng, *shape)
    np.testing.assert_allclose(layer(x).data, fastconv.avg_pool2d(x.data, **kwargs), rtol=1e-12)
    check_layer(layer, x, rng)


def adaptive_reference(x, out_h, out_w):
    h, w = x.shape[-2:]
    out = np.empty(x.shape[:-2] + (out_h, out_w))
    for i in range(out_h):
        h0, h1 = math.floor(i * h / out_h), math.ceil((i + 1) * h / out_h)
        for j in range(out_w):
            w0, w1 = math.floor(j * w / out_w), math.ceil((j + 1) * w / out_w)
            out[..., i, j] = x[..., h0:h1, w0:w1].mean(axis=(-2, -1))
    return out


ADAPTIVE_CASES = {
    "divisible": ((2, 3), (2, 2, 4, 6), (2, 3)),
    "7_to_3": (3, (2, 2, 7, 7), (3, 3)),
    "non_divisible_rect": ((3, 2), (1, 2, 5, 7), (3, 2)),
    "global": (1, (2, 3, 5, 4), (1, 1)),
    "global_pair": ((1, 1), (1, 2, 3, 3), (1, 1)),
    "upsample": ((4, 5), (1, 1, 3, 2), (4, 5)),
    "none_keeps_size": ((None, 2), (1, 2, 3, 5), (3, 2)),
    "unbatched": (3, (2, 5, 7), (3, 3)),
}


@pytest.mark.parametrize("case", sorted(ADAPTIVE_CASES))
def test_adaptive_avg_pool2d(case, rng):
    output_size, shape, out_hw = ADAPTIVE_CASES[case]
    layer = nn.AdaptiveAvgPool2d(output_size)
    x = inputs(rng, *shape)
    y = layer(x)
    assert y.shape == shape[:-2] + out_hw
    np.testing.assert_allclose(y.data, adaptive_reference(x.data, *out_hw), rtol=1e-12,
                               atol=1e-15)
    check_layer(layer, x, rng)


def test_adaptive_avg_pool2d_bad_size():
    with pytest.raises(ValueError):
        nn.AdaptiveAvgPool2d(0)(Tensor(np.ones((1, 1, 3, 3))))
    with pytest.raises(ValueError):
        nn.AdaptiveAvgPool2d(2)(Tensor(np.ones((3, 3))))


# ---------------------------------------------------------------------------------------------
# batch normalisation
# ---------------------------------------------------------------------------------------------

def batch_norm_reference(x, mean, var, weight, bias, eps):
    y = (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + eps)
    if weight is not None:
        y = y * weight[None, :, None, None] + bias[None, :, None, None]
    return y


def data_or_none(parameter):
    return None if parameter is None else parameter.data


def randomise(layer, rng):
    """Non-trivial affine parameters and running statistics."""
    if layer.affine:
        layer.weight.data[...] = rng.uniform(0.5, 1.5, layer.num_features)
        layer.bias.data[...] = rng.standard_normal(layer.num_features)
    layer.running_mean[...] = rng.standard_normal(layer.num_features)
    layer.running_var[...] = rng.uniform(0.5, 2.0, layer.num_features)


@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_train_gradients(affine, rng):
    layer = nn.BatchNorm2d(3, affine=affine, dtype=np.float64)
    randomise(layer, rng)
    assert layer.training
    x = Tensor(rng.standard_normal((4, 3, 3, 2)) * 2 + 1, requires_grad=True)
    y = layer(x)
    mean, var = x.data.mean(axis=(0, 2, 3)), x.data.var(axis=(0, 2, 3))
    np.testing.assert_allclose(
        y.data, batch_norm_reference(x.data, mean, var, data_or_none(layer.weight),
                                     data_or_none(layer.bias), 1e-5), rtol=1e-10,
        atol=1e-12)
    assert len(list(layer.parameters())) == (2 if affine else 0)
    check_layer(layer, x, rng, rtol=1e-5, atol=1e-7)


def test_batch_norm_with_a_reduce_matches_the_local_statistics(rng):
    """The SyncBatchNorm path (statistics from summed count, sum and sum of squares) with a
    reduce over one process: values, running statistics and gradients as the local path's;
    float64 gradients also against finite differences."""
    calls = []

    def one_process(array):
        calls.append(array.shape)
    x = Tensor(rng.standard_normal((4, 3, 3, 2)) * 2 + 1, requires_grad=True)
    weight = Tensor(rng.uniform(0.5, 1.5, 3), requires_grad=True)
    bias = Tensor(rng.standard_normal(3), requires_grad=True)
    results = []
    for reduce in (None, one_process):
        running = [np.zeros(3), np.ones(3)]
        y = F.batch_norm(x, *running, weight, bias, training=True, reduce=reduce)
        upstream = np.cos(np.arange(y.data.size)).reshape(y.shape)
        for t in (x, weight, bias):
            t.grad = None
        y.backward(upstream)
        results.append([y.data, *running, x.grad.data, weight.grad.data, bias.grad.data])
    assert calls == [(7,), (6,)]  # count + 2 x 3 sums forward, 2 x 3 sums backward
    for local, reduced in zip(*results):
        np.testing.assert_allclose(reduced, local, rtol=1e-9, atol=1e-11)
    gradcheck(lambda: F.batch_norm(x, None, None, weight, bias, training=True,
                                   reduce=one_process),
              [x, weight, bias], rng, what="batch_norm with reduce")


@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_eval_gradients(affine, rng):
    layer = nn.BatchNorm2d(3, affine=affine, dtype=np.float64).eval()
    randomise(layer, rng)
    running = layer.running_mean.copy(), layer.running_var.copy()
    x = inputs(rng, 2, 3, 3, 3)
    y = layer(x)
    np.testing.assert_allclose(
        y.data, batch_norm_reference(x.data, *running, data_or_none(layer.weight),
                                     data_or_none(layer.bias), 1e-5), rtol=1e-12,
        atol=1e-12)
    check_layer(layer, x, rng)
    # eval mode leaves the running statistics and the counter alone
    np.testing.assert_array_equal(layer.running_mean, running[0])
    np.testing.assert_array_equal(layer.running_var, running[1])
    assert layer.num_batches_tracked == 0


def test_batch_norm_without_running_stats_uses_batch_stats(rng):
    layer = nn.BatchNorm2d(2, track_running_stats=False, dtype=np.float64).eval()
    assert list(layer.state_dict()) == ["weight", "bias"]
    x = inputs(rng, 3, 2, 2, 2)
    y = layer(x)
    mean, var = x.data.mean(axis=(0, 2, 3)), x.data.var(axis=(0, 2, 3))
    np.testing.assert_allclose(y.data, batch_norm_reference(x.data, mean, var, np.ones(2),
                                                            np.zeros(2), 1e-5), rtol=1e-10)
    check_layer(layer, x, rng, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
def test_batch_norm_running_stats(momentum, rng):
    layer = nn.BatchNorm2d(3, momentum=momentum)
    mean, var = np.zeros(3), np.ones(3)
    for step in range(1, 5):
        x = (rng.standard_normal((4, 3, 2, 3)) * rng.uniform(0.5, 3, (1, 3, 1, 1))
             + rng.standard_normal((1, 3, 1, 1))).astype(np.float32)
        layer(Tensor(x))
        factor = 1 / step if momentum is None else momentum
        x64 = x.astype(np.float64)
        mean = (1 - factor) * mean + factor * x64.mean(axis=(0, 2, 3))
        var = (1 - factor) * var + factor * x64.var(axis=(0, 2, 3), ddof=1)  # unbiased
        np.testing.assert_allclose(layer.running_mean, mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer.running_var, var, rtol=1e-5, atol=1e-6)
        assert int(layer.num_batches_tracked) == step
        assert layer.running_mean.dtype == np.float32
    layer.eval()
    layer(Tensor(x))
    assert int(layer.num_batches_tracked) == 4
    np.testing.assert_allclose(layer.running_mean, mean, rtol=1e-5, atol=1e-6)


def test_batch_norm_single_value_per_channel_raises():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchNorm2d(2)(Tensor(np.ones((1, 2, 1, 1), dtype=np.float32)))


# ---------------------------------------------------------------------------------------------
# dropout and activations
# ---------------------------------------------------------------------------------------------

def test_dropout_same_mask_gradients(rng):
    layer = nn.Dropout(0.4)
    x = Tensor(rng.uniform(0.5, 1.5, (6, 7)), requires_grad=True)

    def f():
        layer.generator = np.random.default_rng(1234)  # the same mask every call
        return layer(x)

    y = f()
    kept = y.data != 0
    assert 0.2 < 1 - kept.mean() < 0.6
    np.testing.assert_allclose(y.data[kept], x.data[kept] / 0.6, rtol=1e-14)
    y.backward(np.ones(x.shape))
    np.testing.assert_allclose(x.grad.data, kept / 0.6, rtol=1e-14)
    np.testing.assert_array_equal(f().data, y.data)  # same generator state, same mask
    gradcheck(f, [x], rng)


def test_dropout_rate_and_generators(rng):
    x = Tensor(np.ones((200, 100), dtype=np.float32))
    y = nn.Dropout(0.3, generator=np.random.default_rng(0))(x)
    assert y.dtype == np.float32
    assert abs((y.data == 0).mean() - 0.3) < 0.02
    np.testing.assert_allclose(y.data[y.data != 0], 1 / 0.7, rtol=1e-6)
    fastconv.manual_seed(3)
    a = nn.Dropout(0.5)(x).data
    fastconv.manual_seed(3)
    b = nn.Dropout(0.5)(x).data
    c = nn.Dropout(0.5)(x).data
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, c)


def test_dropout_identity_cases(rng):
    x = inputs(rng, 3, 4)
    assert nn.Dropout(0.0)(x) is x
    layer = nn.Dropout(0.7).eval()
    y = layer(x)
    np.testing.assert_array_equal(y.data, x.data)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.data, np.ones((3, 4)))
    x.grad = None
    z = nn.Dropout(1.0)(x)
    np.testing.assert_array_equal(z.data, np.zeros((3, 4)))
    z.sum().backward()
    np.testing.assert_array_equal(x.grad.data, np.zeros((3, 4)))
    with pytest.raises(ValueError):
        nn.Dropout(1.5)


ACTIVATIONS = {
    "relu": (nn.ReLU(), lambda x: np.maximum(x, 0)),
    "leaky_relu": (nn.LeakyReLU(), lambda x: np.where(x > 0, x, 0.01 * x)),
    "leaky_relu_0.2": (nn.LeakyReLU(0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
    "sigmoid": (nn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
    "tanh": (nn.Tanh(), np.tanh),
    "identity": (nn.Identity(), lambda x: x),
}


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_gradients(name, rng):
    layer, reference = ACTIVATIONS[name]
    x = inputs(rng, 2, 3, 4)
    x.data[np.abs(x.data) < 0.05] = 0.1  # away from kinks
    np.testing.assert_allclose(layer(x).data, reference(x.data), rtol=1e-12)
    check_layer(layer, x, rng)


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_gradients(log, dim, rng):
    layer = nn.LogSoftmax(dim) if log else nn.Softmax(dim)
    x = Tensor(rng.standard_normal((3, 4, 2)) * 3, requires_grad=True)
    want = _softmax(x.data, dim)
    np.testing.assert_allclose(layer(x).data, np.log(want) if log else want, rtol=1e-12)
    check_layer(layer, x, rng)


def test_softmax_large_logits_stable():
    x = Tensor(np.array([[1000.0, 0.0, -1000.0]], dtype=np.float32))
    with np.errstate(over="raise", invalid="raise"):
        p = nn.Softmax(dim=1)(x).data
        lp = nn.LogSoftmax(dim=1)(x).data
    np.testing.assert_allclose(p, [[1, 0, 0]], atol=1e-30)
    np.testing.assert_allclose(lp, [[0, -1000, -2000]])


@pytest.mark.parametrize("args,shape", [((), (2, 60)), ((2,), (2, 3, 20)), ((0, 2), (24, 5)),
                                        ((1, 2), (2, 12, 5))], ids=str)
def test_flatten_gradients(args, shape, rng):
    layer = nn.Flatten(*args)
    x = inputs(rng, 2, 3, 4, 5)
    assert layer(x).shape == shape
    np.testing.assert_array_equal(layer(x).data, x.data.reshape(shape))
    check_layer(layer, x, rng)


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------

def cross_entropy_reference(logits, target, reduction, smoothing, ignore_index):
    log_p = logits - logits.max(axis=1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    keep = target != ignore_index
    safe = np.where(keep, target, 0)
    nll = -log_p[np.arange(len(target)), safe]
    per = ((1 - smoothing) * nll - smoothing * log_p.mean(axis=1)) * keep
    if reduction == "none":
        return per
    return per.sum() / keep.sum() if reduction == "mean" else per.sum()


@pytest.mark.parametrize("ignore_index", [-100, 2])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_gradients(reduction, smoothing, ignore_index, rng):
    loss = nn.CrossEntropyLoss(reduction=reduction, label_smoothing=smoothing,
                               ignore_index=ignore_index)
    logits = Tensor(rng.standard_normal((6, 4)) * 2, requires_grad=True)
    target = np.array([0, 2, 3, 1, 2, 3])
    out = loss(logits, target)
    assert out.shape == ((6,) if reduction == "none" else ())
    np.testing.assert_allclose(
        out.data, cross_entropy_reference(logits.data, target, reduction, smoothing,
                                          ignore_index), rtol=1e-12)
    gradcheck(lambda: loss(logits, Tensor(target)), [logits], rng, what=repr(loss))
    if ignore_index == 2:  # ignored rows get no gradient
        np.testing.assert_array_equal(logits.grad.data[target == 2], 0)


def test_cross_entropy_value_and_int_label_types(rng):
    logits = Tensor(np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]])))
    for target in (np.array([0, 2]), np.array([0, 2], dtype=np.int32), Tensor([0, 2]),
                   [0, 2]):
        np.testing.assert_allclose(F.cross_entropy(logits, target).data,
                                   -(np.log(0.5) + np.log(0.8)) / 2, rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_gradients(reduction, rng):
    loss = nn.NLLLoss(reduction=reduction, ignore_index=1)
    log_p = inputs(rng, 5, 3)
    target = np.array([0, 1, 2, 2, 0])
    out = loss(log_p, target)
    per = -log_p.data[np.arange(5), target] * (target != 1)
    want = {"none": per, "sum": per.sum(), "mean": per.sum() / 4}[reduction]
    np.testing.assert_allclose(out.data, want, rtol=1e-12)
    gradcheck(lambda: loss(log_p, target), [log_p], rng)


def test_nll_of_log_softmax_equals_cross_entropy(rng):
    x = inputs(rng, 4, 5)
    target = np.array([4, 0, 1, 4])
    a = nn.NLLLoss()(nn.LogSoftmax(dim=1)(x), target)
    a.backward()
    grad = x.grad.data.copy()
    x.grad = None
    b = nn.CrossEntropyLoss()(x, target)
    b.backward()
    np.testing.assert_allclose(a.data, b.data, rtol=1e-12)
    np.testing.assert_allclose(grad, x.grad.data, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("target_shape", [(4, 3), (3,), (4, 1), ()], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_gradients(reduction, target_shape, rng):
    loss = nn.MSELoss(reduction)
    prediction, target = inputs(rng, 4, 3), inputs(rng, *target_shape)
    out = loss(prediction, target)
    sq = (prediction.data - target.data) ** 2
    want = {"none": sq, "sum": sq.sum(), "mean": sq.mean()}[reduction]
    np.testing.assert_allclose(out.data, want, rtol=1e-12)
    gradcheck(lambda: loss(prediction, target), [prediction, target], rng)


def test_mse_loss_errors():
    with pytest.raises(ValueError, match="broadcast"):
        F.mse_loss(Tensor(np.ones((2, 3))), Tensor(np.ones((2, 2))))
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss("avg")(Tensor(np.ones(2)), Tensor(np.ones(2)))


@pytest.mark.parametrize("loss", [nn.CrossEntropyLoss(), nn.NLLLoss()], ids=repr)
def test_loss_label_errors(loss):
    x = Tensor(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"\[0, 4\).*\[4\]"):
        loss(x, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"\[-1\]"):
        loss(x, np.array([0, -1, 1]))
    with pytest.raises(TypeError, match="integer"):
        loss(x, np.array([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        loss(x, np.array([0, 1]))
    with pytest.raises(ValueError):
        loss(Tensor(np.zeros((3, 4, 2))), np.array([0, 1, 1]))
    loss(x, np.array([0, -100, 3]))  # ignore_index is not out of range


def test_cross_entropy_bad_arguments():
    x, t = Tensor(np.zeros((2, 3))), np.array([0, 1])
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(x, t, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(x, t, label_smoothing=1.5)


# ---------------------------------------------------------------------------------------------
# a small network end to end
# ---------------------------------------------------------------------------------------------

def lenet(dtype=np.float64, dropout=0.0):
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, dtype=dtype), nn.BatchNorm2d(4, dtype=dtype), nn.ReLU(),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4, 5, dtype=dtype), nn.Dropout(dropout),
        nn.Linear(5, 3, dtype=dtype))


def test_network_gradients(rng):
    model = lenet()
    x = Tensor(rng.standard_normal((2, 1, 8, 8)), requires_grad=True)
    target = np.array([2, 0])
    loss = nn.CrossEntropyLoss()
    gradcheck(lambda: loss(model(x), target), [x] + list(model.parameters()), rng,
              rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------------------------------------
# Module behaviour
# ---------------------------------------------------------------------------------------------

LENET_KEYS = ["0.weight", "0.bias", "3.weight", "3.bias", "4.weight", "4.bias",
              "4.running_mean", "4.running_var", "4.num_batches_tracked", "8.weight", "8.bias",
              "10.weight", "10.bias"]


def test_named_parameters_names_and_order():
    model = lenet()
    names = [n for n, _ in model.named_parameters()]
    assert names == [k for k in LENET_KEYS if "running" not in k and "num_batches" not in k]
    params = list(model.parameters())
    assert [p.shape for p in params] == [(3, 1, 3, 3), (3,), (4, 3, 3, 3), (4,), (4,), (4,),
                                         (5, 4), (5,), (3, 5), (3,)]
    assert params[0] is model[0].weight and all(isinstance(p, nn.Parameter) for p in params)
    assert [n for n, _ in model.named_parameters(prefix="net")][0] == "net.0.weight"
    assert list(model.parameters(recurse=False)) == []
    assert [n for n, _ in model[0].named_parameters(recurse=False)] == ["weight", "bias"]
    assert [n for n, _ in model.named_buffers()] == ["4.running_mean", "4.running_var",
                                                     "4.num_batches_tracked"]


def test_nested_names_and_custom_module():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
            self.head = nn.Linear(2, 3)
            self.scale = nn.Parameter(np.ones(1, dtype=np.float32))
            self.blocks = nn.ModuleList([nn.Linear(3, 3), nn.Linear(3, 3, bias=False)])
            self.not_registered = np.zeros(3)

        def forward(self, x):
            return self.head(self.features(x).mean(dim=(2, 3))) * self.scale

    net = Net()
    assert [n for n, _ in net.named_parameters()] == [
        "scale", "features.0.weight", "features.0.bias", "head.weight", "head.bias",
        "blocks.0.weight", "blocks.0.bias", "blocks.1.weight"]
    assert list(net.state_dict()) == [n for n, _ in net.named_parameters()]
    assert [n for n, _ in net.named_children()] == ["features", "head", "blocks"]
    assert list(net.children())[1] is net.head
    assert [n for n, _ in net.named_modules()] == [
        "", "features", "features.0", "features.1", "head", "blocks", "blocks.0", "blocks.1"]
    assert len(list(net.modules())) == 8 and next(net.modules()) is net
    y = net(Tensor(np.ones((2, 1, 4, 4), dtype=np.float32)))
    assert y.shape == (2, 3)
    # re-assigning an attribute replaces the registration
    net.head = nn.Linear(2, 4)
    assert net.head.out_features == 4 and "head.weight" in net.state_dict()
    del net.blocks
    assert [n for n, _ in net.named_children()] == ["features", "head"]
    with pytest.raises(AttributeError):
        net.missing


def test_module_attribute_before_init_raises():
    class Bad(nn.Module):
        def __init__(self):
            self.x = 1

    with pytest.raises(AttributeError, match="super"):
        Bad()


def test_shared_parameters_counted_once():
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    b.weight = a.weight
    model = nn.Sequential(a, b)
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.bias"]
    assert len(list(model.parameters())) == 3
    model.double()
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3)), requires_grad=True)
    # one parameter: its gradient sums both uses
    gradcheck(lambda: model(x), [x] + list(model.parameters()), np.random.default_rng(1))


def test_shared_module_listed_once_but_saved_in_both_places():
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert list(model.modules()) == [model, shared, model[1]]
    assert [n for n, _ in model.named_modules()] == ["", "0", "1"]
    assert [n for n, _ in model.named_children()] == ["0", "1"]
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias"]
    state = model.state_dict()  # as PyTorch: every place the module is registered
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    state = {k: np.full_like(v, 3) for k, v in state.items()}
    assert model.load_state_dict(state) == ([], [])
    np.testing.assert_array_equal(shared.weight.data, 3)


def test_state_dict_copies_and_keys():
    model = lenet(np.float32)
    state = model.state_dict()
    assert list(state) == LENET_KEYS
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert state["4.num_batches_tracked"].shape == () and \
        state["4.num_batches_tracked"].dtype == np.int64
    assert state["0.weight"].dtype == np.float32
    state["0.weight"][...] = 123
    state["4.running_mean"][...] = 7
    assert not np.any(model[0].weight.data == 123)
    assert not np.any(model[4].running_mean == 7)


def test_load_state_dict_round_trip_in_place(rng):
    fastconv.manual_seed(1)
    source = lenet(np.float32)
    source(Tensor(rng.standard_normal((2, 1, 8, 8)).astype(np.float32)))  # move running stats
    fastconv.manual_seed(2)
    target = lenet(np.float32)
    arrays = [p.data for p in target.parameters()]
    params = list(target.parameters())
    result = target.load_state_dict(source.state_dict())
    assert result == ([], [])
    for (k, v), (k2, v2) in zip(source.state_dict().items(), target.state_dict().items()):
        assert k == k2
        np.testing.assert_array_equal(v, v2, err_msg=k)
    assert all(p.data is a for p, a in zip(target.parameters(), arrays))
    assert all(p is q for p, q in zip(target.parameters(), params))
    assert int(target[4].num_batches_tracked) == 1
    x = Tensor(rng.standard_normal((2, 1, 8, 8)).astype(np.float32))
    source.eval(), target.eval()
    np.testing.assert_array_equal(source(x).data, target(x).data)
    # Tensors and float64 arrays load too, cast to the parameter's dtype
    target.load_state_dict({k: Tensor(v.astype(np.float64)) if v.dtype.kind == "f" else v
                            for k, v in source.state_dict().items()})
    assert target[0].weight.dtype == np.float32
    assert target[4].running_mean.dtype == np.float32


def test_load_state_dict_strict_keys():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm2d(3))
    state = model.state_dict()
    del state["0.bias"]
    del state["1.running_var"]
    state["2.weight"] = np.zeros(3)
    before = model.state_dict()
    with pytest.raises(KeyError) as info:
        model.load_state_dict(state)
    message = str(info.value)
    assert "0.bias" in message and "1.running_var" in message and "2.weight" in message
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    state["0.weight"] = np.full((3, 2), 5.0)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert sorted(missing) == ["0.bias", "1.running_var"] and unexpected == ["2.weight"]
    np.testing.assert_array_equal(model[0].weight.data, 5.0)
    np.testing.assert_array_equal(model[0].bias.data, before["0.bias"])


def test_load_state_dict_only_unexpected_keys():
    model = nn.Linear(2, 3)
    state = model.state_dict()
    state["extra.weight"] = np.zeros(1)
    with pytest.raises(KeyError, match="extra.weight"):
        model.load_state_dict(state)
    assert model.load_state_dict(state, strict=False) == ([], ["extra.weight"])


def test_load_state_dict_shape_mismatch_changes_nothing():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm2d(3))
    before = model.state_dict()
    state = {k: np.full_like(v, 9) for k, v in before.items()}
    state["0.weight"] = np.zeros((2, 3))
    state["1.running_mean"] = np.zeros(4)
    with pytest.raises(ValueError) as info:
        model.load_state_dict(state)
    message = str(info.value)
    assert "0.weight" in message and "(3, 2)" in message and "(2, 3)" in message
    assert "1.running_mean" in message and "(4,)" in message
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_train_eval_propagate():
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(), nn.BatchNorm2d(2)))
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    assert model.train() is model
    assert all(m.training for m in model.modules())
    model.train(False)
    assert not model[1][1].training
    model[1].train()
    assert model[1][0].training and not model.training and not model[0].training


def test_zero_grad_both_modes(rng):
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    x = Tensor(rng.standard_normal((4, 3)).astype(np.float32))
    model(x).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and np.any(g.data != 0) for g in grads)
    model.zero_grad(set_to_none=False)
    assert all(p.grad is g for p, g in zip(model.parameters(), grads))
    assert all(np.all(p.grad.data == 0) for p in model.parameters())
    model(x).sum().backward()
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_requires_grad_and_dtype_conversion(rng):
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm2d(2))
    weight = model[0].weight
    assert model.double() is model
    assert model[0].weight is weight and weight.dtype == np.float64
    assert model[1].running_mean.dtype == np.float64
    assert model[1].num_batches_tracked.dtype == np.int64
    model.float()
    assert weight.dtype == np.float32
    model.requires_grad_(False)
    assert not any(p.requires_grad for p in model.parameters())
    y = model[0](Tensor(np.ones((1, 3), dtype=np.float32)))
    assert not y.requires_grad


def test_repr_readable_and_nested():
    model = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(),
                          nn.Sequential(nn.Linear(4, 2, bias=False), nn.Dropout(0.5)))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Conv2d(1, 6, kernel_size=(5, 5), stride=(1, 1))\n"
        "  (1): ReLU()\n"
        "  (2): Sequential(\n"
        "    (0): Linear(in_features=4, out_features=2, bias=False)\n"
        "    (1): Dropout(p=0.5)\n"
        "  )\n"
        ")")
    assert repr(nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2, bias=False)) == \
        "Conv2d(2, 4, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), groups=2, bias=False)"
    assert repr(nn.Conv2d(2, 4, 3, padding="same")) == \
        "Conv2d(2, 4, kernel_size=(3, 3), stride=(1, 1), padding='same')"
    assert repr(nn.ConvTranspose2d(2, 4, 3)) == \
        "ConvTranspose2d(2, 4, kernel_size=(3, 3), stride=(1, 1))"
    assert repr(nn.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=1, groups=2,
                                   bias=False, dilation=2)) == (
        "ConvTranspose2d(2, 4, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), "
        "dilation=(2, 2), output_padding=(1, 1), groups=2, bias=False)")
    assert repr(nn.BatchNorm2d(4)) == \
        "BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
    assert repr(nn.MaxPool2d(2)).startswith("MaxPool2d(kernel_size=2, stride=2")
    assert "Parameter containing" in repr(nn.Linear(1, 1).weight)


def test_sequential_container():
    layers = [nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)]
    model = nn.Sequential(*layers)
    assert len(model) == 3 and list(model) == layers and model[-1] is layers[2]
    head = model[:2]
    assert isinstance(head, nn.Sequential) and list(head) == layers[:2]
    model.append(nn.Sigmoid())
    assert len(model) == 4 and [n for n, _ in model.named_children()][-1] == "3"
    named = nn.Sequential(OrderedDict(fc=nn.Linear(2, 2), act=nn.Tanh()))
    assert list(named.state_dict()) == ["fc.weight", "fc.bias"]
    assert named.fc is named[0]


def test_shape_mismatch_names_layer_and_shapes(rng):
    model = nn.Sequential(nn.Conv2d(1, 16, 5), nn.Flatten(), nn.Linear(400, 120))
    x = Tensor(rng.standard_normal((2, 1, 8, 8)).astype(np.float32))  # 16 * 4 * 4 = 256
    with pytest.raises(ValueError) as info:
        model(x)
    message = str(info.value)
    assert "Linear(in_features=400, out_features=120, bias=True)" in message
    assert "(N, 400)" in message and "(2, 256)" in message
    with pytest.raises(ValueError, match=r"Conv2d\(3, 4.*\(N, 3, H, W\).*\(2, 1, 8, 8\)"):
        nn.Conv2d(3, 4, 3)(x)
    with pytest.raises(ValueError, match=r"Conv2d\(3, 4.*\(8, 8\)"):
        nn.Conv2d(3, 4, 3)(Tensor(np.ones((8, 8), dtype=np.float32)))
    with pytest.raises(ValueError, match=r"ConvTranspose2d\(2, 4.*\(N, 2, H, W\)"):
        nn.ConvTranspose2d(2, 4, 3)(x)
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3.*\(N, 3, H, W\).*\(2, 1, 8, 8\)"):
        nn.BatchNorm2d(3)(x)


def test_constructor_argument_errors():
    with pytest.raises(ValueError, match="groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="groups"):
        nn.ConvTranspose2d(4, 3, 3, groups=2)
    with pytest.raises(ValueError, match="padding_mode"):
        nn.Conv2d(1, 1, 3, padding_mode="reflect")
    with pytest.raises(TypeError):
        nn.Parameter(np.array([1, 2]))


# ---------------------------------------------------------------------------------------------
# initialisation
# ---------------------------------------------------------------------------------------------

def assert_uniform_bound(values, bound, what):
    values = np.asarray(values)
    assert np.all(np.abs(values) <= bound * (1 + 1e-6)), f"{what}: exceeds {bound}"
    # the values fill the range: a too-small bound would fail this
    assert np.abs(values).max() > 0.7 * bound, f"{what}: max {np.abs(values).max()} < {bound}"
    assert abs(values.mean()) < 0.2 * bound, f"{what}: not centred"


INIT_CASES = {
    "conv": (lambda: nn.Conv2d(3, 64, 5), 3 * 25),
    "conv_groups": (lambda: nn.Conv2d(8, 64, 3, groups=4), 2 * 9),
    "conv_transpose": (lambda: nn.ConvTranspose2d(4, 64, 3), 64 * 9),
    "conv_transpose_groups": (lambda: nn.ConvTranspose2d(4, 64, 3, groups=2), 32 * 9),
    "linear": (lambda: nn.Linear(400, 120), 400),
}


@pytest.mark.parametrize("case", sorted(INIT_CASES))
def test_default_init_bounds(case):
    make, fan_in = INIT_CASES[case]
    fastconv.manual_seed(0)
    layer = make()
    assert nn.init.calculate_fan_in_and_fan_out(layer.weight.shape)[0] == fan_in
    bound = 1 / math.sqrt(fan_in)
    assert_uniform_bound(layer.weight.data, bound, "weight")
    assert_uniform_bound(layer.bias.data, bound, "bias")
    assert layer.weight.dtype == np.float32 and layer.weight.requires_grad


def test_batch_norm_init():
    layer = nn.BatchNorm2d(3)
    np.testing.assert_array_equal(layer.weight.data, np.ones(3))
    np.testing.assert_array_equal(layer.bias.data, np.zeros(3))
    np.testing.assert_array_equal(layer.running_mean, np.zeros(3))
    np.testing.assert_array_equal(layer.running_var, np.ones(3))
    assert layer.num_batches_tracked.shape == () and layer.num_batches_tracked == 0


def test_manual_seed_reproducible_init():
    fastconv.manual_seed(42)
    a = lenet(np.float32).state_dict()
    fastconv.manual_seed(42)
    b = lenet(np.float32).state_dict()
    c = lenet(np.float32).state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert not np.array_equal(a["0.weight"], c["0.weight"])
    g1 = nn.Linear(4, 3, generator=np.random.default_rng(5)).weight.data
    fastconv.manual_seed(0)
    g2 = nn.Linear(4, 3, generator=np.random.default_rng(5)).weight.data
    np.testing.assert_array_equal(g1, g2)


def test_init_functions():
    rng = np.random.default_rng(0)
    w = nn.Parameter(np.empty((64, 32, 3, 3), dtype=np.float32))
    nn.init.kaiming_uniform_(w, a=0, nonlinearity="relu", generator=rng)
    assert_uniform_bound(w.data, math.sqrt(2) * math.sqrt(3 / (32 * 9)), "kaiming relu")
    nn.init.kaiming_uniform_(w, mode="fan_out", nonlinearity="relu", generator=rng)
    assert_uniform_bound(w.data, math.sqrt(2) * math.sqrt(3 / (64 * 9)), "kaiming fan_out")
    nn.init.xavier_uniform_(w, generator=rng)
    assert_uniform_bound(w.data, math.sqrt(6 / (32 * 9 + 64 * 9)), "xavier")
    nn.init.kaiming_normal_(w, nonlinearity="relu", generator=rng)
    assert abs(w.data.std() - math.sqrt(2 / (32 * 9))) < 0.02 * math.sqrt(2 / (32 * 9)) * 5
    nn.init.zeros_(w)
    assert np.all(w.data == 0) and w.dtype == np.float32
    nn.init.ones_(w.data)
    assert np.all(w.data == 1)
    assert nn.init.calculate_gain("tanh") == 5 / 3
    assert nn.init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))
    with pytest.raises(ValueError):
        nn.init.calculate_fan_in_and_fan_out((3,))
    with pytest.raises(ValueError):
        nn.init.kaiming_uniform_(w, mode="fan_avg")


def test_replacing_a_child_module_keeps_its_place():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    setattr(model, "1", nn.Tanh())
    assert list(model._modules) == ["0", "1", "2"]
    assert model(Tensor(np.ones((4, 2), np.float32))).shape == (4, 1)
