"""SGD, Adam and AdamW on NumPy arrays.

The update rules are those of PyTorch 2.x's single-tensor (``foreach=False``)
implementations, operation for operation, so float32 results agree with
PyTorch's to rounding.  All arithmetic stays in the parameter's dtype (Python
scalars are cast to it first) and parameters are updated in place.
"""

import numpy as np

from .. import kernels
from .optimizer import Optimizer, _check_nonneg, _check_number, _grad_array

__all__ = ["SGD", "Adam", "AdamW"]


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with (Nesterov) momentum.

    For each parameter with a gradient ``g`` (PyTorch's algorithm)::

        g = -g if maximize
        g = g + weight_decay * p                     if weight_decay != 0
        b = g (first step) | momentum * b + (1 - dampening) * g
        g = g + momentum * b if nesterov else b      if momentum != 0
        p = p - lr * g

    State: ``'momentum_buffer'`` (only when momentum != 0).
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0,
                 nesterov=False, maximize=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _validate_group(self, group):
        _check_nonneg("lr", group["lr"])
        momentum = _check_nonneg("momentum", group["momentum"])
        dampening = _check_number("dampening", group["dampening"])
        _check_nonneg("weight_decay", group["weight_decay"])
        if group["nesterov"] and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov=True requires momentum > 0 and dampening = 0 "
                             f"(got momentum={group['momentum']!r}, "
                             f"dampening={group['dampening']!r})")

    def _validate_state(self, p, group, state):
        buf = state.get("momentum_buffer")
        if buf is not None and not isinstance(buf, np.ndarray):
            raise ValueError("state 'momentum_buffer' must be an array or None")

    def step(self, closure=None):
        """Perform one optimization step; returns ``closure()`` if given."""
        loss = self._call_closure(closure)
        for group in self.param_groups:
            lr = group["lr"]
            momentum = group["momentum"]
            dampening = group["dampening"]
            weight_decay = group["weight_decay"]
            nesterov = group["nesterov"]
            maximize = group["maximize"]
            fused = {False: ([], [], [], []), True: ([], [], [], [])}  # by first step: p, ...
            for p in group["params"]:
                g = _grad_array(p)
                if g is None:
                    continue
                d = p.data
                buf = self.state[p].get("momentum_buffer") if momentum != 0 else None
                if self._fusable(d, buf):
                    first = momentum != 0 and buf is None
                    if first:
                        buf = np.empty_like(d)
                    for item, items in zip((p, d, g, buf), fused[first]):
                        items.append(item)
                    continue
                t = d.dtype.type
                owned = False  # whether g is a temporary we may overwrite
                if weight_decay != 0:
                    # grad + wd * param   (IEEE: wd*p - g == -g + wd*p exactly)
                    tmp = np.multiply(d, t(weight_decay))
                    if maximize:
                        np.subtract(tmp, g, out=tmp)
                    else:
                        np.add(g, tmp, out=tmp)
                    g, owned = tmp, True
                elif maximize:
                    g, owned = np.negative(g), True

                if momentum != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = g if owned else g.copy()
                        state["momentum_buffer"] = buf
                        owned = False  # g is the buffer now
                    else:
                        buf *= t(momentum)
                        if dampening == 0:
                            buf += g
                        else:
                            tmp = np.multiply(g, t(1 - dampening))
                            buf += tmp
                    if nesterov:
                        upd = np.multiply(buf, t(momentum))
                        upd += g
                        g, owned = upd, True
                    else:
                        g, owned = buf, False

                if owned:
                    np.multiply(g, t(lr), out=g)
                    d -= g
                else:
                    d -= np.multiply(g, t(lr))
            for first, (params, arrays, grads, buffers) in fused.items():
                if params:
                    kernels.sgd_update_many(arrays, grads, buffers if momentum != 0 else None,
                                            lr, momentum, dampening, weight_decay, nesterov,
                                            maximize, first)
                if first:  # the buffers hold the gradients now
                    for p, buf in zip(params, buffers):
                        self.state[p]["momentum_buffer"] = buf
        return loss

    @staticmethod
    def _fusable(d, buf):
        """Whether ``kernels.sgd_update_many`` may update this parameter (the same bits as the
        NumPy code below): a C-contiguous, writeable float32 or float64 parameter and buffer.
        The parameters of a group go in one call (a small model's step spent more time in
        Python around one call per parameter than in the updates)."""
        return (d.dtype in _FUSED_DTYPES and d.flags.c_contiguous and d.flags.writeable and (
            buf is None or (buf.dtype == d.dtype and buf.shape == d.shape
                            and buf.flags.c_contiguous and buf.flags.writeable)))


_FUSED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class Adam(Optimizer):
    """Adam (Kingma & Ba), with optional AMSGrad and decoupled weight decay.

    PyTorch's single-tensor algorithm, for each parameter with a gradient::

        step += 1
        g = -g if maximize
        p *= 1 - lr * wd               if wd != 0 and decoupled_weight_decay
        g = g + wd * p                 if wd != 0 and not decoupled
        m = m.lerp(g, 1 - beta1)
        v = beta2 * v + (1 - beta2) * g * g
        bias_correction1 = 1 - beta1 ** step ; bias_correction2 = 1 - beta2 ** step
        step_size = lr / bias_correction1
        vmax = max(vmax, v)            if amsgrad (used in place of v below)
        denom = sqrt(v) / sqrt(bias_correction2) + eps
        p = p - step_size * m / denom

    State: ``'step'`` (a float), ``'exp_avg'``, ``'exp_avg_sq'`` and, with
    amsgrad, ``'max_exp_avg_sq'``.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, maximize=False, decoupled_weight_decay=False):
        try:
            betas = tuple(betas)
        except TypeError:
            raise TypeError(f"betas must be a pair of floats, got {betas!r}") from None
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _validate_group(self, group):
        _check_nonneg("lr", group["lr"])
        _check_nonneg("eps", group["eps"])
        betas = group["betas"]
        if isinstance(betas, list):
            betas = group["betas"] = tuple(betas)
        if not isinstance(betas, tuple) or len(betas) != 2:
            raise ValueError(f"Invalid betas: {betas!r} (betas must be a pair of floats)")
        for i, b in enumerate(betas):
            v = _check_number(f"betas[{i}]", b)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"Invalid betas[{i}]: {b!r} (betas[{i}] must be in [0, 1))")
        _check_nonneg("weight_decay", group["weight_decay"])

    def _validate_state(self, p, group, state):
        if not state:
            return
        need = ["step", "exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if group["amsgrad"] else [])
        missing = [k for k in need if k not in state]
        if missing:
            raise ValueError(f"loaded {type(self).__name__} state lacks {missing}")

    def step(self, closure=None):
        """Perform one optimization step; returns ``closure()`` if given."""
        loss = self._call_closure(closure)
        for group in self.param_groups:
            lr = group["lr"]
            beta1, beta2 = group["betas"]
            eps = group["eps"]
            weight_decay = group["weight_decay"]
            amsgrad = group["amsgrad"]
            maximize = group["maximize"]
            decoupled = group["decoupled_weight_decay"]
            for p in group["params"]:
                g = _grad_array(p)
                if g is None:
                    continue
                d = p.data
                t = d.dtype.type
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0.0
                    state["exp_avg"] = np.zeros_like(d)
                    state["exp_avg_sq"] = np.zeros_like(d)
                    if amsgrad:
                        state["max_exp_avg_sq"] = np.zeros_like(d)
                exp_avg = state["exp_avg"]
                exp_avg_sq = state["exp_avg_sq"]

                state["step"] = step = float(state["step"]) + 1.0

                if weight_decay != 0:
                    if decoupled:
                        d *= t(1 - lr * weight_decay)
                        if maximize:
                            g = np.negative(g)
                    else:
                        tmp = np.multiply(d, t(weight_decay))
                        if maximize:
                            np.subtract(tmp, g, out=tmp)
                        else:
                            np.add(g, tmp, out=tmp)
                        g = tmp
                elif maximize:
                    g = np.negative(g)

                # exp_avg.lerp_(g, w), as ATen's lerp: small weight -> self + w*(end-self),
                # else end - (end-self)*(1-w); the weight is cast to the dtype first.
                w = t(1 - beta1)
                buf = np.subtract(g, exp_avg)
                if abs(w) < 0.5:
                    buf *= w
                    exp_avg += buf
                else:
                    buf *= t(1) - w
                    np.subtract(g, buf, out=exp_avg)

                # exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                exp_avg_sq *= t(beta2)
                np.multiply(g, t(1 - beta2), out=buf)
                buf *= g
                exp_avg_sq += buf

                bias_correction1 = 1 - beta1 ** step
                bias_correction2 = 1 - beta2 ** step
                step_size = lr / bias_correction1
                bias_correction2_sqrt = bias_correction2 ** 0.5

                if amsgrad:
                    max_sq = state["max_exp_avg_sq"]
                    np.maximum(max_sq, exp_avg_sq, out=max_sq)
                    src = max_sq
                else:
                    src = exp_avg_sq
                denom = np.sqrt(src)
                denom /= t(bias_correction2_sqrt)
                denom += t(eps)

                # param.addcdiv_(exp_avg, denom, value=-step_size): p + (v * m) / denom
                np.multiply(exp_avg, t(-step_size), out=buf)
                buf /= denom
                d += buf
        return loss


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter):
    ``p *= 1 - lr * weight_decay`` before the Adam update.  Default
    ``weight_decay=1e-2``, as PyTorch's."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, decoupled_weight_decay=True)

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # as PyTorch's AdamW.__setstate__
            group["decoupled_weight_decay"] = True
