"""Repeated calls do not leak: 10,000 calls of every public kernel (and of a call that raises)
keep the resident memory of a child interpreter flat."""

import pytest

from helpers import child_report, run_child

KERNEL_CALLS = {
    "conv2d": "fastconv.conv2d(x, w, b, padding=1)",
    "conv2d_input_grad": "fastconv.conv2d_input_grad(x.shape, w, dy, padding=1)",
    "conv2d_weight_grad": "fastconv.conv2d_weight_grad(x, w.shape, dy, padding=1)",
    "conv2d_bias_grad": "fastconv.conv2d_bias_grad(dy)",
    "conv_transpose2d": "fastconv.conv_transpose2d(dy, w, b, padding=1)",
    "max_pool2d": "fastconv.max_pool2d(x, 2, return_indices=True)",
    "max_pool2d_backward": "fastconv.max_pool2d_backward(p, idx, x.shape)",
    "avg_pool2d": "fastconv.avg_pool2d(x, 3, 2, 1)",
    "avg_pool2d_backward": "fastconv.avg_pool2d_backward(p, x.shape, 2)",
    "relu": "fastconv.relu(x)",
    "relu_backward": "fastconv.relu_backward(x, x)",
    "matmul": "fastconv.matmul(a, a, transpose_b=True)",
    "sgd_update": "fastconv.kernels.sgd_update(param, a, buf, lr=1e-3, momentum=0.9)",
    "sgd_update_many": "fastconv.kernels.sgd_update_many([param], [a], [buf], lr=1e-3, "
                       "momentum=0.9)",
    "sgd_update_many error": "fastconv.kernels.sgd_update_many([param, param], [a, a], lr=1e-3)",
    "out=": "fastconv.conv2d(x, w, padding=1, out=y)",
    "error": "fastconv.conv2d(x, w[:, :3])",
}


@pytest.mark.parametrize("call", sorted(KERNEL_CALLS))
def test_ten_thousand_calls_keep_memory_flat(call):
    proc = run_child(f"""
        import fastconv.kernels

        def rss_kib():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096 // 1024

        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 4, 12, 12)).astype(np.float32)
        w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
        b = rng.standard_normal(6).astype(np.float32)
        dy = rng.standard_normal((2, 6, 12, 12)).astype(np.float32)
        y = np.empty_like(dy)
        p, idx = fastconv.max_pool2d(x, 2, return_indices=True)
        a = rng.standard_normal((16, 32)).astype(np.float32)
        param, buf = a.copy(), np.zeros_like(a)

        def call():
            try:
                {KERNEL_CALLS[call]}
            except ValueError:
                pass

        for _ in range(1000):  # warm-up: scratch buffers, allocator pools
            call()
        before = rss_kib()
        for _ in range(10000):
            call()
        print(rss_kib() - before)
    """, timeout=300)
    assert proc.returncode == 0, child_report(proc)
    growth_kib = int(proc.stdout.split()[-1])
    # A leak of one 6x12x12 float32 output per call would be 5.6 MB; allow allocator noise.
    assert growth_kib < 1024, f"{call}: resident memory grew by {growth_kib} KiB"
