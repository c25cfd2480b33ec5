"""The buffer pool behind the kernels' fresh outputs: memory of dead arrays is reused, never
while a view still uses it, and the limit bounds what is kept."""

import gc
import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv
from fastconv import _core

SHAPE = (8, 16, 32, 32)  # 512 KiB of float32: pooled (64 KiB and more)


@pytest.fixture(autouse=True)
def restore_limit():
    limit = fastconv.get_buffer_pool_limit()
    yield
    fastconv.set_buffer_pool_limit(limit)


def fresh_output(x):
    return fastconv.max_pool2d(x, 1)  # a copy of x in a fresh pooled array


def test_outputs_are_aligned_contiguous_writeable_and_correct():
    x = np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)
    for _ in range(3):
        y = fresh_output(x)
        assert y.ctypes.data % 64 == 0
        assert y.flags.c_contiguous and y.flags.writeable
        assert y.shape == SHAPE and y.dtype == np.float32
        np.testing.assert_array_equal(y, x)
        y[...] = -1  # the next output reuses this block and must overwrite it
        del y


def test_outputs_can_be_made_read_only_and_writeable_again():
    y = fresh_output(np.ones(SHAPE, np.float32))
    y.setflags(write=False)
    with pytest.raises(ValueError):
        y[0] = 2
    y.setflags(write=True)  # refused for an array on a foreign read-only or unbuffered base
    y[0] = 2
    assert y[0].min() == 2 and y[1].max() == 1


def test_memory_of_a_dead_array_is_reused_for_the_same_size():
    fastconv.set_buffer_pool_limit(1 << 30)
    x = np.ones(SHAPE, np.float32)
    y = fresh_output(x)
    address = y.ctypes.data
    del y
    assert _core.buffer_pool_cached_bytes() >= x.nbytes
    z = fresh_output(x)
    assert z.ctypes.data == address
    np.testing.assert_array_equal(z, x)


def test_a_view_keeps_the_memory_out_of_the_pool():
    fastconv.set_buffer_pool_limit(1 << 30)
    x = np.random.default_rng(1).standard_normal(SHAPE).astype(np.float32)
    y = fresh_output(x)
    address = y.ctypes.data
    view = y[2:5]
    expected = view.copy()
    del y
    gc.collect()
    others = [fresh_output(-x) for _ in range(4)]  # would take the block if it were free
    assert all(o.ctypes.data != address for o in others)
    np.testing.assert_array_equal(view, expected)
    del view, others
    again = [fresh_output(x) for _ in range(5)]  # the view's block is free once more
    assert address in [a.ctypes.data for a in again]


def test_limit_zero_keeps_nothing_and_frees_what_was_kept():
    fastconv.set_buffer_pool_limit(1 << 30)
    x = np.ones(SHAPE, np.float32)
    arrays = [fresh_output(x) for _ in range(3)]
    del arrays
    assert _core.buffer_pool_cached_bytes() >= 3 * x.nbytes
    fastconv.set_buffer_pool_limit(0)
    assert _core.buffer_pool_cached_bytes() == 0
    y = fresh_output(x)
    del y
    assert _core.buffer_pool_cached_bytes() == 0


def test_limit_bounds_the_kept_bytes():
    fastconv.set_buffer_pool_limit(0)
    fastconv.set_buffer_pool_limit(2 * (1 << 20))  # 2 MiB: four 512 KiB blocks
    x = np.ones(SHAPE, np.float32)
    arrays = [fresh_output(x) for _ in range(10)]
    del arrays
    assert 0 < _core.buffer_pool_cached_bytes() <= 2 * (1 << 20)


def test_small_and_empty_outputs():
    x = np.arange(2 * 3 * 4 * 4, dtype=np.float64).reshape(2, 3, 4, 4)
    np.testing.assert_array_equal(fresh_output(x), x)
    empty = fastconv.max_pool2d(np.ones((0, 3, 4, 4), np.float32), 2)
    assert empty.shape == (0, 3, 2, 2)


def test_indices_come_from_the_pool_too():
    x = np.random.default_rng(2).standard_normal(SHAPE).astype(np.float32)
    _, idx = fastconv.max_pool2d(x, 2, return_indices=True)
    assert idx.dtype == np.int64 and idx.ctypes.data % 64 == 0
    _, expected = fastconv.max_pool2d(x.copy(), 2, return_indices=True)
    np.testing.assert_array_equal(idx, expected)


@pytest.mark.parametrize("bad", [-1, 1.5, "1"])
def test_bad_limits_are_refused(bad):
    with pytest.raises((TypeError, ValueError), match="nbytes"):
        fastconv.set_buffer_pool_limit(bad)


def test_environment_variable_sets_the_limit():
    code = "import fastconv; print(fastconv.get_buffer_pool_limit())"
    env = dict(os.environ, FASTCONV_BUFFER_POOL_MB="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert int(out) == 3 << 20
    env["FASTCONV_BUFFER_POOL_MB"] = "lots"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True)
    assert result.returncode != 0 and "FASTCONV_BUFFER_POOL_MB" in result.stderr
