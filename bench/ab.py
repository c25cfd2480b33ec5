"""Compare two builds of fastconv._core in one process, calls interleaved (A, B, A, B, ...).

    python bench/ab.py OLD/_core.so NEW/_core.so [fwd,igrad,wgrad,bgrad] [--shapes a,b]
                       [--threads 2] [--reps 15] [--dtype float32]
    python bench/ab.py OLD/_core.so NEW/_core.so maxfwd,maxbwd,avgfwd,avgbwd  (pooling shapes)
    python bench/ab.py B/_core.so B2/_core.so fwd --isa avx2,avx512  (one build's two ISAs: B2
                       a copy of B, since one file cannot be loaded twice)

On a shared, noisy machine, separate runs of the benchmark differ by 10-30%; two builds loaded
side by side (each .so keeps its own symbols) and timed call by call see the same noise. Prints
per shape and pass the fastest and the median ms of A and B and their ratio A/B (> 1: B is
faster); the fastest call is the steadier figure here. Build A from the old commit (e.g. in a
git worktree) and B from the working tree. Run it in both orders too: the build loaded second
has measured up to 15% faster than the same build loaded first (float64 packing), so only a
ratio that holds both ways is a change.

--flush writes a 64 MB buffer before every call, so that the inputs come from memory as they
do in bench/run.py, where PyTorch's call between two of fastconv's evicts them (the depthwise
weight gradient's loop order measured 1.0x warm and 1.2-1.4x flushed).
"""
import argparse
import importlib.util
import statistics
import time

import numpy as np

from run import HERE, read_suite  # bench/run.py, beside this file

# name: N, C, H, W, K, kernel, stride, padding, dilation, groups: the suite's square-kernel
# shapes, and more for the choices between paths.
SHAPES = {name: (n, c, h, w, k, r, st, p, d, g)
          for name, n, c, h, w, k, r, s, st, p, d, g in
          ((row[0], *map(int, row[1:])) for row in read_suite(HERE / "conv_suite.txt"))
          if r == s}
SHAPES.update({
    "rows20": (32, 8, 20, 20, 32, 3, 1, 1, 1, 1),  # output rows of 20: panels of 16 span rows
    "rows20_c3": (32, 3, 20, 20, 32, 3, 1, 1, 1, 1),  # the same with 3 channels (stacked rows)
    # short output rows: the input gradient's column gradient image by image (col2im_rows)
    "rows20_p0_c3": (32, 3, 22, 22, 32, 3, 1, 0, 1, 1),
    "rows14_c3": (64, 3, 14, 14, 32, 3, 1, 1, 1, 1),
    "rows16_c6_5x5": (64, 6, 20, 20, 16, 5, 1, 0, 1, 1),
    # stride-1 input gradients whose column gradient is 0.3-2.5 MB an image (image by image)
    "c8_32_3x3": (32, 8, 32, 32, 16, 3, 1, 1, 1, 1),
    "c16_28_5x5": (32, 16, 28, 28, 32, 5, 1, 2, 1, 1),
    # 1x1 layers beside the suite's: wide planes, small planes with many channels, few channels
    "pw_56_c64": (8, 64, 56, 56, 64, 1, 1, 0, 1, 1),
    "pw_7_c512": (8, 512, 7, 7, 512, 1, 1, 0, 1, 1),
    "pw_32_c3": (32, 3, 32, 32, 16, 1, 1, 0, 1, 1),
    # stride 2, output rows of whole panels (32, 64): the parity-plane forward's choice
    "s2_c3_5x5": (32, 3, 64, 64, 32, 5, 2, 2, 1, 1),
    "s2_c16": (8, 16, 128, 128, 32, 3, 2, 1, 1, 1),
    "s2_c64": (8, 64, 64, 64, 128, 3, 2, 1, 1, 1),
    "s2_1x1": (8, 64, 56, 56, 128, 1, 2, 0, 1, 1),  # ResNet's downsampling shortcut
    "s2_c256": (8, 256, 14, 14, 512, 3, 2, 1, 1, 1),
    # a transposed convolution to an image (DCGAN's last layer, 4x4 stride 2): the input
    # gradient's stride phases (input_grad_phase_taps)
    "dcgan_out": (64, 3, 64, 64, 64, 4, 2, 1, 1, 1),
    # strided depthwise (MobileNet-like): the stride-phase planes of depthwise.cpp
    "depthwise_s2": (8, 128, 56, 56, 128, 3, 2, 1, 1, 128),
    "depthwise_s2_5x5": (8, 96, 56, 56, 96, 5, 2, 2, 1, 96),
    # stride-1 depthwise windows other than 3x3 (rows_correlate_dense)
    "depthwise_5x5": (8, 96, 28, 28, 96, 5, 1, 2, 1, 96),
    "depthwise_7x7": (8, 64, 28, 28, 64, 7, 1, 3, 1, 64),
})
# name: N, C, H, W, kernel, stride, padding: pool_suite.txt's shapes.
POOL_SHAPES = {row[0]: tuple(map(int, row[1:])) for row in read_suite(HERE / "pool_suite.txt")}
POOL_PASSES = ("maxfwd", "maxbwd", "avgfwd", "avgbwd")


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("passes", nargs="?", default="fwd,wgrad")
    parser.add_argument("--shapes", default="")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--isa", default="",
                        help="ISA of A and B, e.g. avx2,avx512 (the same .so may be given twice)")
    parser.add_argument("--flush", action="store_true",
                        help="evict the caches before every call (write 64 MB)")
    args = parser.parse_args()
    junk = np.zeros(16 << 20, np.float32) if args.flush else None
    builds = (load(args.a, "a._core"), load(args.b, "b._core"))
    for m in builds:
        m.set_num_threads(args.threads)
    for m, isa in zip(builds, args.isa.split(",") if args.isa else ()):
        if not m.set_isa(isa):
            parser.error(f"--isa: {isa!r} is not available (available: {m.available_isas()})")
    rng = np.random.default_rng(0)
    passes = args.passes.split(",")
    pooling = all(ps in POOL_PASSES for ps in passes)
    default_shapes = ",".join(POOL_SHAPES if pooling else SHAPES)
    for name in (args.shapes or default_shapes).split(","):
        calls = (pool_calls if pooling else conv_calls)(name, args.dtype, rng, builds[0])
        line = [name]
        for ps in passes:
            call = calls[ps]
            times = ([], [])
            for m in builds * 2:
                call(m)
            for _ in range(args.reps):
                for i, m in enumerate(builds):
                    if junk is not None:
                        junk += 1.0
                    t0 = time.perf_counter()
                    call(m)
                    times[i].append(time.perf_counter() - t0)
            fa, fb = min(times[0]) * 1e3, min(times[1]) * 1e3
            ma, mb = statistics.median(times[0]) * 1e3, statistics.median(times[1]) * 1e3
            line.append(f"{ps} fastest {fa:.3f}/{fb:.3f} ({fa / fb:.2f}x) median {ma:.3f}/{mb:.3f}"
                        f" ({ma / mb:.2f}x)")
        print("  ".join(line), flush=True)


def conv_calls(name, dtype, rng, reference):
    N, C, H, W, K, R, st, p, d, g = SHAPES[name]
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // g, R, R)).astype(dtype)
    Ho = (H + 2 * p - d * (R - 1) - 1) // st + 1
    y = np.empty((N, K, Ho, Ho), dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dw, dx, db = np.empty_like(w), np.empty_like(x), np.empty(K, dtype)
    return {"fwd": lambda m: m.conv2d_forward(x, w, None, y, (st, st), (p, p), (d, d), g),
            "bgrad": lambda m: m.conv2d_bias_grad(dy, db),
            "igrad": lambda m: m.conv2d_input_grad(w, dy, None, dx, (st, st), (p, p), (d, d), g),
            "wgrad": lambda m: m.conv2d_weight_grad(x, dy, dw, (st, st), (p, p), (d, d), g)}


def pool_calls(name, dtype, rng, reference):
    N, C, H, W, k, st, p = POOL_SHAPES[name]
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    Ho = (H + 2 * p - k) // st + 1
    y = np.empty((N, C, Ho, Ho), dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx = np.empty_like(x)
    idx = np.empty(y.shape, np.int64)
    window = ((k, k), (st, st), (p, p))
    reference.max_pool2d_forward(x, y, idx, *window, (1, 1))  # maxfwd rewrites the same idx
    return {"maxfwd": lambda m: m.max_pool2d_forward(x, y, idx, *window, (1, 1)),
            "maxbwd": lambda m: m.max_pool2d_backward(dy, idx, dx),
            "avgfwd": lambda m: m.avg_pool2d_forward(x, y, *window, True, 0),
            "avgbwd": lambda m: m.avg_pool2d_backward(dy, dx, *window, True, 0)}


if __name__ == "__main__":
    main()
