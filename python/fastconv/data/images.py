"""Image files: :func:`load_image` for one picture, :class:`ImageFolder` for a labelled folder.

Both decode with Pillow (an optional dependency, imported on first use) and return float32
(C, H, W) pixels in [0, 1]: three channels (RGB; palette, alpha and grayscale images are
converted) or one with ``grayscale=True``.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path

import numpy as np

from .dataset import ArrayDataset, _uint8_to_unit
from .readers import EXTRAS_HINT, DatasetFormatError

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "load_image"]

#: File name suffixes (lower case) taken for images; other files are skipped.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".pbm",
                              ".tif", ".tiff", ".webp"})


def _import_pillow():
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(f"reading image files needs Pillow; {EXTRAS_HINT}") from exc
    return Image


def _size_pair(size):
    """``None``, an int (square) or an (height, width) pair -> ``None`` or (height, width)."""
    if size is None:
        return None
    pair = (size, size) if isinstance(size, numbers.Integral) else tuple(size)
    if len(pair) != 2 or not all(isinstance(v, numbers.Integral) and v > 0 for v in pair):
        raise ValueError(f"size must be a positive int or a (height, width) pair, got {size!r}")
    return int(pair[0]), int(pair[1])


def _read_uint8(path: Path, size, grayscale: bool, Image) -> np.ndarray:
    """Decode one image as uint8 (C, H, W), resized to ``size`` = (height, width) if given."""
    try:
        with Image.open(path) as img:
            # convert() decodes the whole file, so truncated data fails here, inside the try.
            img = img.convert("L" if grayscale else "RGB")
            if size is not None and img.size != (size[1], size[0]):  # Pillow sizes are (w, h)
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            pixels = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's errors for unreadable files
        raise DatasetFormatError(path, f"cannot read image ({exc})") from exc
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def load_image(path, size=None, grayscale: bool = False) -> np.ndarray:
    """Read one image file as a float32 (C, H, W) array in [0, 1].

    Args:
        path: the image file (any format Pillow reads).
        size: resize to this (height, width), or to a square for an int (bilinear);
            ``None`` keeps the file's size.
        grayscale: one luminance channel instead of three RGB ones.

    Raises:
        FileNotFoundError: no such file.
        DatasetFormatError: the file cannot be decoded (the message names it).
        ImportError: Pillow is not installed.
    """
    Image = _import_pillow()
    return np.ascontiguousarray(_uint8_to_unit(_read_uint8(Path(path), _size_pair(size),
                                                           grayscale, Image)))


def _image_files(folder: Path) -> list:
    """Image files under ``folder`` (recursively, hidden entries skipped), in sorted order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath) / name)
    return found


class ImageFolder(ArrayDataset):
    """A labelled folder of images, all loaded into memory: ``root/<class name>/<image>``.

    Class names are the sub-folders' names, sorted; class ``i`` is ``classes[i]``. Files whose
    suffix is not in :data:`IMAGE_EXTENSIONS` are skipped; class folders are searched
    recursively.

    Args:
        root: the folder holding one sub-folder per class.
        size: resize every image to this (height, width) (or square, for an int); without
            it, all images must have the same size.
        grayscale: one luminance channel instead of three RGB ones.
        transform: optional batch transform, as for :class:`~fastconv.data.ArrayDataset`.

    Attributes:
        classes: sorted class names; ``class_to_idx`` maps them to labels.
        paths: the image file of every sample, in sample order.
        images, labels: float32 (N, C, H, W) in [0, 1] and int64 (N,) arrays.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: no class folder, a class without images, or images of different sizes
            without ``size``.
        DatasetFormatError: an image file cannot be decoded (the message names it).
        ImportError: Pillow is not installed.
    """

    def __init__(self, root, size=None, grayscale: bool = False, transform=None):
        Image = _import_pillow()
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a folder")
        size = _size_pair(size)
        classes = sorted(entry.name for entry in root.iterdir()
                         if entry.is_dir() and not entry.name.startswith("."))
        if not classes:
            raise ValueError(f"{root} has no class sub-folders (expected root/<class>/<image>)")
        paths, labels = [], []
        for label, name in enumerate(classes):
            files = _image_files(root / name)
            if not files:
                raise ValueError(f"class folder {root / name} holds no image files "
                                 f"(suffixes {', '.join(sorted(IMAGE_EXTENSIONS))})")
            paths.extend(files)
            labels.extend([label] * len(files))
        pixels = []
        for path in paths:
            image = _read_uint8(path, size, grayscale, Image)
            if pixels and image.shape != pixels[0].shape:
                raise ValueError(f"{path} is {image.shape[2]}x{image.shape[1]} pixels but "
                                 f"{paths[0]} is {pixels[0].shape[2]}x{pixels[0].shape[1]}; "
                                 f"pass size=(height, width) to resize them all")
            pixels.append(image)
        super().__init__(_uint8_to_unit(np.stack(pixels)), np.asarray(labels, dtype=np.int64),
                         transform)
        self.root = root
        self.classes = classes
        self.class_to_idx = {name: i for i, name in enumerate(classes)}
        self.paths = paths

    def __repr__(self) -> str:
        return (f"ImageFolder({str(self.root)!r}: {len(self)} images of shape "
                f"{self.images.shape[1:]}, {len(self.classes)} classes)")
