"""DataLoader: iterate a dataset in batches of NumPy arrays, optionally prefetched in a thread.

Each batch is ``(x, y)``: ``x`` a C-contiguous float32 (N, C, H, W) array, ``y`` an int64 (N,)
array. Which samples an epoch visits and in which order is the sampler's business (see
:mod:`fastconv.data.sampler`); the loader cuts the sampler's index stream into batches, reads
each through the dataset's ``get_batch`` fast path when it has one, and applies the batch
transform.

With ``prefetch > 0`` one background (daemon) thread prepares the next batches while the caller
trains; NumPy and the fastconv kernels release the GIL, so reading and augmenting overlap with
the training step. The thread stops when the epoch ends, when the consumer stops early
(``break``, ``close()``, the iterator being garbage-collected), when the producer raises (the
exception is re-raised in the consumer, with its original traceback) and at interpreter exit.
"""

from __future__ import annotations

import atexit
import collections.abc
import queue
import sys
import threading
import weakref

import numpy as np

from .dataset import _is_index, read_batch
from .sampler import IndexSampler, RandomSampler, SequentialSampler

__all__ = ["DataLoader"]

PREFETCH_THREAD_NAME = "fastconv-data-prefetch"

# How often a blocked producer or consumer wakes up to check whether the other side is gone.
_POLL_SECONDS = 0.05


def _as_sampler(sampler):
    """Accept the sampler protocol, or a fixed array / sequence of indices."""
    if isinstance(sampler, (np.ndarray, list, tuple)):
        return IndexSampler(sampler)
    if isinstance(sampler, collections.abc.Iterator):
        raise TypeError("sampler must be re-iterable (one iter() per epoch), got a one-shot "
                        f"iterator ({type(sampler).__name__}); pass an object whose __iter__ "
                        "yields the indices, or a list/array of indices")
    if not isinstance(sampler, collections.abc.Iterable):
        raise TypeError(f"sampler must be iterable, got {type(sampler).__name__}")
    return sampler


def _index_chunk(item) -> np.ndarray:
    """One item of a sampler's stream (not a single integer) as a 1-D int64 array."""
    chunk = np.asarray(item)
    if chunk.ndim != 1 or (chunk.size and chunk.dtype.kind not in "iu"):
        raise TypeError("a sampler must yield integers or 1-D integer arrays, got "
                        f"{type(item).__name__} of shape {chunk.shape}, dtype {chunk.dtype}")
    return chunk.astype(np.int64, copy=False)


def _cut_batches(index_stream, batch_size: int, drop_last: bool, size: int):
    """Cut a stream of indices and index chunks into int64 arrays of ``batch_size`` indices."""
    pieces = []   # 1-D arrays making up the batch being filled
    scalars = []  # integers yielded one at a time, not yet turned into a piece
    filled = 0    # indices in ``pieces`` and ``scalars``

    def take_batch():
        nonlocal pieces, scalars, filled
        if scalars:
            pieces.append(np.asarray(scalars, dtype=np.int64))
        batch = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        pieces, scalars, filled = [], [], 0
        if batch.size and (batch.min() < 0 or batch.max() >= size):
            bad = batch[(batch < 0) | (batch >= size)][0]
            raise IndexError(f"the sampler yielded index {bad}, out of range for a dataset of "
                             f"{size} samples")
        return batch

    for item in index_stream:
        if _is_index(item):
            scalars.append(int(item))
            filled += 1
        else:
            chunk = _index_chunk(item)
            if scalars:
                pieces.append(np.asarray(scalars, dtype=np.int64))
                scalars = []
            while chunk.size:
                piece = chunk[:batch_size - filled]
                pieces.append(piece)
                filled += piece.size
                chunk = chunk[piece.size:]
                if filled == batch_size:
                    yield take_batch()
            continue
        if filled == batch_size:
            yield take_batch()
    if filled and not drop_last:
        yield take_batch()


def _as_image_batch(x, n: int, where: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise TypeError(f"{where} returned images of dtype {x.dtype}, expected numbers")
    if x.ndim == 0 or x.shape[0] != n:
        raise ValueError(f"{where} returned images of shape {x.shape} for a batch of {n}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _as_label_batch(y, n: int, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.size and y.dtype.kind not in "iu":
        raise TypeError(f"{where} returned labels of dtype {y.dtype}, expected integers")
    if y.shape != (n,):
        raise ValueError(f"{where} returned labels of shape {y.shape} for a batch of {n}")
    return np.ascontiguousarray(y, dtype=np.int64)


class DataLoader:
    """Iterate ``dataset`` in batches ``(x, y)`` of NumPy arrays.

    Args:
        dataset: a dataset (``__len__``, ``__getitem__(i) -> (x, y)``, optionally
            ``get_batch(indices) -> (xs, ys)``, which the loader then uses).
        batch_size: samples per batch.
        shuffle: visit the samples in a new random order every epoch (a
            :class:`~fastconv.data.RandomSampler` seeded with ``seed``).
        drop_last: drop the last batch when it is smaller than ``batch_size``.
        seed: seed of the shuffling: the same seed gives the same sequence of epoch orders.
        prefetch: how many batches a background thread prepares ahead (its queue's size);
            ``0`` reads every batch synchronously in the caller's thread.
        transform: callable applied to every float32 (N, C, H, W) image batch (in the
            background thread when prefetching); labels are not transformed.
        sampler: which indices each epoch visits, in order: an object following the sampler
            protocol of :mod:`fastconv.data.sampler`, or a fixed array / list of indices.
            Excludes ``shuffle`` and ``seed``, which configure the default sampler.

    ``len(loader)`` is the number of batches of an epoch. Iterating twice runs two epochs.
    Random transforms keep their own generators, so with a seeded transform a full epoch gives
    the same batches whether or not it is prefetched; after an early ``break`` the producer
    may have drawn a few batches ahead.
    """

    def __init__(self, dataset, batch_size: int = 1, shuffle: bool = False,
                 drop_last: bool = False, seed: int | None = None, prefetch: int = 2,
                 transform=None, sampler=None):
        if not _is_index(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not _is_index(prefetch) or prefetch < 0:
            raise ValueError(f"prefetch must be a non-negative integer, got {prefetch!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable, got {type(transform).__name__}")
        if sampler is None:
            sampler = RandomSampler(len(dataset), seed) if shuffle else SequentialSampler(
                len(dataset))
        else:
            if shuffle:
                raise ValueError("shuffle=True and sampler exclude each other: the sampler "
                                 "decides the order")
            if seed is not None:
                raise ValueError("seed seeds the loader's own shuffling; with a sampler, "
                                 "seed the sampler instead")
            sampler = _as_sampler(sampler)
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.drop_last = bool(drop_last)
        self.prefetch = int(prefetch)
        self.transform = transform
        self.sampler = sampler

    def __len__(self) -> int:
        try:
            n = len(self.sampler)
        except TypeError:
            raise TypeError(f"len(DataLoader) needs a sampler with __len__; "
                            f"{type(self.sampler).__name__} has none") from None
        if self.drop_last:
            return n // self.batch_size
        return -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next epoch's order a pure function of ``(seed, epoch)``.

        Forwarded to the sampler's ``set_epoch``; a sampler without one (a fixed order) is
        unaffected.
        """
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)

    def __iter__(self):
        # iter(sampler) runs here, in the caller's thread: the epoch's order is fixed now.
        batches = self._read_batches(iter(self.sampler))
        if self.prefetch == 0:
            return batches
        return _PrefetchIterator(batches, self.prefetch)

    def _read_batches(self, index_stream):
        size = len(self.dataset)
        for indices in _cut_batches(index_stream, self.batch_size, self.drop_last, size):
            n = indices.shape[0]
            x, y = read_batch(self.dataset, indices)
            x = _as_image_batch(x, n, type(self.dataset).__name__)
            y = _as_label_batch(y, n, type(self.dataset).__name__)
            if self.transform is not None:
                x = _as_image_batch(self.transform(x), n, repr(self.transform))
            yield x, y

    def __repr__(self) -> str:
        return (f"DataLoader({self.dataset!r}, batch_size={self.batch_size}, "
                f"drop_last={self.drop_last}, prefetch={self.prefetch}, "
                f"sampler={self.sampler!r}, transform={self.transform!r})")


# ----------------------------------------------------------------------------------------------
# Background prefetching
# ----------------------------------------------------------------------------------------------

# Iterators whose thread may still run; closed at interpreter exit (see _close_all_at_exit).
_live_iterators: "weakref.WeakSet[_PrefetchIterator]" = weakref.WeakSet()

_BATCH, _ERROR, _END = "batch", "error", "end"


def _produce(batches, out: queue.Queue, stop: threading.Event) -> None:
    """Thread body: put ``(kind, value)`` items on ``out`` until done, failed or stopped.

    It holds no reference to the consumer's iterator object, so dropping that object (e.g. at
    a ``break``) lets it be collected, which stops this thread.
    """

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                pass
        return False

    try:
        for batch in batches:
            if not put((_BATCH, batch)):
                return
        put((_END, None))
    except BaseException as exc:  # noqa: B902 - every failure must reach the consumer
        put((_ERROR, exc))
    finally:
        batches.close()  # run the generator's cleanup here, in the thread that ran it


class _PrefetchIterator:
    """Iterator over batches prepared by one background thread, ``depth`` batches ahead.

    Usable as a context manager; :meth:`close` stops the thread and waits for it (at most the
    time the producer needs to finish the batch it is preparing).
    """

    def __init__(self, batches, depth: int):
        self._queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=_produce, args=(batches, self._queue, self._stop),
                                        name=PREFETCH_THREAD_NAME, daemon=True)
        self._thread.start()
        _live_iterators.add(self)

    def __iter__(self):
        return self

    def __next__(self):
        if self._closed:
            raise StopIteration
        kind, value = self._get()
        if kind == _BATCH:
            return value
        self.close()
        if kind == _ERROR:
            raise value  # the producer's exception, traceback included
        raise StopIteration

    def _get(self):
        while True:
            try:
                return self._queue.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    self.close()
                    raise RuntimeError("the prefetch thread ended without a result") from None

    def close(self, timeout: float | None = None) -> None:
        """Stop the producer thread, drop prefetched batches and wait for the thread to end."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        try:
            while True:  # free the prefetched batches now
                self._queue.get_nowait()
        except queue.Empty:
            pass
        # Joining from the thread itself is impossible; at finalisation daemon threads may be
        # frozen forever, so never wait for one then.
        if threading.current_thread() is not self._thread and not sys.is_finalizing():
            self._thread.join(timeout)
        _live_iterators.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self):
        if not getattr(self, "_closed", True):
            self.close()


@atexit.register
def _close_all_at_exit() -> None:
    # atexit runs before daemon threads are frozen: stop producers while they can still exit.
    for iterator in list(_live_iterators):
        iterator.close(timeout=1.0)
