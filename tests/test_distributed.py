"""fastconv.distributed: the sampler and loader sharding (in this process), the gradient
reducer on one rank, and whole runs under ``mpiexec -n 2`` (tests/distributed_worker.py).

The mpiexec tests need mpi4py and an MPI launcher (``pip install ".[mpi]"``); without them
they skip, unless FASTCONV_REQUIRE_MPI=1 (as .ci/run sets), where a missing MPI fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv import distributed as dist
from fastconv import nn
from fastconv.data import ArrayDataset, DataLoader, RandomSampler, SequentialSampler

HERE = Path(__file__).resolve().parent
WORKER = HERE / "distributed_worker.py"


# ---------------------------------------------------------------------------------------------
# DistributedSampler and shard_loader (no MPI needed: rank and world size given)
# ---------------------------------------------------------------------------------------------

def _epoch(sampler) -> np.ndarray:
    chunks = list(sampler)
    return np.concatenate(chunks) if chunks else np.empty(0, np.int64)


@pytest.mark.parametrize("n", [0, 1, 5, 64, 65, 101])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_sampler_covers_every_sample_exactly_once_per_epoch(n, world):
    shards = [dist.DistributedSampler(n, rank, world, seed=7) for rank in range(world)]
    for epoch in range(3):
        for s in shards:
            s.set_epoch(epoch)
        parts = [_epoch(s) for s in shards]
        assert [len(p) for p in parts] == [len(s) for s in shards]
        assert sorted(np.concatenate(parts).tolist()) == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_sampler_order_changes_with_the_epoch_and_repeats_with_the_seed():
    def orders(seed):
        s = dist.DistributedSampler(100, 1, 2, seed=seed)
        result = []
        for epoch in range(3):
            s.set_epoch(epoch)
            result.append(_epoch(s).tolist())
        return result
    first, again, other = orders(5), orders(5), orders(6)
    assert first == again
    assert first[0] != first[1] != first[2]
    assert first != other


@pytest.mark.parametrize("world", [2, 3])
def test_sampler_drop_last_gives_equal_shards(world):
    shards = [dist.DistributedSampler(101, r, world, seed=1, drop_last=True) for r in range(world)]
    parts = [_epoch(s) for s in shards]
    assert len({len(p) for p in parts}) == 1 and len(parts[0]) == len(shards[0]) == 101 // world
    assert len(set(np.concatenate(parts).tolist())) == 101 // world * world
    # With the global batch size: the last global batch that is not full is dropped.
    batched = [dist.DistributedSampler(101, r, world, seed=1, drop_last=True, batch_size=12)
               for r in range(world)]
    assert sum(len(_epoch(s)) for s in batched) == 96


def test_sampler_shards_a_given_sampler_and_checks_its_arguments():
    base = SequentialSampler(10)
    assert _epoch(dist.DistributedSampler(base, 1, 3)).tolist() == [1, 4, 7]
    assert _epoch(dist.DistributedSampler(10, 0, 2, shuffle=False)).tolist() == [0, 2, 4, 6, 8]
    with pytest.raises(ValueError, match="rank"):
        dist.DistributedSampler(10, 2, 2)
    with pytest.raises(ValueError, match="world_size"):
        dist.DistributedSampler(10, 0, 0)
    with pytest.raises(ValueError, match="batch_size"):
        dist.DistributedSampler(10, 0, 2, batch_size=0)
    for bad in ("10", 2.5, None, iter(range(3))):
        with pytest.raises((TypeError, ValueError), match="sampler"):
            dist.DistributedSampler(bad, 0, 2)


class _FakeComm:
    """Just enough of a communicator for shard_loader."""

    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size


@pytest.mark.parametrize("n,batch,world", [(65, 8, 2), (64, 8, 2), (50, 12, 3), (7, 4, 4)])
def test_ranks_batches_together_are_the_single_process_batches(n, batch, world):
    data = ArrayDataset(np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1), np.arange(n))
    single = DataLoader(data, batch_size=batch, shuffle=True, seed=11, prefetch=0)
    ranks = [dist.shard_loader(single, _FakeComm(r, world)) for r in range(world)]
    for epoch in range(2):
        single.set_epoch(epoch)
        for loader in ranks:
            loader.set_epoch(epoch)
        expected = [sorted(y.tolist()) for _, y in single]
        shards = [[y.tolist() for _, y in loader] for loader in ranks]
        steps = max(len(s) for s in shards)
        assert steps == len(expected) == len(ranks[0])
        together = [sorted(sum((s[i] for s in shards if i < len(s)), [])) for i in range(steps)]
        assert together == expected


def test_shard_loader_needs_a_global_batch_that_splits_over_the_ranks():
    data = ArrayDataset(np.zeros((10, 1, 2, 2), np.float32), np.zeros(10, np.int64))
    loader = DataLoader(data, batch_size=9)
    with pytest.raises(ValueError, match="multiple of 2"):
        dist.shard_loader(loader, _FakeComm(0, 2))
    evaluation = dist.shard_loader(loader, _FakeComm(1, 2), global_batch=False)
    assert evaluation.batch_size == 5 and len(evaluation.sampler) == 5
    assert dist.shard_loader(loader, _FakeComm(0, 1)) is loader
    with pytest.raises(TypeError, match="DataLoader"):
        dist.shard_loader([1, 2], _FakeComm(0, 2))


def test_default_threads_split_the_cores_between_the_ranks_of_a_machine(monkeypatch):
    monkeypatch.setattr(dist, "_cores", lambda: 16)
    monkeypatch.setattr(dist, "local_world_size", lambda comm=None: 4)
    assert dist.default_num_threads() == 4
    monkeypatch.setattr(dist, "local_world_size", lambda comm=None: 32)
    assert dist.default_num_threads() == 1


def test_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("FASTCONV_DISTRIBUTED_TIMEOUT", raising=False)
    assert dist.get_timeout() == 300.0
    monkeypatch.setenv("FASTCONV_DISTRIBUTED_TIMEOUT", "2.5")
    assert dist.get_timeout() == 2.5
    for bad in ("0", "-1", "soon"):
        monkeypatch.setenv("FASTCONV_DISTRIBUTED_TIMEOUT", bad)
        with pytest.raises(ValueError, match="FASTCONV_DISTRIBUTED_TIMEOUT"):
            dist.get_timeout()


def test_without_mpi4py_the_error_says_what_to_install(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_mpi4py(name, *args, **kwargs):
        if name.startswith("mpi4py"):
            raise ImportError("No module named 'mpi4py'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_mpi4py)
    assert not dist.is_available()
    with pytest.raises(ImportError, match=r"fastconv\[mpi\]"):
        dist.init()


# ---------------------------------------------------------------------------------------------
# The gradient reducer on one rank (COMM_SELF): buckets, weights, missing gradients
# ---------------------------------------------------------------------------------------------

def _self_comm():
    if not dist.is_available():
        pytest.skip("mpi4py is not installed")
    from mpi4py import MPI
    return MPI.COMM_SELF


def _model(seed=0):
    fastconv.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(64, 3), nn.Linear(3, 2))


@pytest.mark.parametrize("bucket_mb", [4.0, 200 / 2**20, 1 / 2**20])
def test_reducer_on_one_rank_gives_back_the_gradients(bucket_mb):
    comm = _self_comm()
    model = _model()
    params = list(model.parameters())
    reducer = dist.GradientReducer(params, comm, bucket_mb)
    members = [id(p) for b in reducer.buckets for p in b.params]
    assert sorted(members) == sorted(map(id, params)) and len(set(members)) == len(params)
    if bucket_mb < 1e-5:
        assert len(reducer.buckets) == len(params)
    x = fastconv.Tensor(np.random.default_rng(0).normal(size=(5, 1, 4, 4)).astype(np.float32))
    expected = []
    for weight in (5.0, 0.5):
        for p in params:
            p.grad = None
        model(x).sum().backward()
        expected = [p.grad.data.copy() for p in params]
        for p in params:
            p.grad = None
        reducer.prepare(weight)
        model(x).sum().backward()
        reducer.finish()
        for p, e in zip(params, expected):
            np.testing.assert_allclose(p.grad.data, e, rtol=1e-6, atol=1e-7)
    reducer.remove()


def test_collectives_check_their_arguments():
    comm = _self_comm()
    a = np.arange(4.0)
    assert dist.all_reduce(a, "sum", comm) is a and a.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="op"):
        dist.all_reduce(a, "mean", comm)
    with pytest.raises(TypeError, match="C-contiguous"):
        dist.all_reduce(np.arange(8.0)[::2], "sum", comm)
    with pytest.raises(TypeError, match="C-contiguous"):
        dist.broadcast([1.0, 2.0], 0, comm)
    for root in (1, -1, True, "0"):
        with pytest.raises(ValueError, match="root"):
            dist.broadcast(a, root, comm)
    with pytest.raises(ValueError, match="root"):
        dist.broadcast_model(_model(), 2, comm)
    reducer = dist.GradientReducer(_model().parameters(), comm)
    for weight in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="weight"):
            reducer.prepare(weight)
    reducer.remove()


def test_reducer_counts_a_parameter_without_gradient_as_zero():
    comm = _self_comm()
    model = _model()
    unused = nn.Linear(2, 2)
    params = list(model.parameters()) + list(unused.parameters())
    reducer = dist.GradientReducer(params, comm, 1 / 2**20)
    reducer.prepare(1.0)
    x = fastconv.Tensor(np.ones((2, 1, 4, 4), np.float32))
    model(x).sum().backward()
    reducer.finish()
    assert all(np.all(p.grad.data == 0) for p in unused.parameters())
    with pytest.raises(RuntimeError, match="prepare"):
        reducer.finish()
    with pytest.raises(ValueError, match="bucket_mb"):
        dist.GradientReducer(params, comm, 0)
    reducer.remove()


# ---------------------------------------------------------------------------------------------
# Whole runs under mpiexec -n 2
# ---------------------------------------------------------------------------------------------

def _mpiexec() -> list[str]:
    """The launcher that belongs to mpi4py's MPI: the one beside this Python first."""
    required = os.environ.get("FASTCONV_REQUIRE_MPI") == "1"
    launcher = None
    if dist.is_available():
        beside = Path(sys.executable).parent / "mpiexec"
        launcher = str(beside) if beside.exists() else shutil.which("mpiexec")
    if launcher is None:
        if required:
            pytest.fail("FASTCONV_REQUIRE_MPI=1 but mpi4py or mpiexec is missing "
                        '(pip install ".[mpi]")')
        pytest.skip("mpi4py or mpiexec is not installed")
    from mpi4py import MPI
    command = [launcher, "-n", "2"]
    if "Open MPI" in MPI.Get_library_version():
        command[1:1] = ["--oversubscribe", "--allow-run-as-root"]
    return command


def _run(args, tmp_path, timeout=240, ranks=True, env=None):
    command = (_mpiexec() if ranks else []) + [sys.executable, *map(str, args)]
    environment = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    environment.update(env or {})
    start = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                            cwd=tmp_path, env=environment)
    return result, time.monotonic() - start


def _scenario(name, tmp_path, **kwargs):
    result, _ = _run([WORKER, name, tmp_path], tmp_path, **kwargs)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads((tmp_path / f"{name}.json").read_text())


def test_two_ranks_train_like_one_process_on_the_same_global_batches(tmp_path):
    result = _scenario("equivalence", tmp_path)
    assert result["world_size"] == 2 and result["threads"] == [max(1, dist._cores() // 2)] * 2
    for name in ("one_bucket", "small_buckets"):
        run = result[name]
        assert run["digests"][0] == run["digests"][1], f"{name}: ranks' parameters differ"
        assert run["max_change"] > 0.05  # the parameters did move
        assert run["max_difference"] < 2e-5, name
        np.testing.assert_allclose(run["train_loss"], run["single_train_loss"], rtol=1e-5)
        # The validation set (37 samples, shards of 19 and 18) is evaluated and summed too.
        np.testing.assert_allclose(run["val_loss"], run["single_val_loss"], rtol=1e-5)
        assert run["val_accuracy"] == run["single_val_accuracy"]
    assert result["one_bucket"]["buckets"] == 1 and result["small_buckets"]["buckets"] > 1


def test_sync_batchnorm_matches_batchnorm_on_the_global_batch(tmp_path):
    result = _scenario("syncbn", tmp_path)
    assert result["converted"] == "SyncBatchNorm"
    assert result["digests"][0] == result["digests"][1]
    assert result["max_difference"] < 1e-4


def test_a_checkpoint_from_two_ranks_resumes_on_one(tmp_path):
    two = _scenario("resume2", tmp_path)
    one = _scenario("resume1", tmp_path, ranks=False)
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["epochs"] == one["epochs"] == 2
    for a, b in zip(two["parameters"], one["parameters"]):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=2e-6)
    # ...and the resumed epoch did change them.
    moved = max(np.max(np.abs(np.array(a) - np.array(b)))
                for a, b in zip(two["parameters"], two["epoch1"]))
    assert moved > 1e-3


@pytest.mark.parametrize("scenario", ["raise", "killed"])
def test_a_failing_rank_stops_the_job(tmp_path, scenario):
    result, seconds = _run([WORKER, scenario, tmp_path], tmp_path, timeout=120)
    report = f"exit {result.returncode} after {seconds:.1f} s\n{result.stdout}\n{result.stderr}"
    assert result.returncode != 0, report
    assert seconds < 60, report
    assert not (tmp_path / f"{scenario}.json").exists()
    if scenario == "raise":
        assert "rank 1 of 2" in result.stderr and "rank 1 fails on purpose" in result.stderr, \
            report


def test_a_rank_that_stops_answering_times_the_others_out(tmp_path):
    result, seconds = _run([WORKER, "hang", tmp_path], tmp_path, timeout=120,
                           env={"FASTCONV_DISTRIBUTED_TIMEOUT": "3"})
    report = f"exit {result.returncode} after {seconds:.1f} s\n{result.stdout}\n{result.stderr}"
    assert result.returncode != 0, report
    assert seconds < 60, report
    assert "no answer from the other ranks within 3 s" in result.stderr, report


def test_the_cli_trains_on_two_ranks_and_only_rank_0_writes(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "run"
    result, _ = _run(["-m", "fastconv", "train", "--distributed", "--epochs", "1",
                      "--no-progress", "--output-dir", out], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("test accuracy") == 1
    assert result.stderr.count("fastconv train: small-cnn on digits") == 1
    assert "on 2 ranks" in result.stderr
    assert (out / "model.npz").exists() and (out / "checkpoint.npz").exists()
    accuracy = float(result.stdout.split("test accuracy ")[1].split()[0])
    assert accuracy > 0.5
    bad, _ = _run(["-m", "fastconv", "train", "--distributed", "--batch-size", "33",
                   "--epochs", "1", "--output-dir", out], tmp_path)
    assert bad.returncode == 2 and "multiple of the 2 ranks" in bad.stderr


def test_init_keeps_a_thread_count_the_user_chose(monkeypatch):
    comm = _self_comm()
    from fastconv import _runtime
    n0 = fastconv.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(dist, "default_num_threads", lambda comm=None: 1)
    try:
        monkeypatch.setattr(_runtime, "_threads_chosen", False)
        fastconv.set_num_threads(2)
        dist.init(comm)
        assert fastconv.get_num_threads() == 2  # kept, not the default of 1
        monkeypatch.setattr(_runtime, "_threads_chosen", False)
        dist.init(comm)
        assert fastconv.get_num_threads() == 1
        dist.init(comm, num_threads=2)
        assert fastconv.get_num_threads() == 2
    finally:
        fastconv.set_num_threads(n0)
        dist._state["comm"] = None
