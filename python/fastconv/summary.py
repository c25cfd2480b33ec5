"""summary(model, input_shape): layers, output shapes, parameter counts and FLOPs."""

from __future__ import annotations

import numpy as np

from . import nn
from .tensor import no_grad

__all__ = ["summary", "layer_flops"]


def layer_flops(module: nn.Module, input_shape, output_shape) -> int:
    """Floating-point operations of one call (a multiply-add counts 2), for one batch."""
    out = int(np.prod(output_shape))
    if isinstance(module, nn.Conv2d):
        r, s = module.kernel_size
        flops = 2 * out * (module.in_channels // module.groups) * r * s
        return flops + (out if module.bias is not None else 0)
    if isinstance(module, nn.ConvTranspose2d):
        r, s = module.kernel_size
        return 2 * int(np.prod(input_shape)) * (module.out_channels // module.groups) * r * s
    if isinstance(module, nn.Linear):
        return 2 * out * module.in_features + (out if module.bias is not None else 0)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k = module.kernel_size
        k = k if isinstance(k, (tuple, list)) else (k, k)
        return out * k[0] * k[1]
    if isinstance(module, (nn.AdaptiveAvgPool2d,)):
        return int(np.prod(input_shape))
    if isinstance(module, nn.BatchNorm2d):
        return 2 * out
    if isinstance(module, (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Dropout)):
        return out
    if isinstance(module, (nn.Softmax, nn.LogSoftmax)):
        return 3 * out
    return 0


def summary(model: nn.Module, input_shape, dtype=np.float32, print_fn=print) -> dict:
    """Run one zero batch of `input_shape` (with the batch dimension, e.g. (1, 1, 28, 28))
    through model, print a table of its leaf layers and return the totals."""
    rows = []
    leaves = [(name, m) for name, m in model.named_modules() if not list(m.children())]
    originals = {}

    def recorder(name, module):
        forward = module.forward

        def recorded(x, *args, **kwargs):
            y = forward(x, *args, **kwargs)
            x_shape = tuple(np.shape(x.data if hasattr(x, "data") else x))
            y_shape = tuple(np.shape(y.data if hasattr(y, "data") else y))
            params = sum(p.numel() for p in module.parameters(recurse=False))
            rows.append((name, type(module).__name__, y_shape, params,
                         layer_flops(module, x_shape, y_shape)))
            return y
        return recorded

    for name, module in leaves:
        originals[name] = module.__dict__.get("forward")
        object.__setattr__(module, "forward", recorder(name, module))
    was_training = model.training
    try:
        model.eval()
        with no_grad():
            model(np.zeros(tuple(input_shape), dtype=dtype))
    finally:
        for name, module in leaves:
            del module.__dict__["forward"]
            if originals[name] is not None:
                object.__setattr__(module, "forward", originals[name])
        model.train(was_training)

    total_params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total_flops = sum(r[4] for r in rows)
    width = max([len(r[0]) + len(r[1]) + 3 for r in rows] + [20])
    lines = [f"{'layer':{width}s} {'output shape':>20s} {'params':>10s} {'FLOPs':>14s}",
             "-" * (width + 47)]
    for name, kind, shape, params, flops in rows:
        lines.append(f"{name + ' (' + kind + ')':{width}s} {str(shape):>20s} {params:>10,d} "
                     f"{flops:>14,d}")
    lines += ["-" * (width + 47),
              f"total parameters: {total_params:,d} ({trainable:,d} trainable); "
              f"FLOPs per batch of {input_shape[0]}: {total_flops:,d}"]
    print_fn("\n".join(lines))
    return {"parameters": total_params, "trainable_parameters": trainable,
            "flops": total_flops, "layers": rows}
