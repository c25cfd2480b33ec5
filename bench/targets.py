"""Check the speed targets of issue 4 against the JSON files of one measuring session, and say
for every missed ratio what meeting it would take.

    python bench/run.py --json f32.json
    python bench/run.py --threads 1 --filter resnet_b1 --json f32_1t.json
    python bench/run.py --dtype float64 --json f64.json
    python bench/train_step.py --json train.json
    python bench/targets.py f32.json --one-thread f32_1t.json --float64 f64.json --train train.json

For a conv row that misses "k x PyTorch", the needed rate is k x PyTorch's GFLOP/s, printed as
a share of the measured FMA peak: above 100% the target cannot be met by any implementation on
this machine, and above about 90% not in practice. For memory-bound rows (pooling, depthwise)
the needed GB/s of the bytes the call must move is printed instead, beside the DRAM copy rate
that run.py's probe measured (where the row's inputs come from memory, as next to PyTorch's
calls, it cannot go faster than that).
"""

from __future__ import annotations

import argparse
import json
import math

LARGE = ("cifar_c2", "cifar_c3", "resnet_b8", "pointwise", "dilated")
PEAK_TARGETS = {"forward": 75, "input_grad": 70, "weight_grad": 60}
GEOMEAN_TARGETS = {"forward": 1.1, "input_grad": 1.2, "weight_grad": 1.5}


def load(path):
    with open(path) as f:
        return json.load(f)


def peak_gflops(meta) -> float | None:
    probe = meta.get("fma_peak")
    if not probe:
        return None
    return probe["f32_gflops_n"] / (2 if meta["dtype"] == "float64" else 1)


def ratio_of(row) -> float | None:
    return row.get("ratio_best", row.get("ratio"))


def need(row, factor, peak, bandwidth=None) -> str:
    """What `factor` x the peer would take, for a row that misses it: in GFLOP/s and % of the
    FMA peak, or, given the probe's memory `bandwidth` (memory-bound rows), in GB/s of the
    bytes the call must move, against the DRAM's copy rate."""
    peer_ms = row["fastconv_ms"] * ratio_of(row)
    if "gflops" in row and bandwidth is None:
        flops = row["gflops"] * row["fastconv_ms"] * 1e6
        needed = factor * flops / (peer_ms * 1e6)
        share = f", {100 * needed / peak:.0f}% of peak" if peak else ""
        return f"needs {needed:.0f} GFLOP/s{share}"
    moved = row["gbytes_per_s"] * row["fastconv_ms"]
    text = f"needs {factor * moved / peer_ms:.1f} GB/s (now {row['gbytes_per_s']:.1f}"
    if bandwidth:
        text += f"; DRAM copies at {bandwidth['copy_gbs_n']:.0f}"
    return text + ")"


class Report:
    def __init__(self):
        self.met = self.missed = 0

    def check(self, ok: bool, text: str) -> None:
        self.met += ok
        self.missed += not ok
        print(f"  [{'met' if ok else 'MISSED'}] {text}")


def conv_targets(data, report: Report) -> None:
    meta, rows = data["meta"], data["results"]
    peak = peak_gflops(meta)
    conv = [r for r in rows if r["op"] == "conv" and ratio_of(r) is not None]
    print(f"float32, {meta['threads']} threads, {meta['date']}, peak {peak:.0f} GFLOP/s")
    for pass_name, target in GEOMEAN_TARGETS.items():
        ratios = [ratio_of(r) for r in conv if r["pass"] == pass_name]
        geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
        peer = "the faster peer" if pass_name == "forward" else "PyTorch"
        report.check(geomean >= target, f"{pass_name} geometric mean {geomean:.2f} vs {peer} "
                                        f"(target {target})")
    low = [r for r in conv if ratio_of(r) < 0.9]
    report.check(not low, "no shape below 0.9x" + "".join(
        f"\n      {r['name']} {r['pass']} {ratio_of(r):.2f} ({need(r, 0.9, peak)})" for r in low))
    for r in conv:
        if r["name"] in LARGE and peak:
            target = PEAK_TARGETS[r["pass"]]
            report.check(r["percent_of_peak"] >= target,
                         f"{r['name']} {r['pass']} {r['percent_of_peak']:.0f}% of peak "
                         f"(target {target}%)")
    for r in rows:
        memory_bound = r["op"] != "conv" or r["name"] == "depthwise"
        if memory_bound and r.get("ratio") is not None:
            factor = 5 if (r["op"] == "max_pool" and r["pass"] == "forward") else 2
            ok = r["ratio"] >= factor
            bandwidth = meta.get("memory_bandwidth") if "gbytes_per_s" in r else None
            report.check(ok, f"{r['op']} {r['name']} {r['pass']} {r['ratio']:.2f}x PyTorch "
                             f"(target {factor}x)"
                             + ("" if ok else f"; {need(r, factor, peak, bandwidth)}"))


def one_thread_target(two, one, report: Report) -> None:
    def forward(data):
        return next(r for r in data["results"] if r["name"] == "resnet_b1"
                    and r["pass"] == "forward")
    share = forward(two)["fastconv_ms"] / forward(one)["fastconv_ms"]
    report.check(share <= 0.6, f"resnet_b1 forward: 2 threads take {share:.2f} of 1 thread's "
                               f"time (target <= 0.6)")


def float64_targets(data, report: Report) -> None:
    peak = peak_gflops(data["meta"])
    print(f"float64, peak {peak:.0f} GFLOP/s")
    for r in data["results"]:
        if r["op"] == "conv" and r.get("ratio") is not None:
            ok = r["ratio"] >= 2
            report.check(ok, f"{r['name']} {r['pass']} {r['ratio']:.2f}x PyTorch (target 2x)"
                             + ("" if ok else f"; {need(r, 2, peak)}"))


def train_targets(data, report: Report) -> None:
    print(f"training steps, {data['threads']} threads")
    for r in data["results"]:
        if "ratio" in r:
            report.check(r["ratio"] >= 1.5, f"{r['name']} step {r['fastconv_ms']:.1f} ms, "
                                            f"{r['ratio']:.2f}x PyTorch (target 1.5x)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("float32", help="bench/run.py --json output (float32, 2 threads)")
    parser.add_argument("--one-thread", help="bench/run.py --threads 1 output (resnet_b1)")
    parser.add_argument("--float64", help="bench/run.py --dtype float64 output")
    parser.add_argument("--train", help="bench/train_step.py --json output")
    args = parser.parse_args(argv)
    report = Report()
    f32 = load(args.float32)
    conv_targets(f32, report)
    if args.one_thread:
        one_thread_target(f32, load(args.one_thread), report)
    if args.float64:
        float64_targets(load(args.float64), report)
    if args.train:
        train_targets(load(args.train), report)
    print(f"{report.met} targets met, {report.missed} missed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
