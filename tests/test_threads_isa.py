"""Thread-count and ISA controls, show_config, concurrent use from Python threads."""

import platform
import re

import numpy as np
import pytest

import fastconv
import reference as ref
from helpers import assert_close, child_report, run_child


def _workload(dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 32, 23, 21)).astype(dtype)
    w = rng.standard_normal((18, 16, 3, 3)).astype(dtype)
    b = rng.standard_normal(18).astype(dtype)
    p = dict(stride=1, padding=1, groups=2)
    go = rng.standard_normal((3, 18, 23, 21)).astype(dtype)
    wt = rng.standard_normal((32, 5, 3, 3)).astype(dtype)
    px = rng.standard_normal((3, 32, 23, 21)).astype(dtype)
    idx = np.asarray(ref.max_pool2d(go, 3, 1, 1, return_indices=True)[1])
    return [
        ("conv2d", lambda: fastconv.conv2d(x, w, b, **p), 144),
        ("conv2d_input_grad", lambda: fastconv.conv2d_input_grad(x.shape, w, go, **p), 81),
        ("conv2d_weight_grad", lambda: fastconv.conv2d_weight_grad(x, w.shape, go, **p),
         3 * 23 * 21),
        ("conv_transpose2d", lambda: fastconv.conv_transpose2d(x, wt, None, stride=2, padding=1,
                                                               output_padding=1), 288),
        ("max_pool2d", lambda: fastconv.max_pool2d(px, 3, 2, 1, return_indices=True), 1),
        ("avg_pool2d", lambda: fastconv.avg_pool2d(px, 3, 2, 1, ceil_mode=True), 9),
        ("avg_pool2d_backward",
         lambda: fastconv.avg_pool2d_backward(go, go.shape, 3, 1, 1, count_include_pad=False), 9),
        ("max_pool2d_backward", lambda: fastconv.max_pool2d_backward(go, idx, go.shape), 9),
    ]


def _as_list(r):
    return list(r) if isinstance(r, tuple) else [r]


# A build without OpenMP has exactly one thread, whatever is asked for.
OPENMP = fastconv._core.build_info()["openmp"]


def test_num_threads_roundtrip():
    n0 = fastconv.get_num_threads()
    assert isinstance(n0, int) and n0 >= 1
    try:
        for n in (1, 2, 3, 1):
            fastconv.set_num_threads(n)
            assert fastconv.get_num_threads() == (n if OPENMP else 1)
    finally:
        fastconv.set_num_threads(n0)
    assert fastconv.get_num_threads() == n0


@pytest.mark.parametrize("bad", [0, -1, -100])
def test_set_num_threads_rejects_non_positive(bad):
    n0 = fastconv.get_num_threads()
    with pytest.raises(ValueError):
        fastconv.set_num_threads(bad)
    assert fastconv.get_num_threads() == n0


@pytest.mark.parametrize("bad", ["2", 2.0, None])
def test_set_num_threads_rejects_non_int(bad):
    n0 = fastconv.get_num_threads()
    with pytest.raises(TypeError):
        fastconv.set_num_threads(bad)
    assert fastconv.get_num_threads() == n0


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_one_vs_two_threads(dtype, isa):
    n0 = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(1)
        one = [(name, _as_list(f()), red) for name, f, red in _workload(dtype)]
        fastconv.set_num_threads(2)
        two = [_as_list(f()) for _, f, _ in _workload(dtype)]
    finally:
        fastconv.set_num_threads(n0)
    for (name, a, red), b in zip(one, two):
        for oa, ob in zip(a, b):
            if oa.dtype == np.int64:
                np.testing.assert_array_equal(oa, ob, err_msg=name)
            else:
                assert_close(ob, oa.astype(np.float64), dtype, red, name)


def test_omp_num_threads_env():
    proc = run_child("print('NT', fastconv.get_num_threads())", {"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, child_report(proc)
    assert re.search(r"^NT 1$", proc.stdout, re.M), child_report(proc)
    proc = run_child("print('NT', fastconv.get_num_threads())", {"OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, child_report(proc)
    assert re.search(r"^NT 2$" if OPENMP else r"^NT 1$", proc.stdout, re.M), child_report(proc)


def test_available_isas():
    isas = fastconv.available_isas()
    assert isinstance(isas, (list, tuple))
    assert "baseline" in isas
    assert all(isinstance(s, str) for s in isas)
    assert len(set(isas)) == len(isas)
    assert fastconv.get_isa() in isas


def test_set_isa_roundtrip():
    orig = fastconv.get_isa()
    try:
        for name in fastconv.available_isas():
            fastconv.set_isa(name)
            assert fastconv.get_isa() == name
    finally:
        fastconv.set_isa(orig)
    assert fastconv.get_isa() == orig


@pytest.mark.parametrize("bad", ["bogus", "", "AVX512-nonexistent", "avx9000"])
def test_set_isa_rejects_unknown(bad):
    orig = fastconv.get_isa()
    with pytest.raises(ValueError):
        fastconv.set_isa(bad)
    assert fastconv.get_isa() == orig


@pytest.mark.parametrize("name", ["avx2", "avx512"])
def test_set_isa_rejects_unsupported_known_name(name):
    """Known names; on a CPU that cannot run one, set_isa must refuse it."""
    if name in fastconv.available_isas():
        pytest.skip(f"this CPU supports {name}")
    with pytest.raises(ValueError):
        fastconv.set_isa(name)


ISA_CHILD = """
import reference as ref
print("ISA", fastconv.get_isa())
rng = np.random.default_rng(0)
for dt in (np.float32, np.float64):
    x = rng.standard_normal((2, 5, 9, 17)).astype(dt)
    w = rng.standard_normal((13, 5, 3, 3)).astype(dt)
    b = rng.standard_normal(13).astype(dt)
    got = fastconv.conv2d(x, w, b, padding=1, stride=(1, 2))
    want = ref.conv2d(x, w, b, padding=1, stride=(1, 2))
    tol = 1e-4 if dt == np.float32 else 1e-10
    assert got.dtype == dt and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 3)
    m, i = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    wm, wi = ref.max_pool2d(x, 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(m, wm.astype(dt))
    np.testing.assert_array_equal(i, wi)
print("MATCH")
"""


@pytest.mark.parametrize("name", ["baseline", "avx2"])
def test_fastconv_isa_env(name):
    if name not in fastconv.available_isas():
        pytest.skip(f"{name} not available on this CPU")
    proc = run_child(ISA_CHILD, {"FASTCONV_ISA": name})
    assert proc.returncode == 0, child_report(proc)
    assert re.search(rf"^ISA {name}$", proc.stdout, re.M), child_report(proc)
    assert "MATCH" in proc.stdout, child_report(proc)


def test_default_isa_is_best_available():
    """Without FASTCONV_ISA the fastest available path is used (avx512, else avx2, when
    possible)."""
    proc = run_child("print('ISA', fastconv.get_isa()); print('AV', fastconv.available_isas())",
                     {"FASTCONV_ISA": None})
    assert proc.returncode == 0, child_report(proc)
    isa = re.search(r"^ISA (\S+)$", proc.stdout, re.M).group(1)
    available = fastconv.available_isas()
    best = next((name for name in ("avx512", "avx2") if name in available), "baseline")
    assert isa == best, child_report(proc)


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 ISAs")
def test_available_isas_follow_the_cpu():
    """The ISAs detected at import are exactly those the CPU's flags allow (Linux)."""
    flags = _cpu_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo")
    available = set(fastconv.available_isas())
    avx2 = {"avx2", "fma"} <= flags
    assert ("avx2" in available) == avx2
    assert ("avx512" in available) == (avx2 and {"avx512f", "avx512vl"} <= flags)


def _version():
    v = getattr(fastconv, "__version__", None)
    if v is None:
        from importlib.metadata import version
        v = version("fastconv")
    return v


def test_show_config(capsys):
    orig = fastconv.get_isa()
    outputs = {}
    try:
        for name in fastconv.available_isas():
            fastconv.set_isa(name)
            assert fastconv.show_config() is None
            out = capsys.readouterr().out
            assert _version() in out
            assert re.search(r"(?i)openmp", out)
            assert re.search(r"(?i)thread", out)
            assert str(fastconv.get_num_threads()) in out
            assert name in out
            for avail in fastconv.available_isas():
                assert avail in out
            outputs[name] = out.splitlines()
    finally:
        fastconv.set_isa(orig)
    # the "ISA in use" report follows set_isa: the lines that change between ISAs name them
    names = list(outputs)
    for a in names:
        for b in names:
            if a == b:
                continue
            changed = [ln for ln in outputs[a] if ln not in outputs[b]]
            assert changed, f"show_config output identical under {a!r} and {b!r}"
            assert any(re.search(rf"\b{re.escape(a)}\b", ln) for ln in changed), changed
    n0 = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(n0 + 5)
        fastconv.show_config()
        out = capsys.readouterr().out
        assert re.search(rf"threads:\s+{n0 + 5 if OPENMP else 1}\b", out), out
    finally:
        fastconv.set_num_threads(n0)


def test_version_string():
    v = _version()
    assert isinstance(v, str) and re.match(r"^\d+\.\d+", v)
