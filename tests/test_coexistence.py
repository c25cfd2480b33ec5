"""fastconv beside other thread pools and processes: fork children, threadpoolctl, NumPy's
OpenBLAS, PyTorch and scikit-learn imported in either order, and many Python threads at once.
Every scenario that could hang or abort runs in a child interpreter with a timeout."""

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastconv
from helpers import child_report, run_child


def run_plain_child(code, timeout=120):
    """Like run_child, but imports nothing first (the import order is the test)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)


FORK_CHILD = """
import multiprocessing as mp
rng = np.random.default_rng(0)
x = rng.standard_normal((8, 16, 24, 24)).astype(np.float32)
w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
{before}
want = fastconv.conv2d(x, w, padding=1)
want_pool = fastconv.max_pool2d(x, 2, return_indices=True)

def child(queue):
    y = fastconv.conv2d(x, w, padding=1)
    p, i = fastconv.max_pool2d(x, 2, return_indices=True)
    queue.put((float(np.abs(y - want).max()), bool(np.array_equal(p, want_pool[0])),
               bool(np.array_equal(i, want_pool[1])), fastconv.get_num_threads()))

ctx = mp.get_context("fork")
queue = ctx.Queue()
proc = ctx.Process(target=child, args=(queue,))
proc.start()
proc.join(60)
assert proc.exitcode == 0, f"fork child: exit code {{proc.exitcode}} (None: it hung)"
diff, pool_equal, indices_equal, threads = queue.get(timeout=10)
print(diff, pool_equal, indices_equal, threads)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_fork_child_of_a_process_that_ran_threads_runs_the_kernels():
    """GNU OpenMP's pool does not survive fork: the child runs the kernels on one thread
    instead of hanging in its first parallel region."""
    proc = run_child(FORK_CHILD.format(before="fastconv.set_num_threads(2)"), timeout=120)
    assert proc.returncode == 0, child_report(proc)
    diff, pool_equal, indices_equal, threads = proc.stdout.split()
    assert float(diff) <= 1e-4 and pool_equal == "True" and indices_equal == "True", proc.stdout
    assert threads == "1", proc.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_fork_before_any_threads_keeps_the_thread_count():
    code = FORK_CHILD.format(before="").replace(
        "want = fastconv.conv2d(x, w, padding=1)",
        "parent_threads = fastconv.get_num_threads()\nwant = None")
    code = code.replace("float(np.abs(y - want).max())", "0.0")
    code = code.replace("print(diff,", "print(threads == parent_threads, diff,")
    code = code.replace("want_pool = fastconv.max_pool2d(x, 2, return_indices=True)",
                        "want_pool = (None, None)")
    code = code.replace("bool(np.array_equal(p, want_pool[0]))", "True")
    code = code.replace("bool(np.array_equal(i, want_pool[1]))", "True")
    proc = run_child(code, timeout=120)
    assert proc.returncode == 0, child_report(proc)
    assert proc.stdout.split()[0] == "True", proc.stdout


def test_threadpoolctl_sees_and_limits_the_pool():
    pytest.importorskip("threadpoolctl")
    proc = run_child("""
        from threadpoolctl import threadpool_info, threadpool_limits
        x = np.random.default_rng(1).standard_normal((4, 8, 16, 16))
        w = np.random.default_rng(2).standard_normal((8, 8, 3, 3))
        y = fastconv.conv2d(x, w)
        apis = [i["user_api"] for i in threadpool_info()]
        assert "openmp" in apis, threadpool_info()
        before = fastconv.get_num_threads()
        with threadpool_limits(1):
            inside = fastconv.get_num_threads()
            np.testing.assert_allclose(fastconv.conv2d(x, w), y, rtol=1e-12, atol=1e-12)
        print(before, inside, fastconv.get_num_threads())
    """)
    assert proc.returncode == 0, child_report(proc)
    before, inside, after = map(int, proc.stdout.split())
    assert inside == 1 and after == before, proc.stdout


ORDERS = [("numpy", "fastconv"), ("fastconv", "numpy"), ("torch", "sklearn", "fastconv"),
          ("fastconv", "sklearn", "torch")]


@pytest.mark.parametrize("order", ORDERS, ids=lambda o: "-".join(o))
def test_imports_in_either_order_then_correct_results(order):
    """fastconv's libgomp beside NumPy's OpenBLAS and (when installed) PyTorch's and
    scikit-learn's own OpenMP runtimes: no error, no hang, right answers in every pool."""
    proc = run_plain_child(f"""
        import importlib, sys
        loaded = {{}}
        for name in {order!r}:
            try:
                loaded[name] = importlib.import_module(name)
            except ImportError:
                pass
        import numpy as np
        import fastconv
        sys.path.insert(0, {repr(__file__.rsplit('/', 1)[0])})
        import reference
        rng = np.random.default_rng(0)
        x = rng.standard_normal((4, 8, 20, 20))
        w = rng.standard_normal((12, 8, 3, 3))
        a = rng.standard_normal((300, 300))
        for _ in range(3):
            np.testing.assert_allclose(fastconv.conv2d(x, w, padding=1),
                                       reference.conv2d(x, w, padding=1), rtol=1e-10, atol=1e-10)
            np.testing.assert_allclose(a @ a, fastconv.matmul(a, a), rtol=1e-10, atol=1e-9)
        if "torch" in loaded:
            torch = loaded["torch"]
            want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1)
            np.testing.assert_allclose(fastconv.conv2d(x, w, padding=1), want.numpy(),
                                       rtol=1e-10, atol=1e-10)
        print("ok", sorted(loaded))
    """)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), child_report(proc)


def test_many_python_threads_share_the_cores(isa):
    """8 Python threads calling conv2d and max_pool2d at once: the serial results, and never
    more than get_num_threads() threads claimed beyond one per calling thread (no
    threads x threads)."""
    rng = np.random.default_rng(5)
    jobs = [(rng.standard_normal((4, 16, 32, 32)).astype(np.float32),
             rng.standard_normal((16, 16, 3, 3)).astype(np.float32)) for _ in range(4)]
    serial = [(fastconv.conv2d(x, w, padding=1), fastconv.max_pool2d(x, 3, 2, 1,
                                                                     return_indices=True))
              for x, w in jobs]
    fastconv._core._peak_threads_claimed(True)
    errors, results = [], {}
    barrier = threading.Barrier(8)

    def worker(tid):
        try:
            barrier.wait()
            for rep in range(4):
                for j, (x, w) in enumerate(jobs):
                    results[tid, rep, j] = (fastconv.conv2d(x, w, padding=1),
                                            fastconv.max_pool2d(x, 3, 2, 1, return_indices=True))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert len(results) == 8 * 4 * len(jobs)
    for (_, _, j), (y, (p, i)) in results.items():
        np.testing.assert_array_equal(y, serial[j][0])
        np.testing.assert_array_equal(p, serial[j][1][0])
        np.testing.assert_array_equal(i, serial[j][1][1])
    peak = fastconv._core._peak_threads_claimed(False)
    assert 1 <= peak <= fastconv.get_num_threads() + 8 - 1, peak
