"""pytest configuration for the fastconv test-suite.

* ``isa`` fixture: every test that takes it runs once per ISA listed by
  ``fastconv.available_isas()``; the ISA is selected with ``fastconv.set_isa``
  and the original one is restored afterwards.
* ``algorithm`` fixture: the test runs once with the GEMM path only and once with
  Winograd wherever it applies (``fastconv.set_algorithm``), then restores the choice.
* an autouse fixture restores the ISA and the algorithm after every test and sets the
  start-up thread count before and after it, so that no test leaks global state into others.
* tolerance / layout helpers live in ``helpers.py`` and are re-exported here.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import fastconv  # noqa: E402

from helpers import assert_close, tols, with_layout  # noqa: E402,F401


def _isas():
    isas = list(fastconv.available_isas())
    return isas


def pytest_generate_tests(metafunc):
    if "isa" in metafunc.fixturenames:
        metafunc.parametrize("isa", _isas(), indirect=True)
    if "algorithm" in metafunc.fixturenames:
        metafunc.parametrize("algorithm", ["gemm", "winograd"], indirect=True)


@pytest.fixture
def isa(request):
    """Run the test under ISA ``request.param``; restore the previous ISA after."""
    original = fastconv.get_isa()
    fastconv.set_isa(request.param)
    assert fastconv.get_isa() == request.param
    try:
        yield request.param
    finally:
        fastconv.set_isa(original)


@pytest.fixture
def algorithm(request):
    """Run the test with convolution algorithm ``request.param``; restore the previous one."""
    original = fastconv.get_algorithm()
    fastconv.set_algorithm(request.param)
    try:
        yield request.param
    finally:
        fastconv.set_algorithm(original)


# The thread count at start-up. A library that shares fastconv's libgomp (PyTorch's wheel
# loads one of the same soname) lowers it for the calling thread with its own
# omp_set_num_threads (torch.set_num_threads(1) in the parity tests): every test starts from
# this count again, so that the multithreaded paths stay tested after such a module.
_THREADS_AT_START = fastconv.get_num_threads()


@pytest.fixture(autouse=True)
def _restore_global_state():
    isa0 = fastconv.get_isa()
    algorithm0 = fastconv.get_algorithm()
    fastconv.set_num_threads(_THREADS_AT_START)
    yield
    if fastconv.get_algorithm() != algorithm0:
        fastconv.set_algorithm(algorithm0)
    if fastconv.get_isa() != isa0:
        fastconv.set_isa(isa0)
    fastconv.set_num_threads(_THREADS_AT_START)


@pytest.fixture
def rng(request):
    """A numpy Generator seeded from the test's node id (stable across runs)."""
    import zlib
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def pytest_report_header(config):
    try:
        return [f"fastconv {getattr(fastconv, '__version__', '?')} from {fastconv.__file__}",
                f"fastconv ISAs available: {fastconv.available_isas()}, in use: "
                f"{fastconv.get_isa()}, threads: {fastconv.get_num_threads()}"]
    except Exception as exc:  # pragma: no cover - only for the header
        return [f"fastconv header failed: {exc!r}"]
