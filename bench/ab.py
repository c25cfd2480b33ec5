"""Compare two builds of fastconv._core in one process, calls interleaved (A, B, A, B, ...).

    python bench/ab.py OLD/_core.so NEW/_core.so [fwd,igrad,wgrad]

On a shared, noisy machine, separate runs of the benchmark differ by 10-30%; two builds loaded
side by side (each .so keeps its own symbols) and timed call by call see the same noise. Prints
per shape the median ms of A and B and A/B (> 1: B is faster). Build A from the old commit
(e.g. in a git worktree) and B from the working tree.
"""
import importlib.util, sys, time, statistics
import numpy as np
def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); return m
A = load(sys.argv[1], "a._core"); B = load(sys.argv[2], "b._core")
for m in (A, B): m.set_num_threads(2)
rng = np.random.default_rng(0)
shapes = {"cifar_c1": (32,3,32,32,32,3,1,1,1), "cifar_c2": (32,32,32,32,32,3,1,1,1), "resnet_b8": (8,64,56,56,64,3,1,1,1),
          "resnet_down": (8,64,56,56,128,3,2,1,1), "pointwise": (8,128,28,28,256,1,1,0,1), "stem7x7": (8,3,224,224,64,7,2,3,1),
          "dilated": (8,64,32,32,64,3,1,2,2), "lenet_c2": (64,6,14,14,16,5,1,0,1)}
passes = sys.argv[3].split(",") if len(sys.argv) > 3 else ["fwd", "wgrad"]
for name, (N,C,H,W,K,R,st,p,d) in shapes.items():
    x = rng.standard_normal((N,C,H,W)).astype(np.float32); w = rng.standard_normal((K,C,R,R)).astype(np.float32)
    Ho = (H + 2*p - d*(R-1) - 1)//st + 1
    y = np.empty((N,K,Ho,Ho), np.float32); dy = rng.standard_normal(y.shape).astype(np.float32)
    dw = np.empty_like(w); dx = np.empty_like(x)
    line = [name]
    for ps in passes:
        f = {"fwd": lambda m: m.conv2d_forward(x, w, None, y, (st,st), (p,p), (d,d), 1),
             "igrad": lambda m: m.conv2d_input_grad(w, dy, None, dx, (st,st), (p,p), (d,d), 1),
             "wgrad": lambda m: m.conv2d_weight_grad(x, dy, dw, (st,st), (p,p), (d,d), 1)}[ps]
        ts = {"A": [], "B": []}
        for m in (A, B, A, B): f(m)
        for _ in range(15):
            for key, m in (("A", A), ("B", B)):
                t0 = time.perf_counter(); f(m); ts[key].append(time.perf_counter() - t0)
        a, b = statistics.median(ts["A"]) * 1e3, statistics.median(ts["B"]) * 1e3
        line.append(f"{ps} {a:.2f}/{b:.2f} ({a/b:.2f}x)")
    print("  ".join(line), flush=True)
