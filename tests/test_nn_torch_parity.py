"""fastconv.nn against torch.nn (skipped without torch): the same parameters give the same
outputs, input gradients, parameter gradients and running statistics, and state_dicts move
between the two as NumPy arrays."""

import warnings
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastconv  # noqa: E402
from fastconv import Tensor, nn  # noqa: E402

TOLERANCES = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-10)}
TORCH_DTYPES = {np.float32: torch.float32, np.float64: torch.float64}
DTYPES = [np.float32, np.float64]


@pytest.fixture(autouse=True)
def _seed(request):
    """Layer initialisation (the default generator) seeded per test."""
    seed = zlib.crc32(request.node.nodeid.encode())
    fastconv.manual_seed(seed)
    torch.manual_seed(seed)


@pytest.fixture(autouse=True)
def _torch_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def close(ours, theirs, dtype, what):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    ours = ours.data if isinstance(ours, Tensor) else np.asarray(ours)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != torch's {theirs.shape}"
    assert ours.dtype == np.dtype(dtype), f"{what}: dtype {ours.dtype}"
    np.testing.assert_allclose(ours, theirs, err_msg=what, **TOLERANCES[dtype])


def to_torch_state(state):
    return {k: torch.from_numpy(np.array(v)) for k, v in state.items()}


def to_numpy_state(module):
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def same_parameters(ours, theirs, dtype):
    """Both in `dtype`, torch's parameters and buffers copied from ours."""
    ours.to(dtype)
    theirs.to(TORCH_DTYPES[dtype])
    ours_state = ours.state_dict()
    theirs_state = theirs.state_dict()
    assert list(ours_state) == list(theirs_state)
    for k in ours_state:
        assert ours_state[k].shape == tuple(theirs_state[k].shape), k
    theirs.load_state_dict(to_torch_state(ours_state))


def check_parity(ours, theirs, x, dtype, rng, what=""):
    """Forward, input gradient, parameter gradients and state after one pass."""
    same_parameters(ours, theirs, dtype)
    x = x.astype(dtype)
    xo = Tensor(x.copy(), requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    yo, yt = ours(xo), theirs(xt)
    close(yo, yt, dtype, f"{what} output")
    g = rng.standard_normal(yo.shape).astype(dtype)
    yo.backward(g)
    yt.backward(torch.from_numpy(g))
    close(xo.grad, xt.grad, dtype, f"{what} input grad")
    theirs_params = dict(theirs.named_parameters())
    ours_params = dict(ours.named_parameters())
    assert list(ours_params) == list(theirs_params)
    for name, p in ours_params.items():
        close(p.grad, theirs_params[name].grad, dtype, f"{what} grad of {name}")
    theirs_state = theirs.state_dict()
    for name, value in ours.state_dict().items():
        if value.dtype.kind == "f":
            close(value, theirs_state[name], dtype, f"{what} state {name}")
        else:
            assert value == theirs_state[name].item(), name


def both(name, *args, **kwargs):
    return getattr(nn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs)


def distinct(rng, shape):
    n = int(np.prod(shape))
    return rng.permutation(n).reshape(shape) * 0.1 + 0.001 * rng.standard_normal(shape)


LAYERS = {
    "conv": (("Conv2d", 3, 4, 3), {}, (2, 3, 7, 6)),
    "conv_stride_pad_dil": (("Conv2d", 2, 4, (3, 2)), dict(stride=(2, 1), padding=(1, 2),
                                                          dilation=(1, 2)), (2, 2, 9, 8)),
    "conv_same": (("Conv2d", 2, 3, 4), dict(padding="same", dilation=2), (1, 2, 7, 6)),
    "conv_groups_nobias": (("Conv2d", 4, 6, 3), dict(groups=2, bias=False, padding=1),
                           (2, 4, 5, 5)),
    "conv_unbatched": (("Conv2d", 2, 3, 3), dict(padding=1), (2, 5, 4)),
    "conv_t": (("ConvTranspose2d", 3, 2, 3), {}, (2, 3, 4, 5)),
    "conv_t_stride_op": (("ConvTranspose2d", 2, 3, 3), dict(stride=2, padding=1,
                                                           output_padding=1), (2, 2, 4, 3)),
    "conv_t_groups_dil": (("ConvTranspose2d", 4, 6, (2, 3)), dict(groups=2, stride=(1, 2),
                                                                 dilation=2, bias=False),
                          (1, 4, 3, 4)),
    "linear": (("Linear", 6, 4), {}, (5, 6)),
    "linear_3d_nobias": (("Linear", 6, 4), dict(bias=False), (2, 3, 6)),
    "maxpool": (("MaxPool2d", 2), {}, (2, 3, 6, 6)),
    "maxpool_pad_ceil_dil": (("MaxPool2d", 3), dict(stride=2, padding=1, ceil_mode=True,
                                                    dilation=1), (1, 2, 8, 7)),
    "maxpool_dilation": (("MaxPool2d", 2), dict(stride=1, dilation=2), (1, 2, 5, 6)),
    "avgpool": (("AvgPool2d", 2), {}, (2, 3, 6, 6)),
    "avgpool_ceil": (("AvgPool2d", 3), dict(stride=2, padding=1, ceil_mode=True), (1, 2, 6, 7)),
    "avgpool_nopad_count": (("AvgPool2d", 3), dict(stride=2, padding=1,
                                                   count_include_pad=False), (1, 2, 7, 6)),
    "avgpool_ceil_nopad_count": (("AvgPool2d", 2), dict(stride=2, padding=1, ceil_mode=True,
                                                        count_include_pad=False), (1, 2, 5, 4)),
    "avgpool_divisor": (("AvgPool2d", 2), dict(divisor_override=3), (1, 2, 4, 4)),
    "adaptive_divisible": (("AdaptiveAvgPool2d", (2, 3)), {}, (2, 2, 4, 6)),
    "adaptive_7_to_3": (("AdaptiveAvgPool2d", 3), {}, (2, 2, 7, 7)),
    "adaptive_rect": (("AdaptiveAvgPool2d", (3, 2)), {}, (1, 2, 5, 7)),
    "adaptive_1x1": (("AdaptiveAvgPool2d", 1), {}, (2, 3, 5, 4)),
    "adaptive_upsample": (("AdaptiveAvgPool2d", (4, 5)), {}, (1, 1, 3, 2)),
    "bn": (("BatchNorm2d", 3), {}, (4, 3, 3, 2)),
    "bn_no_affine": (("BatchNorm2d", 3), dict(affine=False), (4, 3, 3, 2)),
    "bn_cumulative": (("BatchNorm2d", 3), dict(momentum=None), (4, 3, 3, 2)),
    "bn_no_running": (("BatchNorm2d", 3), dict(track_running_stats=False), (4, 3, 3, 2)),
    "relu": (("ReLU",), {}, (2, 3, 4)),
    "leaky_relu": (("LeakyReLU", 0.1), {}, (2, 3, 4)),
    "sigmoid": (("Sigmoid",), {}, (2, 3, 4)),
    "tanh": (("Tanh",), {}, (2, 3, 4)),
    "softmax": (("Softmax", 1), {}, (2, 5, 3)),
    "softmax_last": (("Softmax", -1), {}, (2, 5, 3)),
    "log_softmax": (("LogSoftmax", 1), {}, (3, 6)),
    "log_softmax_0": (("LogSoftmax", 0), {}, (3, 6, 2)),
    "flatten": (("Flatten",), {}, (2, 3, 4, 5)),
    "flatten_range": (("Flatten", 0, 2), {}, (2, 3, 4, 5)),
    "dropout_p0": (("Dropout", 0.0), {}, (3, 4)),
    "identity": (("Identity",), {}, (3, 4)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", sorted(LAYERS))
def test_layer_parity(case, dtype, rng):
    (name, *args), kwargs, shape = LAYERS[case]
    ours, theirs = both(name, *args, **kwargs)
    x = distinct(rng, shape) if name == "MaxPool2d" else rng.standard_normal(shape) * 2
    check_parity(ours, theirs, x, dtype, rng, case)
    if name == "BatchNorm2d":  # the eval pass with the updated running statistics
        ours.eval(), theirs.eval()
        check_parity(ours, theirs, rng.standard_normal(shape), dtype, rng, case + " eval")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_dropout_eval_parity(dtype, rng):
    ours, theirs = both("Dropout", 0.5)
    ours.eval(), theirs.eval()
    check_parity(ours, theirs, rng.standard_normal((4, 5)), dtype, rng, "dropout eval")


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_batch_norm_running_stats_parity(dtype, momentum, rng):
    ours, theirs = both("BatchNorm2d", 4, momentum=momentum)
    same_parameters(ours, theirs, dtype)
    for step in range(4):
        x = (rng.standard_normal((3, 4, 2, 5)) * (step + 1) + step).astype(dtype)
        close(ours(Tensor(x)), theirs(torch.from_numpy(x)), dtype, f"step {step}")
    theirs_state = theirs.state_dict()
    for name, value in ours.state_dict().items():
        if value.dtype.kind == "f":
            close(value, theirs_state[name], dtype, name)
        else:
            assert int(value) == int(theirs_state[name]) == 4
    ours.eval(), theirs.eval()
    x = rng.standard_normal((2, 4, 3, 3)).astype(dtype)
    close(ours(Tensor(x)), theirs(torch.from_numpy(x)), dtype, "eval")


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------

def check_loss_parity(ours, theirs, logits, target, dtype, rng, what, target_grad=False):
    logits = logits.astype(dtype)
    xo = Tensor(logits.copy(), requires_grad=True)
    xt = torch.tensor(logits, requires_grad=True)
    if target_grad:
        to = Tensor(target.astype(dtype), requires_grad=True)
        tt = torch.tensor(target.astype(dtype), requires_grad=True)
    else:
        to, tt = target, torch.from_numpy(target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about broadcasting MSE targets
        lo, lt = ours(xo, to), theirs(xt, tt)
    close(lo, lt, dtype, f"{what} loss")
    g = rng.standard_normal(lo.shape).astype(dtype)
    lo.backward(g)
    lt.backward(torch.from_numpy(g))
    close(xo.grad, xt.grad, dtype, f"{what} input grad")
    if target_grad:
        close(to.grad, tt.grad, dtype, f"{what} target grad")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("ignore_index", [-100, 1])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.6])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_parity(reduction, smoothing, ignore_index, dtype, rng):
    ours, theirs = both("CrossEntropyLoss", reduction=reduction, label_smoothing=smoothing,
                        ignore_index=ignore_index)
    target = np.array([0, 1, 4, 2, 1, 3, 4])
    check_loss_parity(ours, theirs, rng.standard_normal((7, 5)) * 3, target, dtype, rng,
                      f"cross_entropy {reduction} {smoothing} {ignore_index}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("ignore_index", [-100, 0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_parity(reduction, ignore_index, dtype, rng):
    ours, theirs = both("NLLLoss", reduction=reduction, ignore_index=ignore_index)
    target = np.array([0, 2, 3, 0, 1])
    check_loss_parity(ours, theirs, rng.standard_normal((5, 4)), target, dtype, rng,
                      f"nll {reduction}")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("target_shape", [(4, 3), (3,), (4, 1)], ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_parity(reduction, target_shape, dtype, rng):
    ours, theirs = both("MSELoss", reduction=reduction)
    check_loss_parity(ours, theirs, rng.standard_normal((4, 3)),
                      rng.standard_normal(target_shape), dtype, rng, f"mse {reduction}",
                      target_grad=True)


# ---------------------------------------------------------------------------------------------
# a whole network
# ---------------------------------------------------------------------------------------------

def lenet(module, dropout=0.0):
    return module.Sequential(
        module.Conv2d(1, 6, 5, padding=2), module.ReLU(), module.MaxPool2d(2, 2),
        module.Conv2d(6, 16, 5), module.BatchNorm2d(16), module.ReLU(), module.AvgPool2d(2, 2),
        module.Flatten(), module.Linear(400, 120), module.Dropout(dropout),
        module.Linear(120, 10))


def test_lenet_state_dict_keys_and_shapes_match_torch():
    ours, theirs = lenet(nn).state_dict(), lenet(torch.nn).state_dict()
    assert list(ours) == list(theirs)
    for k in ours:
        assert ours[k].shape == tuple(theirs[k].shape), k
        assert ours[k].dtype == theirs[k].numpy().dtype, k


def lenet_pass(model, x, target, loss):
    out = model(x)
    value = loss(out, target)
    value.backward()
    return out, value


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_lenet_torch_state_dict_into_ours(dtype, rng):
    torch.manual_seed(0)
    theirs = lenet(torch.nn).to(TORCH_DTYPES[dtype])
    ours = lenet(nn).to(dtype)
    fastconv.manual_seed(123)  # ours starts different from torch's
    x = (rng.standard_normal((4, 1, 28, 28))).astype(dtype)
    target = rng.integers(0, 10, 4)
    # a torch train step first, so that the running statistics are not the initial ones
    theirs(torch.from_numpy(x))
    assert ours.load_state_dict(to_numpy_state(theirs)) == ([], [])
    for k, v in to_numpy_state(theirs).items():
        np.testing.assert_array_equal(ours.state_dict()[k], v, err_msg=k)
    # training mode: batch statistics, dropout p=0, gradients of everything
    xo = Tensor(x.copy(), requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    out_o, loss_o = lenet_pass(ours, xo, target, nn.CrossEntropyLoss())
    out_t, loss_t = lenet_pass(theirs, xt, torch.from_numpy(target), torch.nn.CrossEntropyLoss())
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else TOLERANCES[dtype]
    np.testing.assert_allclose(out_o.data, out_t.detach().numpy(), **tol)
    np.testing.assert_allclose(loss_o.data, loss_t.detach().numpy(), **tol)
    np.testing.assert_allclose(xo.grad.data, xt.grad.numpy(), **tol)
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.data, theirs_params[name].grad.numpy(), err_msg=name,
                                   **tol)
    for name, v in to_numpy_state(theirs).items():
        np.testing.assert_allclose(ours.state_dict()[name], v, err_msg=name, **tol)
    # eval mode: running statistics
    ours.eval(), theirs.eval()
    with torch.no_grad():
        want = theirs(torch.from_numpy(x)).numpy()
    with fastconv.no_grad():
        got = ours(Tensor(x)).data
    np.testing.assert_allclose(got, want, **tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_lenet_our_state_dict_into_torch(dtype, rng):
    fastconv.manual_seed(7)
    ours = lenet(nn, dropout=0.5).to(dtype)
    x = rng.standard_normal((3, 1, 28, 28)).astype(dtype)
    ours(Tensor(x))  # train step: running statistics move
    torch.manual_seed(1)
    theirs = lenet(torch.nn, dropout=0.5).to(TORCH_DTYPES[dtype])
    theirs.load_state_dict(to_torch_state(ours.state_dict()))
    for k, v in ours.state_dict().items():
        np.testing.assert_array_equal(theirs.state_dict()[k].numpy(), v, err_msg=k)
    ours.eval(), theirs.eval()
    x = rng.standard_normal((5, 1, 28, 28)).astype(dtype)
    with torch.no_grad():
        want = theirs(torch.from_numpy(x)).numpy()
    got = ours(Tensor(x)).data
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else TOLERANCES[dtype]
    np.testing.assert_allclose(got, want, **tol)


def test_default_init_distribution_matches_torch():
    """Same bounds as torch's default init, 1 / sqrt(fan_in of torch's weight layout): the
    extreme values of ours and of torch's fill the same range."""
    fastconv.manual_seed(0)
    torch.manual_seed(0)
    for make in (lambda m: m.Conv2d(16, 32, 3), lambda m: m.ConvTranspose2d(16, 32, 3),
                 lambda m: m.Linear(300, 200), lambda m: m.ConvTranspose2d(8, 32, 3, groups=4),
                 lambda m: m.Conv2d(8, 32, (3, 2), groups=2)):
        ours, theirs = make(nn), make(torch.nn)
        fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(theirs.weight)
        bound = 1 / np.sqrt(fan_in)
        for name, p in theirs.named_parameters():
            for who, values in (("torch", p.detach().numpy()), ("ours", getattr(ours, name).data)):
                top = np.abs(values).max()
                assert 0.6 * bound < top <= bound * (1 + 1e-6), (make(nn), name, who, top, bound)


REPRS = [("Conv2d", 2, 4, 3), ("Conv2d", 2, 4, (3, 2), dict(stride=2, padding=1, dilation=2,
                                                          groups=2, bias=False)),
         ("ConvTranspose2d", 2, 4, 3),
         ("ConvTranspose2d", 2, 4, 3, dict(stride=2, padding=1, output_padding=1, groups=2,
                                           bias=False, dilation=2)),
         ("Linear", 3, 2), ("Linear", 3, 2, dict(bias=False)), ("MaxPool2d", 2),
         ("MaxPool2d", 3, dict(stride=2, padding=1, ceil_mode=True)), ("AvgPool2d", 2),
         ("AdaptiveAvgPool2d", (2, 3)),
         ("ReLU",), ("LeakyReLU", 0.2), ("Softmax", 1), ("LogSoftmax", 1), ("Flatten",),
         ("Sigmoid",), ("Tanh",), ("MSELoss",), ("NLLLoss",)]


# not compared: padding='same' (torch prints it unquoted), BatchNorm2d (recent torch adds
# "bias=True"), Dropout (torch adds "inplace=False"), losses with arguments
@pytest.mark.parametrize("spec", REPRS, ids=str)
def test_repr_matches_torch(spec):
    kwargs = spec[-1] if isinstance(spec[-1], dict) else {}
    args = spec[1:-1] if kwargs else spec[1:]
    ours, theirs = both(spec[0], *args, **kwargs)
    assert repr(ours) == repr(theirs)


def test_sequential_repr_and_shared_modules_match_torch():
    def build(m):
        shared = m.Linear(3, 3)
        return m.Sequential(shared, m.Sequential(m.ReLU(), shared), m.Conv2d(2, 2, 1))

    ours, theirs = build(nn), build(torch.nn)
    assert repr(ours) == repr(theirs)
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert list(ours.state_dict()) == list(theirs.state_dict())


def test_shared_batch_norm_buffers_match_torch():
    def build(m):
        shared = m.BatchNorm2d(2)
        return m.Sequential(shared, m.ReLU(), shared)

    ours, theirs = build(nn), build(torch.nn)
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert len(list(ours.modules())) == len(list(theirs.modules())) == 3


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_functional_weight_without_bias(training):
    """F.batch_norm with a weight but no bias, as torch allows."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 3, 5, 5))
    w, rm, rv = rng.random(3), rng.random(3), rng.random(3) + 0.5
    ours = fastconv.nn.functional.batch_norm(x, rm.copy(), rv.copy(), w, None,
                                             training=training).numpy()
    theirs = torch.nn.functional.batch_norm(torch.tensor(x), torch.tensor(rm), torch.tensor(rv),
                                            torch.tensor(w), None, training=training).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
