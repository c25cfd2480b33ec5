"""Transforms on image batches: (N, C, H, W) arrays in, (N, C, H', W') arrays out.

Every transform is vectorised over the batch (no Python loop over samples) and returns a new
array, never modifying its input (which may be a view of a dataset's storage). Random
transforms draw independently for every sample, from their own ``numpy.random.Generator``
given as ``rng`` (a Generator, or a seed for a new one; ``None`` seeds from the OS), so a
seeded pipeline is reproducible. Unlike torchvision, which applies one random crop or flip to
a whole batched tensor, each sample gets its own.
"""

from __future__ import annotations

import numbers

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["Compose", "Normalize", "RandomCrop", "RandomHorizontalFlip"]


def _as_generator(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _check_batch(images, name: str) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"{name} expects an (N, C, H, W) batch, got shape {images.shape}")
    return images


def _pair(value, name: str, minimum: int) -> tuple:
    """An int or an (h, w) pair of ints, each >= minimum, as an (h, w) tuple."""
    pair = (value, value) if isinstance(value, numbers.Integral) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, numbers.Integral) and v >= minimum for v in pair):
        raise ValueError(f"{name} must be an integer >= {minimum} or a pair of them, got "
                         f"{value!r}")
    return int(pair[0]), int(pair[1])


class Compose:
    """Apply ``transforms`` one after the other."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose expects callables, got {type(t).__name__}")

    def __call__(self, images: np.ndarray) -> np.ndarray:
        for t in self.transforms:
            images = t(images)
        return images

    def __repr__(self) -> str:
        return f"Compose([{', '.join(repr(t) for t in self.transforms)}])"


class Normalize:
    """``(x - mean[c]) / std[c]`` per channel, as float32.

    Args:
        mean, std: one number for every channel, or one per channel.
    """

    def __init__(self, mean, std):
        mean = np.asarray(mean, dtype=np.float32).reshape(-1)
        std = np.asarray(std, dtype=np.float32).reshape(-1)
        if mean.size == 0 or std.size == 0:
            raise ValueError("mean and std must not be empty")
        if not np.all(std > 0):
            raise ValueError(f"std must be positive, got {std.tolist()}")
        self.mean, self.std = mean, std

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = _check_batch(images, "Normalize")
        channels = images.shape[1]
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values.size not in (1, channels):
                raise ValueError(f"Normalize has {values.size} {name} values for images with "
                                 f"{channels} channels")
        mean = self.mean.reshape(1, -1, 1, 1)
        std = self.std.reshape(1, -1, 1, 1)
        return ((images - mean) / std).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class RandomCrop:
    """Pad every image with zeros, then crop a random ``size`` window from each one.

    Args:
        size: output (height, width), or one int for a square.
        padding: zeros added on each side, an int or a (vertical, horizontal) pair.
        rng: ``numpy.random.Generator`` or seed.

    Every sample gets its own window offset, drawn uniformly among the valid ones.
    """

    def __init__(self, size, padding=0, rng=None):
        self.size = _pair(size, "size", 1)
        self.padding = _pair(padding, "padding", 0)
        self.rng = _as_generator(rng)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = _check_batch(images, "RandomCrop")
        n, c, h, w = images.shape
        pad_h, pad_w = self.padding
        crop_h, crop_w = self.size
        padded_h, padded_w = h + 2 * pad_h, w + 2 * pad_w
        if crop_h > padded_h or crop_w > padded_w:
            raise ValueError(f"RandomCrop size {self.size} is larger than the padded images "
                             f"({padded_h}, {padded_w})")
        if pad_h or pad_w:
            padded = np.zeros((n, c, padded_h, padded_w), dtype=images.dtype)
            padded[:, :, pad_h:pad_h + h, pad_w:pad_w + w] = images
        else:
            padded = images
        top = self.rng.integers(0, padded_h - crop_h + 1, size=n)
        left = self.rng.integers(0, padded_w - crop_w + 1, size=n)
        # windows[i, c, y, x] is the crop_h x crop_w window at (y, x): a view, nothing copied.
        windows = sliding_window_view(padded, (crop_h, crop_w), axis=(2, 3))
        # One gather picks each sample's window; the advanced indices (split by the channel
        # slice) put the batch axis first: (N, C, crop_h, crop_w).
        return np.ascontiguousarray(windows[np.arange(n), :, top, left])

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p``, independently per sample.

    Args:
        p: flip probability in [0, 1] (0 never flips, 1 always does).
        rng: ``numpy.random.Generator`` or seed.
    """

    def __init__(self, p: float = 0.5, rng=None):
        if not (isinstance(p, numbers.Real) and 0 <= p <= 1):
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.rng = _as_generator(rng)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = _check_batch(images, "RandomHorizontalFlip")
        flip = self.rng.random(images.shape[0]) < self.p  # random() is in [0, 1): exact at 0, 1
        return np.where(flip[:, None, None, None], images[..., ::-1], images)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"
