"""Samplers: which samples one epoch visits, and in which order.

The sampler protocol (duck-typed; subclassing :class:`Sampler` is optional):

``__iter__()``
    Yields the epoch's sample indices in order, as single integers or as 1-D integer arrays
    of any length. Arrays are *chunks of one index stream*, not batches: the
    :class:`~fastconv.data.DataLoader` concatenates the stream and cuts it into batches of
    ``batch_size`` (honouring ``drop_last``), so batching never depends on the sampler.
    Yielding the whole epoch as one array is the fastest. The loader calls ``iter(sampler)``
    once per epoch, in the thread that starts iterating the loader, so an order that depends
    on the epoch is fixed at that moment even when batches are prepared in the background.
``__len__()``
    The number of indices one epoch yields (summed over chunks). Only ``len(loader)`` needs it.
``set_epoch(epoch)`` (optional)
    Fixes the order of the next epochs as a function of ``epoch``;
    ``DataLoader.set_epoch`` forwards to it.

A sampler must be re-iterable (one ``__iter__`` per epoch); a one-shot iterator such as a
generator object is refused. A distributed sampler fits without special cases: rank ``r`` of
``w`` yields ``RandomSampler(n, seed).permutation(epoch)[r::w]``, has ``__len__`` equal to its
shard's size and forwards ``set_epoch``; every rank then sees a disjoint shard of the same
epoch-wide permutation.
"""

from __future__ import annotations

import numbers

import numpy as np

from .dataset import _is_index

__all__ = ["Sampler", "SequentialSampler", "RandomSampler", "IndexSampler"]


class Sampler:
    """Base class documenting the protocol above; subclasses implement both methods."""

    def __iter__(self):
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError


def _check_size(n) -> int:
    if not _is_index(n) or n < 0:
        raise ValueError(f"the number of samples must be a non-negative integer, got {n!r}")
    return int(n)


class SequentialSampler(Sampler):
    """``0, 1, ..., n - 1`` every epoch."""

    def __init__(self, n: int):
        self.n = _check_size(n)

    def __iter__(self):
        return iter((np.arange(self.n, dtype=np.int64),))

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"SequentialSampler({self.n})"


class RandomSampler(Sampler):
    """A fresh random permutation of ``0 .. n - 1`` every epoch.

    The order of epoch ``e`` is ``permutation(e)``, a pure function of ``(seed, e)``: it is
    drawn from a ``numpy.random.Generator`` seeded with the pair, so the same seed repeats the
    same sequence of orders and :meth:`set_epoch` can jump to any epoch. Each ``iter()``
    uses the current :attr:`epoch`, then advances it by one.

    Args:
        n: number of samples.
        seed: non-negative integer; ``None`` draws one from the OS (kept in :attr:`seed`, so a
            run can be logged and repeated).
    """

    def __init__(self, n: int, seed: int | None = None):
        self.n = _check_size(n)
        if seed is None:
            seed = int(np.random.SeedSequence().entropy)
        elif not _is_index(seed) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        self.seed = int(seed)
        self.epoch = 0

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of epoch ``epoch`` (int64 array), without changing :attr:`epoch`."""
        return np.random.default_rng([self.seed, int(epoch)]).permutation(self.n)

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` use epoch ``epoch`` (then ``epoch + 1``, ...)."""
        if not _is_index(epoch) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = int(epoch)

    def __iter__(self):
        # Draw the order now (not lazily), so it is fixed when the epoch starts.
        order = self.permutation(self.epoch)
        self.epoch += 1
        return iter((order,))

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"RandomSampler({self.n}, seed={self.seed}, epoch={self.epoch})"


class IndexSampler(Sampler):
    """The same given indices, in the given order, every epoch.

    Args:
        indices: a 1-D integer array, or a sequence of integers and/or 1-D integer arrays
            (concatenated in order).
    """

    def __init__(self, indices):
        if isinstance(indices, np.ndarray):
            chunks = [indices]
        else:
            chunks = [np.asarray([c]) if isinstance(c, numbers.Integral) else np.asarray(c)
                      for c in indices]
        for chunk in chunks:
            if chunk.ndim != 1 or (chunk.size and chunk.dtype.kind not in "iu"):
                raise TypeError("sampler indices must be integers or 1-D integer arrays, got "
                                f"an array of shape {chunk.shape} and dtype {chunk.dtype}")
        self.indices = (np.concatenate(chunks).astype(np.int64, copy=False) if chunks
                        else np.empty(0, dtype=np.int64))

    def __iter__(self):
        return iter((self.indices,))

    def __len__(self) -> int:
        return self.indices.shape[0]

    def __repr__(self) -> str:
        return f"IndexSampler({len(self)} indices)"
