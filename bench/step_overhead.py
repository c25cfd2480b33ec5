"""The Python overhead of a training step: LeNet-5 steps at batch 1, whose kernels are tiny.

    python bench/step_overhead.py [--steps 200]             # median microseconds a step
    python bench/step_overhead.py --callgrind [--steps 40]  # instructions a step (valgrind)

The time of such a step is almost all Python (argument checks, the autograd graph, the
optimizer's loop) and moves by 10-30% on a shared machine; the instruction count under
`valgrind --tool=callgrind` does not move, whatever else runs: two runs of this script under
callgrind, one with no measured steps and one with --steps, differ by exactly the steps' work
(start-up and warm-up cancel). One thread, so that the count does not depend on scheduling.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_steps(steps: int) -> list[float]:
    import numpy as np

    import fastconv
    from train_step import fastconv_step  # beside this file

    fastconv.set_num_threads(1)
    _, step, _, _ = fastconv_step("lenet", 1, (1, 28, 28), np.random.default_rng(0))
    for _ in range(10):  # warm-up: the buffer pool, memoized argument checks
        step()
    seconds = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - t0)
    return seconds


def callgrind_instructions(steps: int) -> int:
    """Instructions of this script with `steps` measured steps, under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out",
             sys.executable, __file__, "--steps", str(steps), "--quiet"],
            capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        match = re.search(r"Collected : (\d+)", out.stderr)
        if out.returncode != 0 or match is None:
            raise RuntimeError(f"callgrind run failed:\n{out.stderr[-2000:]}")
        return int(match.group(1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--callgrind", action="store_true",
                        help="count instructions a step under valgrind instead of timing")
    parser.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.callgrind:
        if shutil.which("valgrind") is None:
            sys.exit("step_overhead.py: --callgrind needs valgrind")
        steps = args.steps or 40
        per_step = (callgrind_instructions(steps) - callgrind_instructions(0)) / steps
        print(f"LeNet-5 batch-1 training step, 1 thread: {per_step / 1e6:.3f} M instructions "
              f"(callgrind, {steps} steps)")
        return
    seconds = run_steps(args.steps if args.steps is not None else 200)
    if not args.quiet and seconds:
        median_us, fastest_us = statistics.median(seconds) * 1e6, min(seconds) * 1e6
        print(f"LeNet-5 batch-1 training step, 1 thread: median {median_us:.0f} us, fastest "
              f"{fastest_us:.0f} us over {len(seconds)} steps")


if __name__ == "__main__":
    main()
