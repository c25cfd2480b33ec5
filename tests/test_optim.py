"""Tests of fastconv.optim: optimizers (SGD, Adam, AdamW) and lr schedulers.

Without torch: hand-computed steps, state handling, state_dict round trips, errors and
closed-form schedules.  With torch (importorskip, used as an oracle only): parameters after
each of several steps, state_dict interchange, and lr / momentum sequences over whole
schedules.
"""

import copy
import math
import warnings

import numpy as np
import pytest

import fastconv
import fastconv.nn as nn
from fastconv import optim
from fastconv.optim import lr_scheduler


# --------------------------------------------------------------------------- helpers
def make_param(values, dtype=np.float32):
    return nn.Parameter(np.array(values, dtype=dtype))


def set_grad(p, values):
    p.grad = fastconv.Tensor(np.array(values, dtype=p.data.dtype))


def step_with(opt, params, grads):
    for p, g in zip(params, grads):
        if g is None:
            p.grad = None
        else:
            set_grad(p, g)
    opt.step()


F64 = np.float64


# --------------------------------------------------------------------------- SGD by hand
def test_sgd_plain_step_in_place():
    p = make_param([1.0, 2.0, -3.0])
    data = p.data
    opt = optim.SGD([p], lr=0.1)
    set_grad(p, [0.5, -1.0, 2.0])
    opt.step()
    assert p.data is data  # updated in place, never rebound
    np.testing.assert_allclose(p.data, [0.95, 2.1, -3.2], rtol=1e-6)
    assert len(opt.state) == 0  # no momentum buffer without momentum


def test_sgd_default_lr_is_1e_3():
    p = make_param([1.0])
    opt = optim.SGD([p])
    assert opt.param_groups[0]["lr"] == 1e-3
    set_grad(p, [1.0])
    opt.step()
    np.testing.assert_allclose(p.data, [1.0 - 1e-3], rtol=1e-7)


@pytest.mark.parametrize("dampening", [0.0, 0.5])
def test_sgd_momentum_dampening(dampening):
    lr, m = 0.1, 0.9
    x = np.array([1.0, -2.0], F64)
    g1 = np.array([0.5, 1.0], F64)
    g2 = np.array([-1.0, 0.25], F64)
    p = make_param(x, F64)
    opt = optim.SGD([p], lr=lr, momentum=m, dampening=dampening)
    step_with(opt, [p], [g1])
    b = g1.copy()  # first step: the buffer is the gradient, undampened
    x1 = x - lr * b
    np.testing.assert_allclose(p.data, x1, rtol=1e-12)
    np.testing.assert_allclose(opt.state[p]["momentum_buffer"], b, rtol=1e-12)
    step_with(opt, [p], [g2])
    b = m * b + (1 - dampening) * g2
    np.testing.assert_allclose(p.data, x1 - lr * b, rtol=1e-12)
    np.testing.assert_allclose(opt.state[p]["momentum_buffer"], b, rtol=1e-12)


def test_sgd_nesterov():
    lr, m = 0.1, 0.9
    x = np.array([1.0, -2.0], F64)
    g1, g2 = np.array([0.5, 1.0]), np.array([-1.0, 0.25])
    p = make_param(x, F64)
    opt = optim.SGD([p], lr=lr, momentum=m, nesterov=True)
    step_with(opt, [p], [g1])
    b = g1
    x1 = x - lr * (g1 + m * b)
    np.testing.assert_allclose(p.data, x1, rtol=1e-12)
    step_with(opt, [p], [g2])
    b = m * b + g2
    np.testing.assert_allclose(p.data, x1 - lr * (g2 + m * b), rtol=1e-12)


def test_sgd_weight_decay_and_maximize():
    x = np.array([1.0, -2.0], F64)
    g = np.array([0.5, 1.0], F64)
    lr, wd = 0.1, 0.01
    p = make_param(x, F64)
    opt = optim.SGD([p], lr=lr, weight_decay=wd)
    step_with(opt, [p], [g])
    np.testing.assert_allclose(p.data, x - lr * (g + wd * x), rtol=1e-12)

    q = make_param(x, F64)
    opt = optim.SGD([q], lr=lr, weight_decay=wd, maximize=True)
    step_with(opt, [q], [g])
    np.testing.assert_allclose(q.data, x - lr * (-g + wd * x), rtol=1e-12)

    r = make_param(x, F64)
    opt = optim.SGD([r], lr=lr, momentum=0.5, maximize=True)
    step_with(opt, [r], [g])
    step_with(opt, [r], [g])
    x1 = x + lr * g
    np.testing.assert_allclose(r.data, x1 + lr * (0.5 * g + g), rtol=1e-12)


# --------------------------------------------------------------------------- SGD fused kernel
SGD_OPTIONS = [dict(), dict(momentum=0.9), dict(momentum=0.9, nesterov=True),
               dict(momentum=0.8, dampening=0.3), dict(weight_decay=0.01),
               dict(momentum=0.9, weight_decay=0.01, maximize=True), dict(maximize=True),
               dict(momentum=0.5, nesterov=True, weight_decay=0.1, maximize=True)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("options", SGD_OPTIONS, ids=lambda o: ",".join(o) or "plain")
def test_sgd_fused_kernel_equals_the_numpy_path(options, dtype, monkeypatch):
    """SGD.step takes kernels.sgd_update_many where the arrays allow; it must give the bits of
    the NumPy code it replaces, over several steps, on a size spanning several threaded blocks
    and, beside it, parameters of a few elements in the same call."""
    rng = np.random.default_rng(3)
    sizes = [100_003, 1, 7, 32_768]
    xs = [rng.standard_normal(n).astype(dtype) for n in sizes]
    grads = [[rng.standard_normal(n).astype(dtype) for n in sizes] for _ in range(3)]
    grads[1][0][:3] = [np.inf, -np.inf, np.nan]
    results = []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(optim.SGD, "_fusable", staticmethod(lambda *args: False))
        params = [make_param(x, dtype) for x in xs]
        opt = optim.SGD(params, lr=0.05, **options)
        with np.errstate(invalid="ignore", over="ignore"):  # the inf and NaN entries
            for g in grads:
                step_with(opt, params, g)
        results.append([(p.data.copy(), opt.state[p].get("momentum_buffer")) for p in params])
    for (fused_p, fused_buf), (numpy_p, numpy_buf) in zip(*results):
        np.testing.assert_array_equal(fused_p, numpy_p)
        if options.get("momentum"):
            np.testing.assert_array_equal(fused_buf, numpy_buf)


def test_sgd_update_kernel_errors():
    from fastconv import kernels
    p = np.zeros(4, np.float32)
    g = np.ones(4, np.float32)
    kernels.sgd_update(p, g, lr=0.5)
    np.testing.assert_array_equal(p, np.full(4, -0.5, np.float32))
    with pytest.raises(ValueError, match="momentum_buffer: required when momentum != 0"):
        kernels.sgd_update(p, g, None, lr=0.1, momentum=0.9)
    with pytest.raises(TypeError, match="grad: dtype float64 differs from param's"):
        kernels.sgd_update(p, g.astype(np.float64), lr=0.1)
    with pytest.raises(ValueError, match=r"grad: expected shape \(4,\)"):
        kernels.sgd_update(p, g[:3], lr=0.1)
    with pytest.raises(ValueError, match="param: must be a C-contiguous, writeable array"):
        kernels.sgd_update(np.zeros(8, np.float32)[::2], g, lr=0.1)
    with pytest.raises(ValueError, match="must not share memory"):
        kernels.sgd_update(p, p, lr=0.1)
    with pytest.raises(TypeError, match="momentum_buffer: expected a numpy.ndarray"):
        kernels.sgd_update(p, g, [0.0] * 4, lr=0.1, momentum=0.9)


@pytest.mark.parametrize("options", SGD_OPTIONS, ids=lambda o: ",".join(o) or "plain")
def test_sgd_update_many_equals_sgd_update_per_param(options):
    from fastconv import kernels
    rng = np.random.default_rng(5)
    shapes = [(3, 5), (1,), (40_000,), (2, 3, 4, 5), (0,)]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads[0] = np.asfortranarray(grads[0])  # a non-contiguous gradient is copied
    momentum = options.get("momentum", 0)
    for first in (True, False):
        buffers = [rng.standard_normal(s).astype(np.float32) for s in shapes] if momentum else None
        expected = [p.copy() for p in params]
        expected_buffers = None if buffers is None else [b.copy() for b in buffers]
        for i in range(len(shapes)):
            kernels.sgd_update(expected[i], grads[i],
                               None if buffers is None else expected_buffers[i], lr=0.05,
                               first_step=first, **options)
        kernels.sgd_update_many(params, grads, buffers, lr=0.05, first_step=first, **options)
        for i in range(len(shapes)):
            np.testing.assert_array_equal(params[i], expected[i])
            if buffers is not None:
                np.testing.assert_array_equal(buffers[i], expected_buffers[i])


def test_sgd_update_many_errors():
    from fastconv import kernels
    p = [np.zeros(4, np.float32), np.zeros(3, np.float32)]
    g = [np.ones(4, np.float32), np.ones(3, np.float32)]
    with pytest.raises(ValueError, match="grads: expected 2 arrays"):
        kernels.sgd_update_many(p, g[:1], lr=0.1)
    with pytest.raises(ValueError, match="momentum_buffers: required when momentum != 0"):
        kernels.sgd_update_many(p, g, lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="momentum_buffers: expected 2 arrays"):
        kernels.sgd_update_many(p, g, [np.zeros(4, np.float32)], lr=0.1, momentum=0.9)
    with pytest.raises(TypeError, match=r"params\[1\]: dtype float64 differs from params\[0\]'s"):
        kernels.sgd_update_many([p[0], np.zeros(3)], [g[0], np.ones(3)], lr=0.1)
    with pytest.raises(ValueError, match=r"grads\[1\]: expected shape \(3,\) and dtype float32"):
        kernels.sgd_update_many(p, [g[0], np.ones(4, np.float32)], lr=0.1)
    with pytest.raises(TypeError, match=r"grads\[0\]: expected a numpy.ndarray"):
        kernels.sgd_update_many(p, [[1.0] * 4, g[1]], lr=0.1)
    with pytest.raises(ValueError, match=r"params\[0\]: must be a C-contiguous, writeable"):
        kernels.sgd_update_many([np.zeros(8, np.float32)[::2]], [g[0]], lr=0.1)
    with pytest.raises(ValueError, match=r"momentum_buffers\[1\]: expected shape \(3,\)"):
        kernels.sgd_update_many(p, g, [np.zeros(4, np.float32)] * 2, lr=0.1, momentum=0.9)
    np.testing.assert_array_equal(p[0], 0)  # nothing was updated by the calls that raised
    kernels.sgd_update_many(p, [g[0], g[1]], lr=0.5)
    np.testing.assert_array_equal(p[1], np.full(3, -0.5, np.float32))
    kernels.sgd_update_many([], [], lr=0.5)  # nothing to do


def test_sgd_update_many_rejects_arrays_that_overlap():
    """Views of one buffer at random places: the call must raise, before updating anything,
    exactly when an array written (a param or a buffer) overlaps another array of the call;
    gradients may overlap each other (they are only read)."""
    from fastconv import kernels
    rng = np.random.default_rng(11)
    raised = passed = 0
    for trial in range(300):
        base = np.zeros(64, np.float32)
        count = int(rng.integers(1, 4))
        with_buffers = bool(rng.integers(0, 2))
        sizes = rng.integers(0, 9, count)
        ranges = []  # (begin, end, written)
        views = {"params": [], "grads": [], "buffers": []}
        for n in sizes:
            for kind in ("params", "grads") + (("buffers",) if with_buffers else ()):
                begin = int(rng.integers(0, 64 - n + 1))
                views[kind].append(base[begin:begin + n])
                ranges.append((begin, begin + n, kind != "grads"))
        overlap = any(a[2] or b[2] for i, a in enumerate(ranges) for b in ranges[i + 1:]
                      if a[0] < b[1] and b[0] < a[1] and a[0] < a[1] and b[0] < b[1])
        base[:] = rng.standard_normal(64)
        before = base.copy()
        call = lambda: kernels.sgd_update_many(  # noqa: E731
            views["params"], views["grads"], views["buffers"] if with_buffers else None,
            lr=0.5, momentum=0.9 if with_buffers else 0.0)
        if overlap:
            with pytest.raises(ValueError, match="shares memory with an array of the call"):
                call()
            np.testing.assert_array_equal(base, before)
            raised += 1
        else:
            call()
            passed += 1
    assert raised > 50 and passed > 50


# --------------------------------------------------------------------------- Adam by hand
def adam_reference(x, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                   amsgrad=False, maximize=False, decoupled=False):
    """Adam in float64, written from the paper's formulas with PyTorch's conventions."""
    b1, b2 = betas
    x = np.array(x, F64)
    m = np.zeros_like(x)
    v = np.zeros_like(x)
    vmax = np.zeros_like(x)
    out = []
    for t, g in enumerate(grads, 1):
        g = -np.asarray(g, F64) if maximize else np.asarray(g, F64)
        if weight_decay:
            if decoupled:
                x = x * (1 - lr * weight_decay)
            else:
                g = g + weight_decay * x
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = np.maximum(vmax, v)
        vv = vmax if amsgrad else v
        mhat = m / (1 - b1 ** t)
        denom = np.sqrt(vv) / math.sqrt(1 - b2 ** t) + eps
        x = x - lr * mhat / denom
        out.append(x.copy())
    return out


def test_adam_first_step_is_lr_times_sign():
    p = make_param([1.0, -2.0, 3.0], F64)
    opt = optim.Adam([p], lr=0.01)
    set_grad(p, [0.3, -4.0, 1e-3])
    opt.step()
    # bias-corrected m/sqrt(v) = g/|g| on step 1 (up to eps)
    np.testing.assert_allclose(p.data, [0.99, -1.99, 2.99], rtol=0, atol=1e-7)
    st = opt.state[p]
    assert st["step"] == 1
    np.testing.assert_allclose(st["exp_avg"], 0.1 * np.array([0.3, -4.0, 1e-3]), rtol=1e-12)
    np.testing.assert_allclose(st["exp_avg_sq"], 0.001 * np.array([0.3, -4.0, 1e-3]) ** 2,
                               rtol=1e-12)
    assert "max_exp_avg_sq" not in st


@pytest.mark.parametrize("kw", [
    dict(lr=0.05),
    dict(lr=0.05, betas=(0.5, 0.9), eps=1e-3),
    dict(lr=0.05, weight_decay=0.1),
    dict(lr=0.05, maximize=True),
    dict(lr=0.05, amsgrad=True),
    dict(lr=0.05, amsgrad=True, weight_decay=0.1, maximize=True),
])
def test_adam_steps_against_reference(kw):
    x = np.array([1.0, -2.0, 0.5], F64)
    # a large gradient then small ones: v decays, so amsgrad's max matters
    grads = [[3.0, -2.0, 1.0], [0.1, 0.2, -0.1], [0.05, -0.3, 0.2]]
    p = make_param(x, F64)
    opt = optim.Adam([p], **kw)
    for g, expect in zip(grads, adam_reference(x, grads, **kw)):
        step_with(opt, [p], [g])
        np.testing.assert_allclose(p.data, expect, rtol=1e-12, atol=1e-14)
    if kw.get("amsgrad"):
        st = opt.state[p]
        assert np.all(st["max_exp_avg_sq"] >= st["exp_avg_sq"])
        assert np.any(st["max_exp_avg_sq"] > st["exp_avg_sq"])


def test_amsgrad_differs_from_adam():
    x = np.array([1.0, -2.0], F64)
    grads = [[3.0, -2.0], [0.1, 0.2], [0.05, -0.3]]
    finals = []
    for ams in (False, True):
        p = make_param(x, F64)
        opt = optim.Adam([p], lr=0.05, amsgrad=ams)
        for g in grads:
            step_with(opt, [p], [g])
        finals.append(p.data.copy())
    assert not np.allclose(finals[0], finals[1], rtol=1e-6)


@pytest.mark.parametrize("kw", [dict(), dict(weight_decay=0.3, amsgrad=True),
                                dict(weight_decay=0.3, maximize=True)])
def test_adamw_decoupled_decay(kw):
    x = np.array([1.0, -2.0, 0.5], F64)
    grads = [[3.0, -2.0, 1.0], [0.1, 0.2, -0.1]]
    p = make_param(x, F64)
    opt = optim.AdamW([p], lr=0.05, **kw)
    assert opt.param_groups[0]["weight_decay"] == kw.get("weight_decay", 1e-2)
    ref = adam_reference(x, grads, lr=0.05, decoupled=True,
                         **{"weight_decay": 1e-2, **kw})
    for g, expect in zip(grads, ref):
        step_with(opt, [p], [g])
        np.testing.assert_allclose(p.data, expect, rtol=1e-12, atol=1e-14)
    # decoupled decay is not the L2 penalty of Adam
    q = make_param(x, F64)
    opt = optim.Adam([q], lr=0.05, weight_decay=0.3)
    for g in grads:
        step_with(opt, [q], [g])
    if kw.get("weight_decay"):
        assert not np.allclose(p.data, q.data, rtol=1e-6)


# --------------------------------------------------------------------------- common behaviour
ALL_OPTS = [
    (optim.SGD, dict(lr=0.1)),
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (optim.Adam, dict(lr=0.1, amsgrad=True, weight_decay=0.01)),
    (optim.AdamW, dict(lr=0.1)),
]


@pytest.mark.parametrize("cls,kw", ALL_OPTS)
def test_zero_grad(cls, kw):
    a, b = make_param([1.0, 2.0]), make_param([[3.0]])
    opt = cls([a, b], **kw)
    set_grad(a, [1.0, 1.0])
    set_grad(b, [[2.0]])
    garr = a.grad.data
    opt.zero_grad(set_to_none=False)
    assert a.grad is not None and a.grad.data is garr
    assert np.all(a.grad.data == 0) and np.all(b.grad.data == 0)
    opt.zero_grad()
    assert a.grad is None and b.grad is None
    opt.zero_grad(set_to_none=False)  # grads already None: stay None
    assert a.grad is None


@pytest.mark.parametrize("cls,kw", ALL_OPTS)
def test_grad_none_is_skipped(cls, kw):
    a, b = make_param([1.0, 2.0]), make_param([3.0, 4.0])
    opt = cls([a, b], **kw)
    for _ in range(3):
        step_with(opt, [a, b], [[0.5, -0.5], None])
    np.testing.assert_array_equal(b.data, [3.0, 4.0])
    assert b not in opt.state or opt.state[b] == {}
    assert not np.array_equal(a.data, [1.0, 2.0])


@pytest.mark.parametrize("cls,kw", ALL_OPTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(cls, kw, dtype):
    p = make_param(np.linspace(-1, 1, 6).reshape(2, 3), dtype)
    data = p.data
    opt = cls([p], **kw)
    for i in range(3):
        step_with(opt, [p], [np.full((2, 3), 0.1 * (i + 1))])
    assert p.data is data and p.data.dtype == dtype
    for v in opt.state[p].values():
        if isinstance(v, np.ndarray):
            assert v.dtype == dtype and v.shape == (2, 3)


def test_param_groups_with_different_lr():
    a, b, c = make_param([1.0], F64), make_param([1.0], F64), make_param([1.0], F64)
    opt = optim.SGD([{"params": [a]}, {"params": [b, c], "lr": 0.5, "momentum": 0.9}], lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert opt.param_groups[0]["momentum"] == 0 and opt.param_groups[1]["momentum"] == 0.9
    step_with(opt, [a, b, c], [[1.0], [1.0], [2.0]])
    np.testing.assert_allclose([a.data[0], b.data[0], c.data[0]], [0.9, 0.5, 0.0], rtol=1e-12)
    step_with(opt, [a, b, c], [[1.0], [1.0], [2.0]])
    # group 1 has momentum: buffer 0.9*1 + 1 = 1.9 (b), 0.9*2 + 2 = 3.8 (c)
    np.testing.assert_allclose([a.data[0], b.data[0], c.data[0]],
                               [0.8, 0.5 - 0.5 * 1.9, 0.0 - 0.5 * 3.8], rtol=1e-12)
    # add_param_group
    d = make_param([0.0], F64)
    opt.add_param_group({"params": d, "lr": 2.0})
    step_with(opt, [d], [[1.0]])
    np.testing.assert_allclose(d.data, [-2.0])


def test_step_closure_returns_loss():
    p = make_param([1.0])
    opt = optim.SGD([p], lr=0.1)
    calls = []

    def closure():
        calls.append(1)
        set_grad(p, [1.0])
        return 42.0

    assert opt.step(closure) == 42.0 and calls == [1]
    np.testing.assert_allclose(p.data, [0.9], rtol=1e-6)


# --------------------------------------------------------------------------- state_dict
def _run_steps(opt, params, grads_seq):
    for grads in grads_seq:
        step_with(opt, params, grads)


def _grad_seq(rng, shapes, n, dtype=np.float32):
    return [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(n)]


SD_OPTS = [
    (optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.1)),
    (optim.Adam, dict(lr=0.01, amsgrad=True)),
    (optim.AdamW, dict(lr=0.01, weight_decay=0.1)),
]


@pytest.mark.parametrize("cls,kw", SD_OPTS)
def test_state_dict_round_trip(cls, kw):
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (5,), (2,)]
    init = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    params = [nn.Parameter(x.copy()) for x in init]
    opt = cls([{"params": params[:2]}, {"params": params[2:], "lr": 0.2}], **kw)
    _run_steps(opt, params, _grad_seq(rng, shapes, 3))
    sd = opt.state_dict()

    # PyTorch's layout: consecutive indices across groups, options plus 'params'
    assert sorted(sd) == ["param_groups", "state"]
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2]]
    assert sd["param_groups"][1]["lr"] == 0.2
    assert sorted(sd["state"]) == [0, 1, 2]
    if cls is optim.SGD:
        assert sorted(sd["state"][0]) == ["momentum_buffer"]
    else:
        want = ["exp_avg", "exp_avg_sq", "step"] + (["max_exp_avg_sq"] if kw.get("amsgrad")
                                                    else [])
        assert sorted(sd["state"][0]) == sorted(want)
        assert sd["state"][0]["step"] == 3

    # state_dict() returns copies: continuing to train does not change it
    frozen = copy.deepcopy(sd)
    clones = [nn.Parameter(p.data.copy()) for p in params]
    more = _grad_seq(rng, shapes, 3)
    _run_steps(opt, params, more)
    for k in frozen["state"]:
        for name, v in frozen["state"][k].items():
            np.testing.assert_array_equal(sd["state"][k][name], v)

    opt2 = cls([{"params": clones[:2]}, {"params": clones[2:]}], **kw)
    opt2.load_state_dict(sd)
    assert opt2.param_groups[1]["lr"] == 0.2  # options come from the state dict
    # loaded arrays are copies of the caller's
    for k, p in enumerate(clones):
        for name, v in opt2.state[p].items():
            if isinstance(v, np.ndarray):
                assert not np.shares_memory(v, sd["state"][k][name])
    _run_steps(opt2, clones, more)
    for p, q in zip(params, clones):
        np.testing.assert_array_equal(p.data, q.data)


def test_load_state_dict_errors():
    a, b = make_param([1.0, 2.0]), make_param([3.0])
    opt = optim.SGD([a, b], lr=0.1, momentum=0.9)
    step_with(opt, [a, b], [[1.0, 1.0], [1.0]])
    sd = opt.state_dict()

    other = optim.SGD([{"params": [make_param([1.0, 2.0])]}, {"params": [make_param([3.0])]}],
                      lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="number of parameter groups"):
        other.load_state_dict(sd)
    fewer = optim.SGD([make_param([1.0, 2.0])], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="parameter group 0 has 2 parameters"):
        fewer.load_state_dict(sd)
    swapped = optim.SGD([make_param([3.0]), make_param([1.0, 2.0])], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="shape"):
        swapped.load_state_dict(sd)
    bad = copy.deepcopy(sd)
    bad["state"][7] = bad["state"].pop(0)
    fresh = optim.SGD([make_param([1.0, 2.0]), make_param([3.0])], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="index 7"):
        fresh.load_state_dict(bad)
    with pytest.raises(ValueError, match="param_groups"):
        fresh.load_state_dict({"state": {}})
    adam = optim.Adam([make_param([1.0, 2.0]), make_param([3.0])])
    with pytest.raises(ValueError, match="lacks"):
        adam.load_state_dict(sd)  # SGD state has no exp_avg
    # a failed load leaves the optimizer as it was
    assert len(fresh.state) == 0 and fresh.param_groups[0]["lr"] == 0.1


# --------------------------------------------------------------------------- errors
def _p():
    return [make_param([1.0])]


@pytest.mark.parametrize("make,match", [
    (lambda: optim.SGD(_p(), lr=-0.1), r"\blr\b"),
    (lambda: optim.SGD(_p(), lr=float("nan")), r"\blr\b"),
    (lambda: optim.SGD(_p(), momentum=-0.5), "momentum"),
    (lambda: optim.SGD(_p(), weight_decay=-1.0), "weight_decay"),
    (lambda: optim.SGD(_p(), nesterov=True), "nesterov"),
    (lambda: optim.SGD(_p(), momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    (lambda: optim.SGD([{"params": _p(), "lr": -1.0}], lr=0.1), r"\blr\b"),
    (lambda: optim.Adam(_p(), lr=-1e-3), r"\blr\b"),
    (lambda: optim.Adam(_p(), betas=(1.0, 0.999)), r"betas\[0\]"),
    (lambda: optim.Adam(_p(), betas=(-0.1, 0.999)), r"betas\[0\]"),
    (lambda: optim.Adam(_p(), betas=(0.9, 1.0)), r"betas\[1\]"),
    (lambda: optim.AdamW(_p(), betas=(0.9, 1.5)), r"betas\[1\]"),
    (lambda: optim.Adam(_p(), eps=-1e-8), "eps"),
    (lambda: optim.Adam(_p(), weight_decay=-0.1), "weight_decay"),
    (lambda: optim.Adam([{"params": _p(), "betas": (0.9, 1.0)}]), r"betas\[1\]"),
    (lambda: optim.SGD([]), "params"),
    (lambda: optim.Adam(iter([])), "params"),
])
def test_bad_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_parameter_in_two_groups():
    p, q = make_param([1.0]), make_param([2.0])
    with pytest.raises(ValueError, match="params.*more than one parameter group"):
        optim.SGD([{"params": [p, q]}, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="params"):
        optim.SGD([p, p], lr=0.1)
    opt = optim.Adam([p])
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [q, p]})
    assert len(opt.param_groups) == 1


def test_bad_params_types():
    p = make_param([1.0])
    with pytest.raises(TypeError):
        optim.SGD(p, lr=0.1)  # a parameter, not an iterable of them
    with pytest.raises(TypeError):
        optim.SGD([np.zeros(3, np.float32)], lr=0.1)  # arrays are not parameters
    with pytest.raises(TypeError):
        optim.SGD([{"params": {p}}], lr=0.1)  # a set has no stable order


# --------------------------------------------------------------------------- schedulers
def _lrs(sched, opt, n):
    out = [sched.get_last_lr()[0]]
    for _ in range(n):
        opt.step()
        sched.step()
        out.append(sched.get_last_lr()[0])
        assert opt.param_groups[0]["lr"] == out[-1]
    return out


def test_step_every():
    assert lr_scheduler.StepLR.step_every == "epoch"
    assert lr_scheduler.CosineAnnealingLR.step_every == "epoch"
    assert lr_scheduler.OneCycleLR.step_every == "batch"
    assert lr_scheduler.LRScheduler.step_every == "epoch"


def test_steplr_closed_form():
    opt = optim.SGD(_p(), lr=0.5)
    s = lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    assert s.last_epoch == 0 and s.base_lrs == [0.5]
    got = _lrs(s, opt, 12)
    np.testing.assert_allclose(got, [0.5 * 0.5 ** (e // 3) for e in range(13)], rtol=1e-15)
    assert s.last_epoch == 12
    assert opt.param_groups[0]["initial_lr"] == 0.5


def test_steplr_two_groups():
    opt = optim.SGD([{"params": _p(), "lr": 1.0}, {"params": _p(), "lr": 0.1}])
    s = lr_scheduler.StepLR(opt, step_size=2)
    for _ in range(4):
        opt.step()
        s.step()
    np.testing.assert_allclose(s.get_last_lr(), [1.0 * 0.01, 0.1 * 0.01], rtol=1e-14)


@pytest.mark.parametrize("eta_min", [0.0, 0.05])
def test_cosine_closed_form_past_t_max(eta_min):
    T, base = 6, 0.5
    opt = optim.SGD(_p(), lr=base)
    s = lr_scheduler.CosineAnnealingLR(opt, T_max=T, eta_min=eta_min)
    got = _lrs(s, opt, 3 * T + 2)
    want = [eta_min + (base - eta_min) * (1 + math.cos(math.pi * e / T)) / 2
            for e in range(3 * T + 3)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert got[T] == pytest.approx(eta_min, abs=1e-15)
    assert got[2 * T] == pytest.approx(base)  # climbs back up: no clamping at T_max


def _onecycle_reference(n, total, max_lr, pct, div, fdiv, strategy, three, bm, mm):
    init = max_lr / div
    low = init / fdiv
    if strategy == "cos":
        ann = lambda a, b, t: b + (a - b) / 2 * (math.cos(math.pi * t) + 1)  # noqa: E731
    else:
        ann = lambda a, b, t: a + (b - a) * t  # noqa: E731
    e1 = pct * total - 1
    if three:
        phases = [(e1, init, max_lr, mm, bm), (2 * pct * total - 2, max_lr, init, bm, mm),
                  (total - 1, init, low, mm, mm)]
    else:
        phases = [(e1, init, max_lr, mm, bm), (total - 1, max_lr, low, bm, mm)]
    out = []
    for k in range(n + 1):
        start = 0.0
        for i, (end, l0, l1, m0, m1) in enumerate(phases):
            if k <= end or i == len(phases) - 1:
                t = (k - start) / (end - start)
                out.append((ann(l0, l1, t), ann(m0, m1, t)))
                break
            start = end
    return out


@pytest.mark.parametrize("strategy", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("opt_cls", [optim.SGD, optim.Adam])
def test_onecycle_closed_form(strategy, three_phase, opt_cls):
    total = 20
    opt = opt_cls(_p(), lr=123.0)
    s = lr_scheduler.OneCycleLR(opt, max_lr=0.4, total_steps=total, anneal_strategy=strategy,
                                three_phase=three_phase, pct_start=0.25)
    # construction sets the initial lr and momentum
    assert opt.param_groups[0]["lr"] == pytest.approx(0.4 / 25)

    def mom():
        g = opt.param_groups[0]
        return g["betas"][0] if opt_cls is optim.Adam else g["momentum"]

    got = [(s.get_last_lr()[0], mom())]
    for _ in range(total):
        opt.step()
        s.step()
        got.append((s.get_last_lr()[0], mom()))
    want = _onecycle_reference(total, total, 0.4, 0.25, 25.0, 1e4, strategy, three_phase,
                               0.85, 0.95)
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-12, atol=1e-15)
    assert max(g[0] for g in got) == pytest.approx(0.4)
    if opt_cls is optim.Adam:
        assert opt.param_groups[0]["betas"][1] == 0.999
    with pytest.raises(ValueError, match="Tried to step 21 times"):
        s.step()


def test_onecycle_epochs_times_steps():
    opt = optim.SGD(_p(), lr=0.1, momentum=0.9)
    s = lr_scheduler.OneCycleLR(opt, max_lr=1.0, epochs=3, steps_per_epoch=4)
    assert s.total_steps == 12


def test_scheduler_errors():
    opt = optim.SGD(_p(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="step_size"):
        lr_scheduler.StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="T_max"):
        lr_scheduler.CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(ValueError, match="total_steps"):
        lr_scheduler.OneCycleLR(opt, max_lr=0.1)
    with pytest.raises(ValueError, match="total_steps"):
        lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=-3)
    with pytest.raises(ValueError, match="pct_start"):
        lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10, pct_start=1.5)
    with pytest.raises(ValueError, match="anneal_strategy"):
        lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10, anneal_strategy="exp")
    with pytest.raises(ValueError, match="max_lr"):
        lr_scheduler.OneCycleLR(opt, max_lr=[0.1, 0.2], total_steps=10)
    with pytest.raises(TypeError):
        lr_scheduler.StepLR(object(), step_size=1)

    class Plain(optim.Optimizer):
        def __init__(self, params):
            super().__init__(params, dict(lr=0.1))

    with pytest.raises(ValueError, match="momentum"):
        lr_scheduler.OneCycleLR(Plain(_p()), max_lr=0.1, total_steps=10)
    lr_scheduler.OneCycleLR(Plain(_p()), max_lr=0.1, total_steps=10, cycle_momentum=False)


def test_scheduler_state_dict_round_trip():
    def make():
        opt = optim.SGD(_p(), lr=0.5, momentum=0.9)
        return opt, lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=30)

    opt, s = make()
    for _ in range(7):
        opt.step()
        s.step()
    sd = s.state_dict()
    osd = opt.state_dict()
    assert "optimizer" not in sd and sd["last_epoch"] == 7
    opt2, s2 = make()
    opt2.load_state_dict(osd)
    s2.load_state_dict(sd)
    for _ in range(10):
        opt.step()
        s.step()
        opt2.step()
        s2.step()
        assert s2.get_last_lr() == s.get_last_lr()
        assert opt2.param_groups[0]["momentum"] == opt.param_groups[0]["momentum"]


# =========================================================================== PyTorch parity
def _torch():
    return pytest.importorskip("torch")


def _to_numpy(obj):
    torch = _torch()
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy().copy()
    if isinstance(obj, dict):
        return {k: _to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_numpy(v) for v in obj]
    return obj


def _to_torch(obj):
    torch = _torch()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, dict):
        return {k: _to_torch(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_torch(v) for v in obj]
    return obj


TORCH_TOL = dict(rtol=1e-5, atol=1e-6)
SHAPES = [(4, 3, 3, 3), (4,), (10, 7)]


def _pair(cls_name, kw, groups, rng, dtype=np.float32):
    """Identical parameters (and groups) for ours and torch's optimizer ``cls_name``."""
    torch = _torch()
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    ours = [nn.Parameter(x.copy()) for x in init]
    theirs = [torch.nn.Parameter(torch.from_numpy(x.copy())) for x in init]

    def grouped(ps):
        if not groups:
            return ps
        return [{"params": ps[:2]}, {"params": ps[2:], "lr": kw.get("lr", 1e-3) * 3}]

    o = getattr(optim, cls_name)(grouped(ours), **kw)
    t = getattr(torch.optim, cls_name)(grouped(theirs), foreach=False, **kw)
    return ours, theirs, o, t


def _step_both(ours, theirs, o, t, rng, n, dtype=np.float32, skip=None):
    torch = _torch()
    for i in range(n):
        for j, (p, tp) in enumerate(zip(ours, theirs)):
            if skip is not None and (i, j) in skip:
                p.grad = None
                tp.grad = None
                continue
            g = rng.standard_normal(p.data.shape).astype(dtype)
            set_grad(p, g)
            tp.grad = torch.from_numpy(g.copy())
        o.step()
        t.step()
        for p, tp in zip(ours, theirs):
            np.testing.assert_allclose(p.data, tp.detach().numpy(), **TORCH_TOL,
                                       err_msg=f"after step {i + 1}")


PARITY = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, maximize=True)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, betas=(0.3, 0.8), eps=1e-4, amsgrad=True, weight_decay=0.05,
                  maximize=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.2, amsgrad=True)),
    ("AdamW", dict(lr=0.01, betas=(0.6, 0.95), maximize=True)),
]


@pytest.mark.parametrize("groups", [False, True])
@pytest.mark.parametrize("cls_name,kw", PARITY)
def test_torch_parity_steps(cls_name, kw, groups):
    rng = np.random.default_rng(1234)
    ours, theirs, o, t = _pair(cls_name, kw, groups, rng)
    # one parameter misses its gradient on step 2 (skipped by both)
    _step_both(ours, theirs, o, t, rng, 5, skip={(1, 1)})


@pytest.mark.parametrize("cls_name,kw", [PARITY[2], PARITY[8], PARITY[10]])
def test_torch_parity_float64(cls_name, kw):
    torch = _torch()
    rng = np.random.default_rng(7)
    ours, theirs, o, t = _pair(cls_name, kw, True, rng, dtype=np.float64)
    for i in range(5):
        for p, tp in zip(ours, theirs):
            g = rng.standard_normal(p.data.shape)
            set_grad(p, g)
            tp.grad = torch.from_numpy(g.copy())
        o.step()
        t.step()
        for p, tp in zip(ours, theirs):
            assert p.data.dtype == np.float64
            np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("cls_name,kw", [PARITY[3], PARITY[6], PARITY[8], PARITY[10]])
def test_torch_state_dict_loads_into_ours(cls_name, kw):
    torch = _torch()
    rng = np.random.default_rng(5)
    ours, theirs, o, t = _pair(cls_name, kw, True, rng)
    # torch trains 3 steps alone, with a param that never gets a gradient on step 1
    for i in range(3):
        for j, tp in enumerate(theirs):
            tp.grad = None if (i == 0 and j == 0) else torch.from_numpy(
                rng.standard_normal(tuple(tp.shape)).astype(np.float32))
        t.step()
    sd = _to_numpy(t.state_dict())
    for p, tp in zip(ours, theirs):
        p.data[...] = tp.detach().numpy()
    o.load_state_dict(sd)
    if cls_name != "SGD":
        assert all(isinstance(o.state[p]["step"], float) for p in ours)
        assert o.state[ours[0]]["step"] == 2.0 and o.state[ours[1]]["step"] == 3.0
    assert o.param_groups[1]["lr"] == pytest.approx(kw["lr"] * 3)
    _step_both(ours, theirs, o, t, rng, 4)


@pytest.mark.parametrize("cls_name,kw", [PARITY[3], PARITY[6], PARITY[10]])
def test_our_state_dict_loads_into_torch(cls_name, kw):
    torch = _torch()
    rng = np.random.default_rng(6)
    ours, theirs, o, t = _pair(cls_name, kw, True, rng)
    for i in range(3):
        for p in ours:
            set_grad(p, rng.standard_normal(p.data.shape).astype(np.float32))
        o.step()
    t.load_state_dict(_to_torch(o.state_dict()))
    with torch.no_grad():
        for p, tp in zip(ours, theirs):
            tp.copy_(torch.from_numpy(p.data.copy()))
    _step_both(ours, theirs, o, t, rng, 4)


def _torch_sched_pair(opt_name, opt_kw, sched_name, sched_kw):
    torch = _torch()
    o = getattr(optim, opt_name)([make_param([1.0, 2.0])], **opt_kw)
    t = getattr(torch.optim, opt_name)([torch.nn.Parameter(torch.ones(2))], **opt_kw)
    s = getattr(lr_scheduler, sched_name)(o, **sched_kw)
    ts = getattr(torch.optim.lr_scheduler, sched_name)(t, **sched_kw)
    return o, t, s, ts


def _momentum(group):
    return group["betas"][0] if "betas" in group else group.get("momentum")


def _compare_schedules(o, t, s, ts, n):
    got, want = [], []
    for _ in range(n + 1):
        got.append((s.get_last_lr()[0], o.param_groups[0]["lr"], _momentum(o.param_groups[0])))
        want.append((ts.get_last_lr()[0], t.param_groups[0]["lr"], _momentum(t.param_groups[0])))
        o.step()
        t.step()
        s.step()
        ts.step()
    assert s.last_epoch == ts.last_epoch
    np.testing.assert_allclose(np.array(got, dtype=float), np.array(want, dtype=float),
                               rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("sched_kw", [dict(step_size=3), dict(step_size=1, gamma=0.7)])
def test_torch_steplr(sched_kw):
    o, t, s, ts = _torch_sched_pair("SGD", dict(lr=0.3), "StepLR", sched_kw)
    _compare_schedules(o, t, s, ts, 15)


@pytest.mark.parametrize("T_max,eta_min", [(5, 0.0), (7, 0.01), (1, 0.0)])
def test_torch_cosine_past_t_max(T_max, eta_min):
    o, t, s, ts = _torch_sched_pair("SGD", dict(lr=0.3), "CosineAnnealingLR",
                                    dict(T_max=T_max, eta_min=eta_min))
    _compare_schedules(o, t, s, ts, 4 * T_max + 3)


@pytest.mark.parametrize("opt_name,opt_kw", [("SGD", dict(lr=0.1, momentum=0.9)),
                                             ("Adam", dict(lr=0.1, betas=(0.9, 0.99)))])
@pytest.mark.parametrize("strategy", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True])
def test_torch_onecycle(opt_name, opt_kw, strategy, three_phase):
    total = 23
    kw = dict(max_lr=0.5, total_steps=total, anneal_strategy=strategy, three_phase=three_phase,
              pct_start=0.35, div_factor=10.0, final_div_factor=100.0,
              base_momentum=0.8, max_momentum=0.9)
    o, t, s, ts = _torch_sched_pair(opt_name, opt_kw, "OneCycleLR", kw)
    # n = total - 1 keeps the last step inside the schedule: both allow `total` steps
    _compare_schedules(o, t, s, ts, total - 1)
    for sch in (s, ts):
        with pytest.raises(ValueError, match="Tried to step"):
            sch.step()


def test_torch_onecycle_epochs_and_groups():
    torch = _torch()
    o = optim.SGD([{"params": [make_param([1.0])]}, {"params": [make_param([2.0])]}],
                  lr=0.1, momentum=0.9)
    t = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.ones(1))]},
                         {"params": [torch.nn.Parameter(torch.ones(1))]}], lr=0.1, momentum=0.9)
    kw = dict(max_lr=[0.2, 0.6], epochs=4, steps_per_epoch=3, cycle_momentum=True)
    s = lr_scheduler.OneCycleLR(o, **kw)
    ts = torch.optim.lr_scheduler.OneCycleLR(t, **kw)
    for _ in range(12):
        assert s.get_last_lr() == pytest.approx(ts.get_last_lr(), rel=1e-13)
        assert [g["momentum"] for g in o.param_groups] == pytest.approx(
            [g["momentum"] for g in t.param_groups], rel=1e-13)
        o.step()
        t.step()
        s.step()
        ts.step()


@pytest.fixture(autouse=True)
def _quiet_torch_scheduler_warnings():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
        yield
