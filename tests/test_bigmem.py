"""Index arithmetic is 64-bit: inputs of more than 2^31 elements, checked on slices against the
references. They need about 16 GiB and half a minute each, so they run only when
FASTCONV_BIG_TESTS=1 (CI sets it for its first run of the suite) and enough memory is free;
each runs in a child interpreter, so that running out of memory fails it cleanly."""

import os
import textwrap

import pytest

from helpers import child_report, run_child

pytestmark = pytest.mark.skipif(os.environ.get("FASTCONV_BIG_TESTS") != "1",
                                reason="set FASTCONV_BIG_TESTS=1 (needs ~16 GiB free)")


def _available_gib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return 0.0


@pytest.fixture(autouse=True)
def _enough_memory():
    if _available_gib() < 17:
        pytest.skip(f"only {_available_gib():.1f} GiB of memory available")


# Rows differ by a per-row offset (a wrong row offset reads wrong values), values by a random
# row; filled in place, without temporaries.
FILL = """
import reference as ref

def filled(shape, seed):
    x = np.empty(shape, np.float32)
    rows = x.reshape(-1, shape[-1])
    row = np.random.default_rng(seed).standard_normal(shape[-1]).astype(np.float32)
    offsets = (np.arange(rows.shape[0]) % 4099).astype(np.float32) * np.float32(1e-3)
    np.add(row[None, :], offsets[:, None], out=rows)
    return x
"""


def test_max_pool2d_on_a_plane_of_more_than_2_31_elements():
    proc = run_child(FILL + textwrap.dedent("""
        H, W = 32769, 65537                      # one plane of 2,147,581,953 elements
        x = filled((1, 1, H, W), 0)
        y, idx = fastconv.max_pool2d(x, 2, return_indices=True)
        assert y.shape == (1, 1, H // 2, W // 2), y.shape
        tail = x[:, :, H - 5:H - 1, :].copy()      # the last two output rows' windows
        del x                                      # y, idx and dx: 15 GiB
        want, want_idx = ref.max_pool2d(tail, 2, return_indices=True)
        np.testing.assert_array_equal(y[:, :, -2:], want)
        np.testing.assert_array_equal(idx[:, :, -2:], want_idx + (H - 5) * W)
        assert idx.max() > 2**31, idx.max()
        dx = fastconv.max_pool2d_backward(y, idx, (1, 1, H, W))
        np.testing.assert_array_equal(dx[0, 0, H - 5:H - 1].reshape(-1)[want_idx.reshape(-1)],
                                      want.reshape(-1))
        print("ok")
    """), timeout=900)
    assert proc.returncode == 0 and "ok" in proc.stdout, child_report(proc)


def test_conv2d_on_a_batch_of_more_than_2_31_elements():
    proc = run_child(FILL + textwrap.dedent("""
        N, H, W = 8193, 512, 512                  # 2,147,745,792 elements
        x = filled((N, 1, H, W), 1)
        w = np.random.default_rng(2).standard_normal((1, 1, 3, 3)).astype(np.float32)
        p = dict(stride=2, padding=1)
        y = fastconv.conv2d(x, w, **p)
        last = x[-2:].astype(np.float64)
        del x
        np.testing.assert_allclose(y[-2:], ref.conv2d(last, w, **p), rtol=1e-5, atol=1e-4)
        dx = fastconv.conv2d_input_grad((N, 1, H, W), w, y, **p)
        np.testing.assert_allclose(dx[-2:], ref.conv2d_input_grad(last.shape, w, y[-2:], **p),
                                   rtol=1e-5, atol=1e-4)
        print("ok")
    """), timeout=900)
    assert proc.returncode == 0 and "ok" in proc.stdout, child_report(proc)
