"""Benchmark fastconv's conv2d, max_pool2d and avg_pool2d kernels against PyTorch, in the same run.

    python bench/run.py [--threads 2] [--dtype float32] [--filter resnet] [--json out.json]

Shapes come from conv_suite.txt and pool_suite.txt beside this file (one shape a line).
Each row times fastconv and, when importable, PyTorch (and, for the float32 forward pass,
ONNX Runtime) at the same thread count; the calls are interleaved (fastconv, peer, fastconv,
peer, ...) so that machine noise hits both alike, and the median of the repetitions is
reported. ratio = peer time / fastconv time (> 1: fastconv is faster); "best" is the ratio
against the faster peer; the last lines give the geometric mean of the ratios per pass.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import fastconv

HERE = Path(__file__).resolve().parent


def run_probe(source: str, threads: int) -> dict | None:
    """Build the C probe `source` (beside this file; AVX2 code, with OpenMP) and run it on
    `threads` threads: the JSON it prints, or None when it cannot be built or run here (no
    compiler, no AVX2)."""
    import shutil
    import subprocess
    import tempfile
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "probe"
        build = subprocess.run([compiler, "-O3", "-mavx2", "-mfma", "-fopenmp",
                                str(HERE / source), "-o", str(binary)],
                               capture_output=True, text=True)
        if build.returncode != 0:
            return None
        run = subprocess.run([str(binary), str(threads)], capture_output=True, text=True)
        if run.returncode != 0:
            return None
        return json.loads(run.stdout)


def measure_fma_peak(threads: int) -> dict | None:
    """fma_peak.c (AVX2+FMA, AVX-512F where the CPU has it): {'isa', 'f32_gflops_1',
    'f32_gflops_n'}."""
    return run_probe("fma_peak.c", threads)


def measure_memory_bandwidth(threads: int) -> dict | None:
    """mem_bandwidth.c: DRAM read and copy rates, {'read_gbs_1', 'read_gbs_n', 'copy_gbs_1',
    'copy_gbs_n'} in GB/s."""
    return run_probe("mem_bandwidth.c", threads)


def set_threads(threads: int, use_torch: bool = True):
    """Give fastconv (and PyTorch, if wanted and importable) `threads` threads; returns the
    torch module or None."""
    fastconv.set_num_threads(threads)
    if not use_torch:
        return None
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def import_onnxruntime(threads: int, wanted: bool = True):
    """(onnxruntime, onnx) when both are importable and wanted, else None."""
    if not wanted:
        return None
    try:
        import onnx
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime, onnx, threads


def onnxruntime_conv(ort, case, w):
    """An ONNX Runtime session running one Conv node (weights as an initializer) on x."""
    onnxruntime, onnx, threads = ort
    helper = onnx.helper
    stride, padding, dilation = case["stride"], case["padding"], case["dilation"]
    node = helper.make_node("Conv", ["x", "w"], ["y"], strides=[stride, stride],
                            pads=[padding] * 4, dilations=[dilation, dilation],
                            group=case["groups"], kernel_shape=list(case["weight"][2:]))
    graph = helper.make_graph(
        [node], "conv",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(case["input"]))],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # ORT's pool spin-waits after each run by default, which takes the cores from the calls
    # interleaved with it (fastconv's forward measured 2-4x slower next to a spinning ORT).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(model.SerializeToString(), options,
                                        providers=["CPUExecutionProvider"])


def read_suite(path: Path) -> list[list[str]]:
    rows = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            rows.append(line.split())
    return rows


def conv_cases(dtype):
    for name, *numbers in read_suite(HERE / "conv_suite.txt"):
        n, c, h, w, k, r, s, stride, padding, dilation, groups = map(int, numbers)
        yield dict(name=name, input=(n, c, h, w), weight=(k, c // groups, r, s), stride=stride,
                   padding=padding, dilation=dilation, groups=groups, dtype=dtype)


def pool_cases(dtype):
    for name, *numbers in read_suite(HERE / "pool_suite.txt"):
        n, c, h, w, kernel, stride, padding = map(int, numbers)
        yield dict(name=name, input=(n, c, h, w), kernel=kernel, stride=stride, padding=padding,
                   dtype=dtype)


def time_interleaved(functions: dict, min_seconds: float = 0.4, max_reps: int = 50) -> dict:
    """Median seconds per call of each function, calls interleaved across functions."""
    for f in functions.values():  # warm-up: allocations, thread pools, caches
        f()
        f()
    start = time.perf_counter()
    for f in functions.values():
        f()
    first = time.perf_counter() - start
    reps = int(min(max_reps, max(5, min_seconds / max(first, 1e-9))))
    samples = {name: [] for name in functions}
    for _ in range(reps):
        for name, f in functions.items():
            t0 = time.perf_counter()
            f()
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in samples.items()}


def conv_functions(case, rng, torch, ort=None):
    x = rng.standard_normal(case["input"]).astype(case["dtype"])
    w = rng.standard_normal(case["weight"]).astype(case["dtype"])
    args = (case["stride"], case["padding"], case["dilation"], case["groups"])
    y = fastconv.conv2d(x, w, None, *args)
    dy = rng.standard_normal(y.shape).astype(case["dtype"])
    flops = 2.0 * y.size * np.prod(case["weight"][1:])
    passes = {
        "forward": {"fastconv": lambda: fastconv.conv2d(x, w, None, *args)},
        "input_grad": {"fastconv": lambda: fastconv.conv2d_input_grad(x.shape, w, dy, *args)},
        "weight_grad": {"fastconv": lambda: fastconv.conv2d_weight_grad(x, w.shape, dy, *args)},
    }
    if torch is not None:
        xt, wt, dyt = (torch.from_numpy(a) for a in (x, w, dy))
        F, grad = torch.nn.functional, torch.nn.grad
        passes["forward"]["torch"] = lambda: F.conv2d(xt, wt, None, *args)
        passes["input_grad"]["torch"] = lambda: grad.conv2d_input(x.shape, wt, dyt, *args)
        passes["weight_grad"]["torch"] = lambda: grad.conv2d_weight(xt, w.shape, dyt, *args)
    if ort is not None and case["dtype"] == np.float32:
        session = onnxruntime_conv(ort, case, w)
        passes["forward"]["onnxruntime"] = lambda: session.run(None, {"x": x})
    # Bytes that must move at least: each operand read once, the result written once (what
    # bounds the memory-bound layers, depthwise, when their inputs are not cached).
    nbytes = {"forward": x.nbytes + w.nbytes + y.nbytes,
              "input_grad": dy.nbytes + w.nbytes + x.nbytes,
              "weight_grad": x.nbytes + dy.nbytes + w.nbytes}
    return passes, flops, nbytes


def pool_functions(case, rng, torch):
    x = rng.standard_normal(case["input"]).astype(case["dtype"])
    args = (case["kernel"], case["stride"], case["padding"])
    y, idx = fastconv.max_pool2d(x, *args, return_indices=True)
    dy = rng.standard_normal(y.shape).astype(case["dtype"])
    passes = {
        "forward": {"fastconv": lambda: fastconv.max_pool2d(x, *args, return_indices=True)},
        "backward": {"fastconv": lambda: fastconv.max_pool2d_backward(dy, idx, x.shape)},
    }
    if torch is not None:
        xt, dyt, idxt = (torch.from_numpy(a) for a in (x, dy, idx))
        F = torch.nn.functional
        passes["forward"]["torch"] = lambda: F.max_pool2d(xt, *args, return_indices=True)
        passes["backward"]["torch"] = lambda: torch.ops.aten.max_pool2d_with_indices_backward(
            dyt, xt, [case["kernel"]] * 2, [case["stride"]] * 2, [case["padding"]] * 2, [1, 1],
            False, idxt)
    # Bytes that must move at least: read the input, write output and indices (forward);
    # read grad_output and indices, write grad_input (backward).
    nbytes = {"forward": x.nbytes + y.nbytes + idx.nbytes,
              "backward": dy.nbytes + idx.nbytes + x.nbytes}
    return passes, nbytes


def avg_pool_functions(case, rng, torch):
    x = rng.standard_normal(case["input"]).astype(case["dtype"])
    args = (case["kernel"], case["stride"], case["padding"])
    y = fastconv.avg_pool2d(x, *args)
    dy = rng.standard_normal(y.shape).astype(case["dtype"])
    passes = {
        "forward": {"fastconv": lambda: fastconv.avg_pool2d(x, *args)},
        "backward": {"fastconv": lambda: fastconv.avg_pool2d_backward(dy, x.shape, *args)},
    }
    if torch is not None:
        xt, dyt = torch.from_numpy(x), torch.from_numpy(dy)
        passes["forward"]["torch"] = lambda: torch.nn.functional.avg_pool2d(xt, *args)
        passes["backward"]["torch"] = lambda: torch.ops.aten.avg_pool2d_backward(
            dyt, xt, [case["kernel"]] * 2, [case["stride"]] * 2, [case["padding"]] * 2, False,
            True, None)
    nbytes = {"forward": x.nbytes + y.nbytes, "backward": dy.nbytes + x.nbytes}
    return passes, nbytes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=fastconv.get_num_threads())
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--filter", default="", help="only shapes whose name contains this")
    parser.add_argument("--no-torch", action="store_true", help="do not measure PyTorch")
    parser.add_argument("--no-onnxruntime", action="store_true",
                        help="do not measure ONNX Runtime (forward float32 only)")
    parser.add_argument("--json", help="write all results to this file")
    parser.add_argument("--markdown", help="write the table as Markdown (for README.md) to this file")
    args = parser.parse_args(argv)

    torch = set_threads(args.threads, use_torch=not args.no_torch)
    ort = import_onnxruntime(args.threads, wanted=not args.no_onnxruntime)
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    results = []
    probe = measure_fma_peak(args.threads)
    # The peak of this thread count in this dtype (float64: half the lanes on the same units).
    peak = None if probe is None else probe["f32_gflops_n"] / (2 if dtype == np.float64 else 1)
    if peak is not None:
        print(f"measured FMA peak ({probe.get('isa', 'avx2')}): {probe['f32_gflops_1']:.0f} "
              f"GFLOP/s float32 on 1 thread, "
              f"{probe['f32_gflops_n']:.0f} on {args.threads}; {args.dtype} peak here "
              f"{peak:.0f} GFLOP/s")
    bandwidth = measure_memory_bandwidth(args.threads)
    if bandwidth is not None:
        print(f"measured memory bandwidth: read {bandwidth['read_gbs_n']:.0f} GB/s, copy "
              f"{bandwidth['copy_gbs_n']:.0f} GB/s on {args.threads} threads (DRAM; memory-bound "
              f"rows whose inputs are not cached cannot move their bytes faster)")
    context = torch.no_grad() if torch is not None else _nullcontext()

    header = f"{'shape':13s} {'pass':12s} {'fastconv ms':>11s} {'rate (% of peak)':>17s}"
    if torch is not None:
        header += f" {'torch ms':>9s} {'ratio':>6s}"
    print(f"fastconv {fastconv.__version__}, ISA {fastconv.get_isa()}, {args.threads} threads, "
          f"{args.dtype}" + (f", torch {torch.__version__}" if torch is not None else "")
          + (f", onnxruntime {ort[0].__version__}" if ort is not None else ""))
    print(header)
    with context:
        for case in conv_cases(dtype):
            if args.filter not in case["name"]:
                continue
            passes, flops, nbytes = conv_functions(case, rng, torch, ort)
            for pass_name, functions in passes.items():
                results.append(_report(case["name"], "conv", pass_name, time_interleaved(functions),
                                       flops=flops, nbytes=nbytes[pass_name], peak=peak))
        for case in pool_cases(dtype):
            if args.filter not in case["name"]:
                continue
            for op, make in (("max_pool", pool_functions), ("avg_pool", avg_pool_functions)):
                passes, nbytes = make(case, rng, torch)
                for pass_name, functions in passes.items():
                    results.append(_report(case["name"], op, pass_name,
                                           time_interleaved(functions), nbytes=nbytes[pass_name]))

    for key, label in (("ratio", "vs PyTorch"), ("ratio_onnxruntime", "vs ONNX Runtime"),
                       ("ratio_best", "vs the faster peer")):
        for op, pass_name in sorted({(r["op"], r["pass"]) for r in results if key in r}):
            ratios = [r[key] for r in results if r["op"] == op and r["pass"] == pass_name]
            geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
            print(f"geometric mean ratio {label}, {op} {pass_name}: {geomean:.2f} over "
                  f"{len(ratios)} shapes")
    meta = dict(fastconv=fastconv.__version__, isa=fastconv.get_isa(), threads=args.threads,
                dtype=args.dtype, torch=getattr(torch, "__version__", None),
                onnxruntime=ort[0].__version__ if ort is not None else None, cpu=cpu_name(),
                cpus=os.cpu_count(), date=time.strftime("%Y-%m-%d"), fma_peak=probe,
                memory_bandwidth=bandwidth,
                python=sys.version.split()[0])
    if args.json:
        Path(args.json).write_text(json.dumps(dict(meta=meta, results=results), indent=1))
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(meta, results))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def markdown_table(meta, results) -> str:
    """Per operation, one row per shape: fastconv ms / PyTorch ms (ratio) for each pass."""
    lines = [f"Measured {meta['date']} on {meta['cpu']} ({meta['cpus']} CPUs), "
             f"{meta['threads']} threads, {meta['dtype']}, ISA {meta['isa']}, "
             f"PyTorch {meta['torch']}"
             + (f", ONNX Runtime {meta['onnxruntime']}" if meta.get("onnxruntime") else "")
             + ": median ms, fastconv / PyTorch (ratio = PyTorch time / fastconv time)"
             + (" / ORT (ONNX Runtime, forward float32 only)" if meta.get("onnxruntime") else "")
             + (f", and fastconv's % of the measured FMA peak "
                                  f"({meta['fma_peak']['f32_gflops_n']:.0f} GFLOP/s float32 on "
                                  f"{meta['threads']} threads)" if meta.get("fma_peak") else "")
             + "."]
    for op in dict.fromkeys(r["op"] for r in results):
        rows = [r for r in results if r["op"] == op]
        passes = list(dict.fromkeys(r["pass"] for r in rows))
        lines += ["", f"| {op} | " + " | ".join(passes) + " |", "|---" * (len(passes) + 1) + "|"]
        for name in dict.fromkeys(r["name"] for r in rows):
            cells = []
            for pass_name in passes:
                row = next(r for r in rows if r["name"] == name and r["pass"] == pass_name)
                cell = f"{row['fastconv_ms']:.2f}"
                if "torch_ms" in row:
                    cell += f" / {row['torch_ms']:.2f} ({row['ratio']:.2f})"
                if "onnxruntime_ms" in row:
                    cell += f" / ORT {row['onnxruntime_ms']:.2f} ({row['ratio_onnxruntime']:.2f})"
                if "percent_of_peak" in row:
                    cell += f", {row['percent_of_peak']:.0f}%"
                cells.append(cell)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _report(name, op, pass_name, seconds, flops=None, nbytes=None, peak=None):
    fc = seconds["fastconv"]
    row = dict(name=name, op=op, **{"pass": pass_name}, fastconv_ms=fc * 1e3)
    rate = ""
    if flops is not None:
        row["gflops"] = flops / fc / 1e9
        rate = f"{row['gflops']:7.1f} GFLOP/s"
        if peak:
            row["percent_of_peak"] = 100 * row["gflops"] / peak
            rate += f" {row['percent_of_peak']:3.0f}%"
    if nbytes is not None:  # printed where there is no FLOP rate (pooling)
        row["gbytes_per_s"] = nbytes / fc / 1e9
        if flops is None:
            rate = f"{row['gbytes_per_s']:8.1f} GB/s"
    label = pass_name if op == "conv" else f"{op.split('_')[0]} {pass_name}"
    line = f"{name:13s} {label:12s} {fc * 1e3:11.3f} {rate:>12s}"
    if "torch" in seconds:
        row["torch_ms"] = seconds["torch"] * 1e3
        row["ratio"] = seconds["torch"] / fc
        line += f" {row['torch_ms']:9.3f} {row['ratio']:6.2f}"
    if "onnxruntime" in seconds:
        row["onnxruntime_ms"] = seconds["onnxruntime"] * 1e3
        row["ratio_onnxruntime"] = seconds["onnxruntime"] / fc
        line += f"  ORT {row['onnxruntime_ms']:.3f} {row['ratio_onnxruntime']:.2f}"
    peers = [seconds[p] for p in ("torch", "onnxruntime") if p in seconds]
    if len(peers) > 1:
        row["ratio_best"] = min(peers) / fc
        line += f"  best {row['ratio_best']:.2f}"
    print(line, flush=True)
    return row


if __name__ == "__main__":
    main()
