"""Datasets: what a :class:`~fastconv.data.DataLoader` reads samples and batches from.

A dataset is any object with ``__len__`` and ``__getitem__(i) -> (x, y)``: ``x`` one image
(C, H, W), ``y`` its integer class label. It may also provide the fast path
``get_batch(indices) -> (xs, ys)``, which reads a whole batch at once from a 1-D int64 index
array (``xs`` (N, C, H, W), ``ys`` (N,)); the loader uses it when present and otherwise stacks
``__getitem__`` results. Subclassing :class:`Dataset` is optional: it only documents the
protocol and provides a stacking ``get_batch``.

:class:`ArrayDataset` holds images and labels as NumPy arrays and reads batches with one
fancy-indexing operation. :class:`Subset`, :func:`random_split` and :func:`train_test_split`
select parts of any dataset without copying its samples.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["Dataset", "ArrayDataset", "Subset", "random_split", "train_test_split"]


# ----------------------------------------------------------------------------------------------
# Helpers shared by the datasets, the loader and the readers
# ----------------------------------------------------------------------------------------------

def _uint8_to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1] (``x / 255``), in one pass."""
    return np.divide(images, np.float32(255.0), dtype=np.float32)


def _is_index(value) -> bool:
    """True for a Python or NumPy integer (bools excluded: they are masks, not indices)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _check_indices(indices, size: int, what: str = "indices") -> np.ndarray:
    """Return ``indices`` as a 1-D int64 array after checking every entry is in [0, size)."""
    arr = np.asarray(indices)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-D sequence of integers, got shape {arr.shape}")
    if arr.size == 0:  # np.asarray([]) is float64; an empty selection is still valid
        return np.empty(0, dtype=np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{what} must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    low, high = int(arr.min()), int(arr.max())
    if low < 0 or high >= size:
        bad = low if low < 0 else high
        raise IndexError(f"{what}: index {bad} is out of range for a dataset of {size} samples")
    return arr


def _stack_samples(dataset, indices: np.ndarray):
    """Read a batch one ``dataset[i]`` at a time and stack it (the generic slow path)."""
    images, labels = [], []
    for i in indices:
        sample = dataset[int(i)]
        if not (isinstance(sample, tuple) and len(sample) == 2):
            raise TypeError(f"{type(dataset).__name__}[{int(i)}] must return an (x, y) pair, "
                            f"got {type(sample).__name__}")
        images.append(np.asarray(sample[0]))
        labels.append(sample[1])
    if not images:
        raise ValueError("cannot stack an empty batch")
    return np.stack(images), np.asarray(labels)


def read_batch(dataset, indices: np.ndarray):
    """``dataset.get_batch(indices)`` if the dataset has that fast path, else stacked samples."""
    get_batch = getattr(dataset, "get_batch", None)
    if get_batch is not None:
        return get_batch(indices)
    return _stack_samples(dataset, indices)


def _labels_of(dataset) -> np.ndarray:
    """All labels of ``dataset``: its ``labels`` attribute when it has one, else read them."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        labels = [dataset[i][1] for i in range(len(dataset))]
    return np.asarray(labels)


# ----------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------

class Dataset:
    """Base class of map-style datasets: ``len(ds)`` samples, ``ds[i] -> (x, y)``.

    Subclasses implement ``__len__`` and ``__getitem__``; they should override
    :meth:`get_batch` when they can read many samples faster than one at a time.
    """

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int):
        raise NotImplementedError

    def get_batch(self, indices: np.ndarray):
        """Return ``(xs, ys)`` for the 1-D int64 ``indices``; this default stacks ``self[i]``."""
        return _stack_samples(self, indices)


class ArrayDataset(Dataset):
    """Images and labels held in memory as NumPy arrays.

    Args:
        images: (N, C, H, W) array, float32, float64 (converted to float32 once, here) or uint8.
        labels: (N,) integer array (stored as int64).
        transform: optional batch transform (see :mod:`fastconv.data.transforms`) applied to
            every batch read, and to single samples as batches of one.
        scale_uint8: required for uint8 images, ignored for float ones. ``True`` maps pixels to
            float32 in [0, 1] (``x / 255``); ``False`` converts them to float32 unchanged
            (0..255, e.g. to follow with ``Normalize`` in pixel units). The images stay uint8
            in memory (4x smaller) and are converted batch by batch as they are read.

    ``get_batch`` reads a batch with one fancy-indexing operation; both it and ``ds[i]``
    return float32 images and int64 labels.
    """

    def __init__(self, images, labels, transform=None, *, scale_uint8: bool | None = None):
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.ndim != 4:
            hint = " (add the channel axis: images[:, None])" if images.ndim == 3 else ""
            raise ValueError(f"images must be a 4-D (N, C, H, W) array, got shape "
                             f"{images.shape}{hint}")
        if images.dtype == np.uint8:
            if scale_uint8 is None:
                raise ValueError("images are uint8: pass scale_uint8=True to read them as "
                                 "float32 in [0, 1] (x / 255), or scale_uint8=False to keep "
                                 "their 0..255 values as float32")
        elif images.dtype.kind == "f":
            images = images.astype(np.float32, copy=False)
            scale_uint8 = False
        else:
            raise TypeError(f"images must be float32, float64 or uint8, got {images.dtype}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"labels must be a 1-D array of {images.shape[0]} labels (one per "
                             f"image), got shape {labels.shape}")
        if labels.size and labels.dtype.kind not in "iu":
            raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
        self.images = images
        self.labels = labels.astype(np.int64, copy=False)
        self.transform = transform
        self.scale_uint8 = bool(scale_uint8)

    def __len__(self) -> int:
        return self.images.shape[0]

    def _as_float32(self, images: np.ndarray) -> np.ndarray:
        if images.dtype == np.float32:
            return images
        if self.scale_uint8:
            return _uint8_to_unit(images)
        return images.astype(np.float32)

    def __getitem__(self, index: int):
        if not _is_index(index):
            raise TypeError(f"dataset indices must be integers, got {type(index).__name__}")
        image = self._as_float32(self.images[index])
        if self.transform is not None:
            image = self.transform(image[None])[0]
        return image, self.labels[index]

    def get_batch(self, indices: np.ndarray):
        indices = np.asarray(indices)
        images = self._as_float32(self.images[indices])  # fancy indexing: one copy, no loop
        if self.transform is not None:
            images = self.transform(images)
        return images, self.labels[indices]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self)} images of shape {self.images.shape[1:]}, "
                f"dtype {self.images.dtype})")


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order (no sample is copied).

    Batches are read through the parent's ``get_batch`` when it has one, so a subset of an
    :class:`ArrayDataset` keeps the vectorised path.
    """

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = _check_indices(indices, len(dataset), "Subset indices")

    def __len__(self) -> int:
        return self.indices.shape[0]

    def __getitem__(self, index: int):
        if not _is_index(index):
            raise TypeError(f"dataset indices must be integers, got {type(index).__name__}")
        return self.dataset[int(self.indices[index])]

    def get_batch(self, indices: np.ndarray):
        return read_batch(self.dataset, self.indices[np.asarray(indices)])

    @property
    def labels(self) -> np.ndarray:
        """The subset's labels, when the parent dataset exposes a ``labels`` array."""
        parent = getattr(self.dataset, "labels", None)
        if parent is None:
            raise AttributeError(f"{type(self.dataset).__name__} has no labels attribute")
        return np.asarray(parent)[self.indices]

    def __repr__(self) -> str:
        return f"Subset({len(self)} of {len(self.dataset)} samples of {self.dataset!r})"


# ----------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------

def random_split(dataset, lengths, seed: int | None = None) -> list:
    """Split ``dataset`` at random into non-overlapping :class:`Subset` objects.

    Args:
        dataset: any dataset.
        lengths: the parts' sizes, either integers summing to ``len(dataset)`` or fractions
            summing to 1 (sizes are rounded down, then the leftover samples are dealt one per
            part from the first, as ``torch.utils.data.random_split`` does).
        seed: seed of the permutation; the same seed gives the same split.

    Each part keeps its samples in the dataset's order (the loader shuffles, if asked).
    """
    n = len(dataset)
    lengths = list(lengths)
    if not lengths:
        raise ValueError("lengths must not be empty")
    if all(_is_index(k) for k in lengths):
        counts = [int(k) for k in lengths]
        if any(k < 0 for k in counts) or sum(counts) != n:
            raise ValueError(f"lengths {counts} must be non-negative and sum to the dataset's "
                             f"{n} samples")
    elif all(isinstance(f, numbers.Real) and 0 <= f <= 1 for f in lengths):
        if abs(sum(lengths) - 1) > 1e-6:
            raise ValueError(f"fractions {lengths} must sum to 1")
        counts = [int(np.floor(f * n)) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
    else:
        raise ValueError(f"lengths must be all integers or all fractions in [0, 1], got {lengths}")
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([0] + counts)
    return [Subset(dataset, np.sort(order[lo:hi])) for lo, hi in zip(bounds[:-1], bounds[1:])]


def _train_test_indices(n: int, test_fraction: float, seed, labels=None):
    """Sorted (train, test) index arrays; stratified by ``labels`` when they are given.

    The test part has ``round(test_fraction * n)`` samples. Stratified, each class gives
    ``count * test_fraction`` of them, rounded so that the total is exact (largest remainders
    get the leftover samples).
    """
    if not (isinstance(test_fraction, numbers.Real) and 0 < test_fraction < 1):
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    n_test = int(np.floor(test_fraction * n + 0.5))
    if not 0 < n_test < n:
        raise ValueError(f"test_fraction={test_fraction} of {n} samples leaves an empty part")
    rng = np.random.default_rng(seed)
    if labels is None:
        test = rng.choice(n, size=n_test, replace=False)
    else:
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
        _, class_of, counts = np.unique(labels, return_inverse=True, return_counts=True)
        class_of = class_of.reshape(-1)  # NumPy 2.0.x returns inverse with the input's shape
        share = counts * (n_test / n)
        quota = np.floor(share).astype(np.int64)
        leftover = n_test - int(quota.sum())
        quota[np.argsort(quota - share, kind="stable")[:leftover]] += 1
        test = np.concatenate([rng.choice(np.flatnonzero(class_of == c), size=q, replace=False)
                               for c, q in enumerate(quota)])
    test = np.sort(test)
    train = np.setdiff1d(np.arange(n), test, assume_unique=True)
    return train, test


def train_test_split(dataset, test_fraction: float = 0.2, seed: int | None = 0,
                     stratify: bool = False):
    """Split ``dataset`` into ``(train, test)`` :class:`Subset` objects.

    Args:
        dataset: any dataset.
        test_fraction: share of samples in the test part (rounded to the nearest count).
        seed: seed of the random choice; the same seed gives the same split.
        stratify: keep every class's share the same in both parts (labels come from the
            dataset's ``labels`` attribute when it has one, else from reading every sample).

    Both parts keep the dataset's order.
    """
    labels = _labels_of(dataset) if stratify else None
    train, test = _train_test_indices(len(dataset), test_fraction, seed, labels)
    return Subset(dataset, train), Subset(dataset, test)
