"""Data-parallel scaling of a training step on this machine: 1 rank x T threads against
R ranks x T/R threads (mpiexec), the small CIFAR net at a global batch of 32.

    python bench/distributed.py [--ranks 2] [--cores 2] [--steps 30] [--rounds 3] [--json F]

Each configuration runs in its own process(es), one after another, for --rounds rounds
(interleaved: A, B, C, A, B, C, ...), so that the machine's noise hits them alike; the table
gives the median over all measured steps. A step is a whole DistributedTrainer.train_step
(forward, backward, gradient all-reduce, SGD-momentum update) on the rank's share of the
global batch. Reported: steps/s, the speed-up of R ranks over one rank with the same cores,
the scaling efficiency (R ranks x 1 thread against R x the speed of 1 rank x 1 thread), the
share of the step that rank 0 spent waiting for the gradient all-reduce to complete, how long
that all-reduce takes by itself when the ranks start it together, and how much of it had
completed, overlapped with backward, by the time backward ended.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def worker(args) -> None:
    import numpy as np

    import fastconv
    from fastconv import distributed as dist
    from fastconv import models, nn, optim
    from fastconv.train import Trainer

    world = 1
    if args.mpi:
        comm = dist.init(num_threads=args.threads)
        world = comm.Get_size()
    else:
        fastconv.set_num_threads(args.threads)
    fastconv.manual_seed(0)
    model = models.build("small-cnn", 3, 10, 32)
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if args.mpi:
        trainer = dist.DistributedTrainer(model, nn.CrossEntropyLoss(), optimizer,
                                          progress=False)
    else:
        trainer = Trainer(model, nn.CrossEntropyLoss(), optimizer, progress=False)
    rng = np.random.default_rng(1)
    local = args.batch // world
    x = rng.standard_normal((local, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, local)
    for _ in range(5):
        trainer.train_step(x, y)
    times, waits = [], []
    if args.mpi:
        trainer.reducer.steps = trainer.reducer.overlapped_bytes = 0
    for _ in range(args.steps):
        waited = trainer.reducer.wait_seconds if args.mpi else 0.0
        start = time.perf_counter()
        trainer.train_step(x, y)
        times.append(time.perf_counter() - start)
        waits.append((trainer.reducer.wait_seconds if args.mpi else 0.0) - waited)
    transfer = []
    if args.mpi:
        # The all-reduce alone: the same buckets, every rank lined up first by a barrier. The
        # rest of the waiting above is for the slower rank to finish its backward.
        from mpi4py import MPI
        for _ in range(10):
            comm.Barrier()
            start = time.perf_counter()
            requests = [comm.Iallreduce(MPI.IN_PLACE, b.flat, MPI.SUM)
                        for b in trainer.reducer.buckets]
            MPI.Request.Waitall(requests)
            transfer.append(time.perf_counter() - start)
    if not args.mpi or comm.Get_rank() == 0:
        print(json.dumps({"times": times, "waits": waits, "transfer": transfer, "world": world,
                          "threads": fastconv.get_num_threads(),
                          "gradient_bytes": sum(p.data.nbytes for p in model.parameters()),
                          "overlapped": (trainer.reducer.overlapped_bytes / (
                              trainer.reducer.steps * trainer.reducer.bucket_bytes)
                              if args.mpi else None)}))


def mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        raise SystemExit('bench/distributed.py: no mpiexec; pip install "fastconv[mpi]"')
    return found


def run_config(ranks: int, threads: int, args) -> dict:
    command = [sys.executable, str(HERE), "--worker", "--threads", str(threads),
               "--steps", str(args.steps), "--batch", str(args.batch)]
    if ranks > 1:
        command = [mpiexec(), "-n", str(ranks)] + command + ["--mpi"]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if result.returncode != 0:
        raise SystemExit(f"bench/distributed.py: {' '.join(command)} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32, help="global batch")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mpi", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.batch % args.ranks:
        raise SystemExit(f"--batch {args.batch} must be a multiple of --ranks {args.ranks}")
    per_rank = max(1, args.cores // args.ranks)
    configs = [("1 rank x 1 thread", 1, 1), (f"1 rank x {args.cores} threads", 1, args.cores),
               (f"{args.ranks} ranks x {per_rank} thread{'s' * (per_rank > 1)}", args.ranks,
                per_rank)]
    samples = {name: {"times": [], "waits": [], "transfer": [], "overlapped": []}
               for name, _, _ in configs}
    gradient_bytes = 0
    for _ in range(args.rounds):
        for name, ranks, threads in configs:
            result = run_config(ranks, threads, args)
            samples[name]["times"] += result["times"]
            samples[name]["waits"] += result["waits"]
            samples[name]["transfer"] += result["transfer"]
            if result["overlapped"] is not None:
                samples[name]["overlapped"].append(result["overlapped"])
            gradient_bytes = result["gradient_bytes"]
    rows = {}
    for name, ranks, threads in configs:
        times, waits = samples[name]["times"], samples[name]["waits"]
        median = statistics.median(times)
        rows[name] = {"ranks": ranks, "threads": threads, "median_ms": 1e3 * median,
                      "steps_per_second": 1 / median,
                      "wait_share": sum(waits) / sum(times),
                      "allreduce_ms": (1e3 * statistics.median(samples[name]["transfer"])
                                       if samples[name]["transfer"] else None),
                      "overlapped_share": (statistics.mean(samples[name]["overlapped"])
                                           if samples[name]["overlapped"] else None)}
    single, threaded, ranked = (rows[name] for name, _, _ in configs)
    summary = {
        "speedup_ranks_over_threads": ranked["steps_per_second"] / threaded["steps_per_second"],
        "threads_speedup": threaded["steps_per_second"] / single["steps_per_second"],
        "ranks_speedup": ranked["steps_per_second"] / single["steps_per_second"],
        "scaling_efficiency": ranked["steps_per_second"] / (args.ranks * single[
            "steps_per_second"]),
    }
    print(f"small CIFAR net, global batch {args.batch}, {args.rounds} rounds x {args.steps} "
          f"steps, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs")
    print(f"{'configuration':<24}{'median ms':>10}{'steps/s':>10}{'waiting on all-reduce':>24}")
    for name, row in rows.items():
        wait = f"{100 * row['wait_share']:.1f}%" if row["ranks"] > 1 else "-"
        print(f"{name:<24}{row['median_ms']:>10.1f}{row['steps_per_second']:>10.2f}{wait:>24}")
    print(f"{args.ranks} ranks vs 1 rank x {args.cores} threads: "
          f"{summary['speedup_ranks_over_threads']:.2f}x; vs 1 rank x 1 thread: "
          f"{summary['ranks_speedup']:.2f}x (scaling efficiency "
          f"{100 * summary['scaling_efficiency']:.0f}%); {args.cores} threads vs 1: "
          f"{summary['threads_speedup']:.2f}x")
    transfer = ranked["allreduce_ms"]
    print(f"the all-reduce alone ({gradient_bytes / 2**20:.1f} MiB of gradients, ranks lined "
          f"up by a barrier): {transfer:.2f} ms, {100 * transfer / ranked['median_ms']:.1f}% of "
          f"the step; the rest of the waiting is for the slower rank's backward")
    print(f"gradients whose all-reduce had completed when backward ended: "
          f"{100 * ranked['overlapped_share']:.0f}% of the bytes")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary,
                                               "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
