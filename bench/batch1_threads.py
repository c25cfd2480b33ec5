"""resnet_b1 (1,64,56,56 -> 64, 3x3, p1) at 1 and 2 threads, calls interleaved in one process:
the batch-1 target wants 2 threads to take at most 0.6 of 1 thread's time.

    python bench/batch1_threads.py
"""
import time

import numpy as np

import fastconv


def main():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 64, 56, 56)).astype(np.float32)
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((1, 64, 56, 56)).astype(np.float32)
    passes = {"forward": lambda: fastconv.conv2d(x, w, None, 1, 1),
              "input_grad": lambda: fastconv.conv2d_input_grad(x.shape, w, dy, 1, 1),
              "weight_grad": lambda: fastconv.conv2d_weight_grad(x, w.shape, dy, 1, 1)}
    for name, f in passes.items():
        times = {1: [], 2: []}
        for _ in range(40):
            for n in (1, 2):
                fastconv.set_num_threads(n)
                f()  # the first call after a change of thread count is not timed
                t0 = time.perf_counter()
                f()
                times[n].append(time.perf_counter() - t0)
        one, two = (np.median(times[n]) * 1e3 for n in (1, 2))
        print(f"{name}: 1 thread {one:.3f} ms, 2 threads {two:.3f} ms, ratio {two / one:.2f}")


if __name__ == "__main__":
    main()
