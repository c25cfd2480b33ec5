"""Time whole training steps (forward, backward, SGD-momentum update) against PyTorch.

    python bench/train_step.py [--threads 2] [--steps 30] [--json out.json]

Nets: LeNet-5 at batch 64 on 1x28x28 and the small CIFAR net (conv3-32, conv32-32, pool,
conv32-64, conv64-64, pool, linear 4096-256-10) at batch 32 on 3x32x32, built by
fastconv.models; PyTorch gets the same architecture with the same weights. Steps of the two
are interleaved; medians are reported (ratio = PyTorch time / fastconv time). A profile of
where fastconv's step goes (kernels, other NumPy work, Python) follows with --profile.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import fastconv
from fastconv import models, nn, optim
from run import set_threads  # bench/run.py, beside this file

CASES = [("lenet5", "lenet", 64, (1, 28, 28)), ("small_cifar", "small-cnn", 32, (3, 32, 32))]


def fastconv_step(model_name, batch, shape, rng):
    fastconv.manual_seed(0)
    model = models.build(model_name, shape[0], 10, shape[1])
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    x = rng.standard_normal((batch,) + shape).astype(np.float32)
    y = rng.integers(0, 10, batch)

    def step():
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    return model, step, x, y


def torch_step(torch, model, x, y):
    """The same network in PyTorch, with fastconv's initial weights."""
    tnn = torch.nn
    layers = []
    for m in model:
        if isinstance(m, nn.Conv2d):
            layers.append(tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride,
                                     m.padding))
        elif isinstance(m, nn.Linear):
            layers.append(tnn.Linear(m.in_features, m.out_features))
        elif isinstance(m, nn.ReLU):
            layers.append(tnn.ReLU())
        elif isinstance(m, nn.MaxPool2d):
            layers.append(tnn.MaxPool2d(m.kernel_size))
        elif isinstance(m, nn.Flatten):
            layers.append(tnn.Flatten())
        else:
            raise TypeError(f"no PyTorch twin for {m!r}")
    net = tnn.Sequential(*layers)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = tnn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        optimizer.zero_grad()
        loss = loss_fn(net(xt), yt)
        loss.backward()
        optimizer.step()
    return step


def median_ms(functions: dict, steps: int) -> dict:
    for f in functions.values():
        for _ in range(3):
            f()
    samples = {k: [] for k in functions}
    for _ in range(steps):
        for k, f in functions.items():
            t0 = time.perf_counter()
            f()
            samples[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in samples.items()}


def profile(step, steps: int = 20) -> None:
    import cProfile
    import pstats
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(v[2] for v in stats.stats.values())
    kernel = sum(v[2] for k, v in stats.stats.items() if "fastconv._core" in str(k[2]) or
                 k[0] == "~" and "_core" in k[2])
    print(f"  profile over {steps} steps: {total / steps * 1e3:.2f} ms/step in Python's view; "
          f"C++ kernels {kernel / steps * 1e3:.2f} ms/step; top functions by own time:")
    stats.sort_stats("tottime").print_stats(8)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=fastconv.get_num_threads())
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-torch", action="store_true", help="do not measure PyTorch")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    torch = set_threads(args.threads, use_torch=not args.no_torch)
    rng = np.random.default_rng(0)
    results = []
    print(f"{args.threads} threads; median ms per training step (forward, backward, "
          f"SGD momentum)")
    for name, model_name, batch, shape in CASES:
        model, step, x, y = fastconv_step(model_name, batch, shape, rng)
        functions = {"fastconv": step}
        if torch is not None:
            functions["torch"] = torch_step(torch, model, x, y)
        ms = median_ms(functions, args.steps)
        row = {"name": name, "batch": batch, "fastconv_ms": ms["fastconv"]}
        line = f"{name:12s} batch {batch:3d}: fastconv {ms['fastconv']:7.2f} ms"
        if "torch" in ms:
            row.update(torch_ms=ms["torch"], ratio=ms["torch"] / ms["fastconv"])
            line += f", torch {ms['torch']:7.2f} ms, ratio {row['ratio']:.2f}"
        print(line, flush=True)
        results.append(row)
        if args.profile:
            profile(step)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
