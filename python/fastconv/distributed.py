"""Data-parallel training over MPI: the same script on P processes ("ranks"), each holding the
whole model and training on its share of every global batch.

    mpiexec -n 2 python train.py            # train.py calls fit(..., distributed=True)
    mpiexec -n 2 fastconv train --distributed

MPI comes from mpi4py (``pip install "fastconv[mpi]"`` pulls it and the MPICH wheel; a system
MPI works too). What a distributed fit does, step by step:

- every rank starts from rank 0's parameters and buffers (:func:`broadcast_model`);
- :class:`DistributedSampler` gives rank r the samples at positions r, r + P, r + 2P, ... of
  the epoch's order (a function of seed and epoch), so with a per-rank batch of B / P the P
  ranks' batch i together are exactly the global batch i a single process would take;
- after backward, :class:`GradientReducer` has summed the gradients over the ranks in flat
  buckets of a few MiB, each started with a non-blocking all-reduce as soon as its last
  gradient is ready, so communication overlaps the rest of the backward pass. Gradients are
  weighted by each rank's sample count, so an uneven last batch still gives the gradient of
  the global batch (a mean loss; other losses are averaged over ranks, as PyTorch's DDP does);
- every rank then takes the same optimizer step on the same gradients: the parameters stay
  identical on all ranks;
- loss and accuracy are summed over ranks for the history; only rank 0 prints, writes
  checkpoints, history and plots;
- BatchNorm is local to each rank unless the model uses :class:`SyncBatchNorm`
  (:func:`SyncBatchNorm.convert_sync_batchnorm`).

Faults: an exception on one rank prints the error and aborts every rank (``MPI_Abort``), so
``mpiexec`` exits non-zero instead of leaving the others waiting; a collective that gets no
answer within :func:`get_timeout` seconds (``FASTCONV_DISTRIBUTED_TIMEOUT``, default 300)
aborts too. A rank killed outright is noticed by ``mpiexec`` itself, which stops the rest.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
import weakref

import numpy as np

from . import _core, _runtime
from ._runtime import set_num_threads
from .data.loader import DataLoader
from .data.sampler import RandomSampler, Sampler, SequentialSampler
from .data.dataset import _is_index
from .nn.layers import BatchNorm2d
from .nn import functional as F
from .tensor import register_node_backward_hook
from .train import Trainer

__all__ = ["init", "is_available", "get_rank", "get_world_size", "is_main_process",
           "local_world_size", "default_num_threads", "all_reduce", "broadcast",
           "broadcast_model", "DistributedSampler", "shard_loader", "GradientReducer",
           "SyncBatchNorm", "DistributedTrainer", "get_timeout"]

_INSTALL_HINT = 'install it with: pip install "fastconv[mpi]" (mpi4py and MPICH)'
_state: dict = {"comm": None, "local_size": None}


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(f"fastconv.distributed needs mpi4py and an MPI library; "
                          f"{_INSTALL_HINT}") from error
    return MPI


def is_available() -> bool:
    """Whether mpi4py (and so an MPI library) can be imported."""
    try:
        _mpi()
    except ImportError:
        return False
    return True


def init(comm=None, num_threads: int | None = None):
    """Join the MPI job (``comm``: an mpi4py communicator, default COMM_WORLD) and give this
    rank its kernel threads: ``num_threads``, else what ``fastconv.set_num_threads`` or
    ``OMP_NUM_THREADS`` chose, else :func:`default_num_threads` (cores / ranks on this
    machine). Returns the communicator. Calling it again switches to another communicator."""
    MPI = _mpi()
    comm = MPI.COMM_WORLD if comm is None else comm
    if comm is not _state["comm"]:
        _state["comm"], _state["local_size"] = comm, None
    # A collective: every rank takes part, whatever its thread settings.
    default = default_num_threads(comm)
    if num_threads is not None:
        set_num_threads(num_threads)
    elif not (_runtime._threads_chosen or os.environ.get("OMP_NUM_THREADS", "").strip()):
        _core.set_num_threads(default)
    return comm


def _comm(comm=None):
    if comm is not None:
        return comm
    if _state["comm"] is None:
        init()
    return _state["comm"]


def get_rank(comm=None) -> int:
    """This process's rank (0 .. world size - 1)."""
    return _comm(comm).Get_rank()


def get_world_size(comm=None) -> int:
    """How many ranks the job has."""
    return _comm(comm).Get_size()


def is_main_process(comm=None) -> bool:
    """True on rank 0, the rank that prints and writes files."""
    return get_rank(comm) == 0


def local_world_size(comm=None) -> int:
    """How many ranks of the job run on this machine (ranks sharing its memory)."""
    comm = _comm(comm)
    if comm is _state["comm"] and _state["local_size"] is not None:
        return _state["local_size"]
    MPI = _mpi()
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    size = local.Get_size()
    local.Free()
    if comm is _state["comm"]:
        _state["local_size"] = size
    return size


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_num_threads(comm=None) -> int:
    """Kernel threads per rank so that ranks x threads fills, and does not exceed, the cores
    of this machine: cores // ranks on this machine, at least 1."""
    return max(1, _cores() // local_world_size(comm))


def get_timeout() -> float:
    """Seconds a collective may wait for the other ranks before this rank aborts the job
    (``FASTCONV_DISTRIBUTED_TIMEOUT``, default 300)."""
    value = os.environ.get("FASTCONV_DISTRIBUTED_TIMEOUT", "").strip()
    if not value:
        return 300.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"FASTCONV_DISTRIBUTED_TIMEOUT={value!r}: expected a positive number "
                         "of seconds")
    return seconds


def _abort(message: str, comm=None) -> None:
    """Print `message` with this rank's name and stop every rank of the job."""
    comm = _comm(comm)
    print(f"fastconv.distributed: rank {comm.Get_rank()} of {comm.Get_size()}: {message}; "
          f"aborting all ranks", file=sys.stderr, flush=True)
    # mpiexec forwards a rank's output asynchronously, and MPI_Abort kills the ranks at once:
    # without a pause the message above was lost in 2 of 10 runs.
    time.sleep(0.5)
    comm.Abort(1)


def _wait(requests, what: str, comm=None) -> float:
    """Wait for non-blocking requests, polling (which also drives MPI's progress), and abort
    the job when they take longer than get_timeout(). Returns the seconds waited."""
    MPI = _mpi()
    start = time.perf_counter()
    deadline = start + get_timeout()
    polls = 0
    while not MPI.Request.Testall(requests):
        polls += 1
        if polls > 200:  # past a short spin, stop taking a whole core from the others
            time.sleep(0.0001)
            if time.perf_counter() > deadline:
                _abort(f"{what}: no answer from the other ranks within {get_timeout():g} s "
                       f"(FASTCONV_DISTRIBUTED_TIMEOUT)", comm)
    return time.perf_counter() - start


def all_reduce(array: np.ndarray, op: str = "sum", comm=None) -> np.ndarray:
    """Combine a contiguous NumPy array over all ranks in place (op: "sum", "max" or "min")
    and return it."""
    MPI = _mpi()
    ops = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
    if op not in ops:
        raise ValueError(f"op: expected one of {sorted(ops)}, got {op!r}")
    if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
        raise TypeError("array: expected a C-contiguous NumPy array")
    comm = _comm(comm)
    if comm.Get_size() > 1:
        _wait([comm.Iallreduce(MPI.IN_PLACE, array, ops[op])], f"all_reduce({op})", comm)
    return array


def _check_root(root, comm) -> int:
    if not _is_index(root) or not 0 <= root < comm.Get_size():
        raise ValueError(f"root: expected a rank in [0, {comm.Get_size()}), got {root!r}")
    return int(root)


def broadcast(array: np.ndarray, root: int = 0, comm=None) -> np.ndarray:
    """Overwrite a contiguous NumPy array with rank ``root``'s copy, in place; returns it."""
    if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
        raise TypeError("array: expected a C-contiguous NumPy array")
    comm = _comm(comm)
    root = _check_root(root, comm)
    if comm.Get_size() > 1:
        _wait([comm.Ibcast(array, root)], "broadcast", comm)
    return array


def broadcast_model(model, root: int = 0, comm=None) -> None:
    """Give every rank rank ``root``'s parameters and buffers (in place)."""
    comm = _comm(comm)
    root = _check_root(root, comm)
    if comm.Get_size() == 1:
        return
    arrays = [p.data for p in model.parameters()] + list(model.buffers())
    requests = []
    for array in arrays:
        if not array.flags.c_contiguous:
            raise ValueError("broadcast_model: parameters and buffers must be C-contiguous")
        requests.append(comm.Ibcast(array, root))
    _wait(requests, "broadcast_model", comm)


# ---------------------------------------------------------------------------------------------
# Which samples each rank takes
# ---------------------------------------------------------------------------------------------

class DistributedSampler(Sampler):
    """Rank ``rank``'s shard of another sampler's epoch order: the indices at positions
    rank, rank + world_size, rank + 2 * world_size, ...

    Args:
        sampler: the single-process sampler whose order is split (a RandomSampler, say: its
            order is a function of its seed and the epoch, the same on every rank), or a
            number of samples n (then RandomSampler(n, seed), or SequentialSampler(n) when
            shuffle is False).
        rank, world_size: this rank and the number of ranks (default: from MPI).
        drop_last: False: every index of the epoch goes to exactly one rank; shards differ by
            at most one sample. True: the tail that would make them uneven is dropped (the
            last n % world_size indices, or, with ``batch_size``, the last n % batch_size,
            i.e. the global batch that is not full).
        batch_size: the global batch size (only used with drop_last).

    With a per-rank batch of batch_size / world_size, batch i of every rank together is the
    single-process batch i, whatever world_size is; that is why a checkpoint resumes with
    another number of ranks on the same global batches.
    """

    def __init__(self, sampler, rank: int | None = None, world_size: int | None = None,
                 shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 batch_size: int | None = None):
        if _is_index(sampler):
            sampler = RandomSampler(sampler, seed) if shuffle else SequentialSampler(sampler)
        elif not (hasattr(sampler, "__iter__") and hasattr(sampler, "__len__")) or \
                isinstance(sampler, (str, bytes)):
            raise TypeError(f"sampler: expected a number of samples or a sampler with __iter__ "
                            f"and __len__, got {type(sampler).__name__}")
        if world_size is None:
            world_size = get_world_size()
        if rank is None:
            rank = get_rank()
        if not _is_index(world_size) or world_size < 1:
            raise ValueError(f"world_size: expected a positive integer, got {world_size!r}")
        if not _is_index(rank) or not 0 <= rank < world_size:
            raise ValueError(f"rank: expected an integer in [0, {world_size}), got {rank!r}")
        if batch_size is not None and (not _is_index(batch_size) or batch_size < 1):
            raise ValueError(f"batch_size: expected a positive integer or None, got "
                             f"{batch_size!r}")
        self.sampler, self.rank, self.world_size = sampler, int(rank), int(world_size)
        self.drop_last, self.batch_size = bool(drop_last), batch_size
        self.epoch = int(getattr(sampler, "epoch", 0))

    def _kept(self, n: int) -> int:
        if not self.drop_last:
            return n
        return n - n % (self.batch_size or self.world_size)

    def __iter__(self):
        # The epoch is this sampler's own (set on the shared sampler just before its iter()),
        # so the single-process loader it came from can go on using that sampler too.
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(self.epoch)
        self.epoch += 1
        chunks = [np.atleast_1d(np.asarray(chunk, dtype=np.int64)) for chunk in self.sampler]
        order = np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)
        order = order[:self._kept(order.shape[0])]
        return iter((order[self.rank::self.world_size],))

    def __len__(self) -> int:
        kept = self._kept(len(self.sampler))
        return max(0, -(-(kept - self.rank) // self.world_size))

    def set_epoch(self, epoch: int) -> None:
        """Make the next iter() split the sampler's order of epoch ``epoch``."""
        if not _is_index(epoch) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = int(epoch)

    def __repr__(self) -> str:
        return (f"DistributedSampler({self.sampler!r}, rank={self.rank}, "
                f"world_size={self.world_size}, drop_last={self.drop_last})")


def shard_loader(loader: DataLoader, comm=None, global_batch: bool = True) -> DataLoader:
    """This rank's loader for a single-process ``loader``: same data set, transform and
    prefetch, its sampler split by :class:`DistributedSampler`, and batches of
    ``loader.batch_size / world_size`` (the loader's batch is the global batch). With
    ``global_batch=False`` (evaluation) the batch is split as evenly as it can be."""
    if not isinstance(loader, DataLoader):
        raise TypeError(f"loader: expected a fastconv.data.DataLoader, got "
                        f"{type(loader).__name__}")
    comm = _comm(comm)
    world = comm.Get_size()
    if world == 1:
        return loader
    if global_batch and loader.batch_size % world:
        raise ValueError(f"batch_size: the global batch of {loader.batch_size} does not split "
                         f"evenly over {world} ranks; use a multiple of {world}")
    sampler = DistributedSampler(loader.sampler, comm.Get_rank(), world,
                                 drop_last=loader.drop_last and global_batch,
                                 batch_size=loader.batch_size)
    return DataLoader(loader.dataset, batch_size=-(-loader.batch_size // world),
                      drop_last=loader.drop_last, prefetch=loader.prefetch,
                      transform=loader.transform, sampler=sampler)


# ---------------------------------------------------------------------------------------------
# Gradients: bucketed, overlapped all-reduce
# ---------------------------------------------------------------------------------------------

def _no_poll() -> None:
    pass


class _Bucket:
    __slots__ = ("params", "offsets", "flat", "pending", "filled", "request")

    def __init__(self, params, dtype, extra: int):
        self.params = params
        sizes = [p.data.size for p in params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.flat = np.empty(int(self.offsets[-1]) + extra, dtype=dtype)
        self.pending, self.filled, self.request = 0, None, None


class GradientReducer:
    """Sums the parameters' gradients over all ranks after each backward, weighted by each
    rank's share of the global batch.

    The parameters are cut into buckets of about ``bucket_mb`` MiB (one dtype each), in
    reverse order, since backward finishes the last layers first. A hook on each parameter
    copies its gradient, times this rank's weight, into its bucket's flat buffer as soon as
    backward has accumulated it; when a bucket is complete its non-blocking all-reduce
    starts. Buckets start in the same order on every rank (a bucket completed early waits for
    the ones before it), as MPI requires. :meth:`finish` waits for the rest and writes
    sum(weight_r * grad_r) / sum(weight_r) into every ``.grad``; the sum of the weights
    travels as one extra element of the first bucket.

    Per step: :meth:`prepare` (with this rank's weight: its sample count for a mean loss),
    backward, :meth:`finish`. A parameter that got no gradient counts as zero.
    ``wait_seconds`` adds up the time :meth:`finish` spent waiting on communication;
    ``overlapped_bytes / (steps * bucket_bytes)`` is the share of the gradients whose
    all-reduce had already completed when backward ended.
    """

    def __init__(self, parameters, comm=None, bucket_mb: float = 4.0):
        if not bucket_mb > 0:
            raise ValueError(f"bucket_mb: expected a positive size in MiB, got {bucket_mb!r}")
        self.comm = _comm(comm)
        params = [p for p in parameters if p.requires_grad]
        limit = bucket_mb * (1 << 20)
        self.buckets: list[_Bucket] = []
        self._where: dict[int, tuple[_Bucket, int]] = {}
        open_buckets: dict = {}  # dtype -> (params, bytes)
        closed = []
        for p in reversed(params):
            members, size = open_buckets.get(p.data.dtype, ([], 0))
            members.append(p)
            size += p.data.nbytes
            if size >= limit:
                closed.append((p.data.dtype, members))
                members, size = [], 0
            open_buckets[p.data.dtype] = (members, size)
        closed += [(dtype, members) for dtype, (members, _) in open_buckets.items() if members]
        for index, (dtype, members) in enumerate(closed):
            bucket = _Bucket(members, dtype, extra=1 if index == 0 else 0)
            self.buckets.append(bucket)
            for i, p in enumerate(members):
                self._where[id(p)] = (bucket, i)
        self._handles = [p.register_post_accumulate_grad_hook(self._grad_ready) for p in params]
        # Poll the started all-reduces after every operation's backward, not only when a
        # gradient is ready: MPI moves a message along only inside its calls (measured: a
        # 4 MiB all-reduce left alone for 20 ms had not started; polled every ms, it was done).
        # (Through a weak reference, so that the global hook does not keep the reducer alive.)
        poll = weakref.WeakMethod(self._poll)
        node_hook = register_node_backward_hook(lambda: (poll() or _no_poll)())
        weakref.finalize(self, node_hook.remove)
        self._handles.append(node_hook)
        self._next = 0
        self._weight = 1.0
        self._active = False
        self._mpi = _mpi()
        self._requests = [None] * len(self.buckets)
        self.wait_seconds = 0.0
        self.steps = 0
        self.overlapped_bytes = 0
        self.bucket_bytes = sum(b.flat.nbytes for b in self.buckets)

    def remove(self) -> None:
        """Take the hooks off the parameters."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def prepare(self, weight: float = 1.0) -> None:
        """Start a step in which this rank's gradients count with ``weight``."""
        if not weight >= 0:
            raise ValueError(f"weight: expected a non-negative number, got {weight!r}")
        self._weight = float(weight)
        for bucket in self.buckets:
            bucket.pending = len(bucket.params)
            bucket.filled = np.zeros(len(bucket.params), dtype=bool)
            bucket.request = None
        if self.buckets:
            self.buckets[0].flat[-1] = self._weight
        self._next = 0
        self._active = True

    def _grad_ready(self, p) -> None:
        if not self._active:
            return
        bucket, i = self._where[id(p)]
        if bucket.request is not None:
            raise RuntimeError("GradientReducer: a gradient changed after its bucket's "
                               "all-reduce started (two backward passes in one step?)")
        start, stop = bucket.offsets[i], bucket.offsets[i + 1]
        np.multiply(p.grad.data.reshape(-1), bucket.flat.dtype.type(self._weight),
                    out=bucket.flat[start:stop])
        if not bucket.filled[i]:
            bucket.filled[i] = True
            bucket.pending -= 1
        if bucket.pending == 0:
            self._start_ready()

    def _poll(self) -> None:
        """Let MPI move the started all-reduces along (it progresses only inside calls)."""
        if self._active and self._next:
            self._mpi.Request.Testall(self._requests[:self._next])

    def _start_ready(self) -> None:
        MPI = self._mpi
        while self._next < len(self.buckets) and self.buckets[self._next].pending == 0:
            bucket = self.buckets[self._next]
            bucket.request = self.comm.Iallreduce(MPI.IN_PLACE, bucket.flat, MPI.SUM)
            self._requests[self._next] = bucket.request
            self._next += 1

    def finish(self) -> None:
        """Complete the step: zeros for gradients backward did not produce, start what has
        not started, wait, and write the averaged gradients into the parameters' ``.grad``."""
        from .tensor import Tensor
        if not self._active:
            raise RuntimeError("GradientReducer.finish: call prepare(weight) before backward")
        for bucket in self.buckets[self._next:]:
            for i in np.flatnonzero(~bucket.filled):
                bucket.flat[bucket.offsets[i]:bucket.offsets[i + 1]] = 0
            bucket.pending = 0
        # Bytes whose all-reduce finished while backward was still running (for the bench).
        self.steps += 1
        self.overlapped_bytes += sum(b.flat.nbytes for b in self.buckets[:self._next]
                                     if b.request.Test())
        self._start_ready()
        self.wait_seconds += _wait([b.request for b in self.buckets], "gradient all-reduce",
                                   self.comm)
        self._active = False
        if not self.buckets:
            return
        total = float(self.buckets[0].flat[-1])
        scale = 1.0 / total if total > 0 else 0.0
        for bucket in self.buckets:
            flat = bucket.flat
            for i, p in enumerate(bucket.params):
                values = flat[bucket.offsets[i]:bucket.offsets[i + 1]].reshape(p.data.shape)
                if p.grad is None:
                    p.grad = Tensor(np.empty_like(p.data))
                np.multiply(values, flat.dtype.type(scale), out=p.grad.data)


# ---------------------------------------------------------------------------------------------
# SyncBatchNorm
# ---------------------------------------------------------------------------------------------

class SyncBatchNorm(BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch: per-channel
    count, sum and sum of squares (and, in backward, the two gradient sums) are summed over
    the ranks. In eval mode, or with one rank, it is BatchNorm2d. Every rank must run the
    layer at every step (the sums are collectives)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, dtype=np.float32,
                 comm=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype)
        self.comm = comm

    def _reduce(self, array: np.ndarray) -> None:
        all_reduce(array, "sum", self.comm)

    def forward(self, x):
        if not self.training or get_world_size(self.comm) == 1:
            return super().forward(x)
        shape = np.shape(x.data if hasattr(x, "data") else x)
        if len(shape) != 4 or shape[1] != self.num_features:
            return super().forward(x)  # raises the shape error
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=True, momentum=self.momentum, eps=self.eps,
                            num_batches_tracked=self.num_batches_tracked, reduce=self._reduce)

    @classmethod
    def convert_sync_batchnorm(cls, module, comm=None):
        """Replace every BatchNorm2d inside ``module`` (or ``module`` itself) by a
        SyncBatchNorm with the same parameters and running statistics; returns the module."""
        if isinstance(module, BatchNorm2d) and not isinstance(module, cls):
            dtype = (module.weight.data.dtype if module.weight is not None else
                     module.running_mean.dtype if module.running_mean is not None
                     else np.float32)
            converted = cls(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, dtype, comm)
            converted.load_state_dict(module.state_dict())
            converted.train(module.training)
            return converted
        for name, child in list(module.named_children()):
            replaced = cls.convert_sync_batchnorm(child, comm)
            if replaced is not child:
                setattr(module, name, replaced)
        return module


# ---------------------------------------------------------------------------------------------
# The distributed training loop
# ---------------------------------------------------------------------------------------------

class DistributedTrainer(Trainer):
    """Trainer for one rank of a data-parallel job (what ``fit(..., distributed=True)`` uses).

    It broadcasts rank 0's model at the start, averages gradients after every backward
    (:class:`GradientReducer`), sums the epoch's metrics over ranks and lets only rank 0
    print and write. The loaders passed to :meth:`fit` must already be this rank's shards
    (:func:`shard_loader`). A rank whose shard has one batch fewer than another's (an uneven
    last batch) still takes part in that step with weight 0, so every rank runs the same
    steps. Any exception aborts the whole job after printing it."""

    def __init__(self, model, loss_fn, optimizer, scheduler=None, callbacks=(), progress=True,
                 comm=None, bucket_mb: float = 4.0):
        super().__init__(model, loss_fn, optimizer, scheduler, callbacks, progress)
        self.comm = _comm(comm)
        self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()
        broadcast_model(model, 0, self.comm)
        self.reducer = (GradientReducer(model.parameters(), self.comm, bucket_mb)
                        if optimizer is not None else None)
        self._has_sync_batchnorm = any(isinstance(m, SyncBatchNorm) for m in model.modules())

    def is_main(self) -> bool:
        return self.rank == 0

    def reduce_sums(self, sums: np.ndarray) -> np.ndarray:
        return all_reduce(np.ascontiguousarray(sums, dtype=np.float64).copy(), "sum", self.comm)

    def batches(self, loader):
        steps = np.array([len(loader), -len(loader)], dtype=np.int64)
        all_reduce(steps, "max", self.comm)
        most, fewest = int(steps[0]), int(-steps[1])
        if most != fewest and self._has_sync_batchnorm:
            raise ValueError(f"SyncBatchNorm needs every rank at every step, but the ranks' "
                             f"shards have {fewest} to {most} batches; give the loader "
                             f"drop_last=True or a data set size that splits evenly")
        count = 0
        for batch in loader:
            count += 1
            yield batch
        for _ in range(most - count):
            yield None, None  # this rank has no sample left: it joins the step with weight 0

    def train_step(self, x, y):
        if x is None:
            self.optimizer.zero_grad()
            self.reducer.prepare(0.0)
            self.after_backward()
            self.optimizer.step()
            return np.zeros(3)
        mean = getattr(self.loss_fn, "reduction", "mean") == "mean"
        self.reducer.prepare(float(len(x)) if mean else 1.0)
        return super().train_step(x, y)

    def after_backward(self) -> None:
        self.reducer.finish()
        super().after_backward()

    def fit(self, train_loader, val_loader=None, epochs: int = 1, start_epoch: int = 0):
        try:
            return super().fit(train_loader, val_loader, epochs, start_epoch)
        except BaseException as error:  # noqa: B902 (KeyboardInterrupt too: never hang)
            if self.world_size == 1:
                raise
            traceback.print_exc(file=sys.stderr)
            _abort(f"training failed: {type(error).__name__}: {error}", self.comm)
            raise
