"""Where a second thread starts to pay: conv2d forward (float32) of growing size, timed with
set_num_threads(1) and (2), interleaved, median of 30. fastconv keeps problems below about
kMinFlopsPerThread = 2e5 flops per thread on one thread (csrc/conv.cpp); the column "threads"
says how many the 2-thread call really used (fastconv._core._peak_threads_claimed).

    python bench/thread_threshold.py
"""

import statistics
import time

import numpy as np

import fastconv
from fastconv import _core

# (N, C, H, W, K): 3x3, padding 1, flops 2*N*K*H*W*C*9
SHAPES = [(1, 1, 4, 4, 2), (1, 2, 6, 6, 4), (1, 4, 8, 8, 4), (1, 4, 10, 10, 8),
          (1, 8, 12, 12, 8), (1, 8, 16, 16, 16), (1, 8, 20, 20, 16), (1, 16, 16, 16, 16),
          (1, 8, 24, 24, 16), (2, 16, 16, 16, 16), (4, 16, 32, 32, 16),
          (8, 32, 32, 32, 32)]


def median_us(f, n=30):
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e6


def main():
    rng = np.random.default_rng(0)
    print(f"{'shape (N,C,H,W->K)':>22} {'flops':>10} {'1 thread':>10} {'2 threads':>10} "
          f"{'ratio':>6} {'threads':>7}")
    for N, C, H, W, K in SHAPES:
        x = rng.standard_normal((N, C, H, W)).astype(np.float32)
        w = rng.standard_normal((K, C, 3, 3)).astype(np.float32)
        y = np.empty((N, K, H, W), np.float32)
        call = lambda: fastconv.conv2d(x, w, padding=1, out=y)  # noqa: E731
        times = {1: [], 2: []}
        for _ in range(5):
            for t in (1, 2):
                fastconv.set_num_threads(t)
                call()
                times[t].append(median_us(call, 6))
        fastconv.set_num_threads(2)
        _core._peak_threads_claimed(True)
        call()
        used = max(1, _core._peak_threads_claimed(False))
        one, two = statistics.median(times[1]), statistics.median(times[2])
        flops = 2 * N * K * H * W * C * 9
        print(f"{str((N, C, H, W, K)):>22} {flops:>10.2e} {one:>8.1f}us {two:>8.1f}us "
              f"{one / two:>6.2f} {used:>7}")


if __name__ == "__main__":
    main()
