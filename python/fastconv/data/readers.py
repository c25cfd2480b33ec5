"""Readers for the standard small image-classification data sets.

* MNIST and Fashion-MNIST: IDX files, raw or gzip-compressed (:func:`read_idx`,
  :func:`load_mnist`);
* CIFAR-10: the binary version or the python (pickle) version (:func:`load_cifar10`);
* scikit-learn's bundled 8x8 handwritten digits (:func:`load_digits`).

Every reader checks what it reads (magic numbers, sizes, shapes, dtypes, label ranges) and
raises :class:`DatasetFormatError`, a ``ValueError`` whose message starts with the offending
file's path, rather than return a wrong array. Images come back as
:class:`~fastconv.data.ArrayDataset` objects of float32 (N, C, H, W) arrays in [0, 1] with
int64 labels. Downloading is left to the user; the functions only read local files.
"""

from __future__ import annotations

import gzip
import math
import pickle
import zlib
from pathlib import Path

import numpy as np

from .dataset import ArrayDataset, _train_test_indices, _uint8_to_unit

__all__ = ["DatasetFormatError", "read_idx", "load_mnist", "load_cifar10", "load_digits"]

EXTRAS_HINT = 'install it with: pip install "fastconv[datasets]"'


class DatasetFormatError(ValueError):
    """A data file is truncated, corrupt or not in the expected format.

    ``path`` is the file; the message starts with it.
    """

    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)


def _check_class_labels(labels: np.ndarray, path, num_classes: int = 10) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise DatasetFormatError(path, f"label {int(labels[bad[0]])} at index {int(bad[0])} is "
                                       f"outside 0..{num_classes - 1}")


# ----------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST (IDX)
# ----------------------------------------------------------------------------------------------

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_UBYTE = 0x08
_IDX_MAGIC_LABELS = 0x00000801  # unsigned bytes, 1 dimension
_IDX_MAGIC_IMAGES = 0x00000803  # unsigned bytes, 3 dimensions
_MNIST_SIDE = 28


def _read_maybe_gzip(path: Path) -> bytes:
    """The file's bytes, decompressed when it starts with the gzip magic (whatever its name)."""
    data = path.read_bytes()
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:  # bad header / truncated / bad stream
            raise DatasetFormatError(path, f"corrupt or truncated gzip data ({exc})") from exc
    return data


def read_idx(path) -> np.ndarray:
    """Read an MNIST-style IDX file of unsigned bytes, raw or gzip-compressed.

    Accepts image files (magic 0x00000803: count, rows, columns) and label files (magic
    0x00000801: count). Gzip is detected by the file's first bytes, not its name.

    Returns:
        the uint8 array with the header's dimensions: (N, rows, cols) or (N,).

    Raises:
        DatasetFormatError: bad magic number, element type other than unsigned byte (0x08),
            truncated header, or a payload that is not exactly the header's dimensions.
    """
    path = Path(path)
    data = _read_maybe_gzip(path)
    if len(data) < 4:
        raise DatasetFormatError(path, f"{len(data)} bytes is too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if magic not in (_IDX_MAGIC_IMAGES, _IDX_MAGIC_LABELS):
        if data[:2] == b"\0\0" and data[2] != _IDX_UBYTE and data[3] in (1, 3):
            problem = (f"IDX element type 0x{data[2]:02x} is not supported (only 0x08, "
                       f"unsigned byte)")
        else:
            problem = (f"bad magic number 0x{magic:08x}: expected 0x{_IDX_MAGIC_IMAGES:08x} "
                       f"(images) or 0x{_IDX_MAGIC_LABELS:08x} (labels); not an IDX file")
        raise DatasetFormatError(path, problem)
    ndim = data[3]
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DatasetFormatError(path, f"truncated header: {ndim} dimensions need "
                                       f"{header_size} bytes, the file has {len(data)}")
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if ndim == 3 and 0 in dims[1:]:
        raise DatasetFormatError(path, f"image dimensions {dims[1:]} must be positive")
    expected, found = math.prod(dims), len(data) - header_size
    if found != expected:
        problem = "truncated" if found < expected else "has trailing bytes"
        raise DatasetFormatError(path, f"{problem}: the header's dimensions {dims} need "
                                       f"{expected} data bytes, the file has {found}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims).copy()


def _find_one(folder: Path, name: str) -> Path:
    """``folder/name`` or ``folder/name.gz``, whichever exists (the raw one first)."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"neither {name} nor {name}.gz found in {folder}")


def load_mnist(root, train: bool = True) -> ArrayDataset:
    """Load MNIST or Fashion-MNIST (same file format and names) from the folder ``root``.

    Reads ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` (``train=True``) or the
    ``t10k-...`` pair, each raw or with a ``.gz`` suffix, as distributed.

    Returns:
        an :class:`~fastconv.data.ArrayDataset` of (N, 1, 28, 28) float32 images in [0, 1]
        and int64 labels in 0..9.

    Raises:
        FileNotFoundError: a file is missing.
        DatasetFormatError: a file is corrupt, an image file holds labels or the other way
            round, images are not 28x28, the counts differ or a label is outside 0..9.
    """
    root = Path(root)
    prefix = "train" if train else "t10k"
    images_path = _find_one(root, f"{prefix}-images-idx3-ubyte")
    labels_path = _find_one(root, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise DatasetFormatError(images_path, "holds labels (1-D IDX), expected images (3-D)")
    if labels.ndim != 1:
        raise DatasetFormatError(labels_path, "holds images (3-D IDX), expected labels (1-D)")
    if images.shape[1:] != (_MNIST_SIDE, _MNIST_SIDE):
        raise DatasetFormatError(images_path, f"images are {images.shape[1]}x{images.shape[2]}, "
                                              f"expected {_MNIST_SIDE}x{_MNIST_SIDE}")
    if images.shape[0] == 0:
        raise DatasetFormatError(images_path, "holds no images")
    if labels.shape[0] != images.shape[0]:
        raise DatasetFormatError(labels_path, f"holds {labels.shape[0]} labels but "
                                              f"{images_path} holds {images.shape[0]} images")
    labels = labels.astype(np.int64)
    _check_class_labels(labels, labels_path)
    return ArrayDataset(_uint8_to_unit(images[:, None]), labels)


# ----------------------------------------------------------------------------------------------
# CIFAR-10
# ----------------------------------------------------------------------------------------------

_CIFAR_SHAPE = (3, 32, 32)
_CIFAR_PIXELS = 3 * 32 * 32
_CIFAR_RECORD = 1 + _CIFAR_PIXELS  # label byte, then the red, green and blue 32x32 planes
_CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST_FILES = ("test_batch",)
_CIFAR_SUBFOLDERS = ("cifar-10-batches-bin", "cifar-10-batches-py")  # as the archives unpack


def _read_cifar_binary(path: Path):
    """(uint8 images (N, 3, 32, 32), int64 labels) of one binary-version batch file."""
    data = path.read_bytes()
    if len(data) == 0 or len(data) % _CIFAR_RECORD:
        raise DatasetFormatError(path, f"size {len(data)} bytes is not a positive multiple of "
                                       f"the {_CIFAR_RECORD}-byte record (1 label byte + "
                                       f"{_CIFAR_PIXELS} pixel bytes): truncated or not a "
                                       f"CIFAR-10 binary batch")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int64)
    _check_class_labels(labels, path)
    return records[:, 1:].reshape((-1,) + _CIFAR_SHAPE), labels


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild NumPy arrays (and bytes), never call other globals.

    A pickle can run arbitrary code through the globals it names; the CIFAR-10 batches need
    only these, so refusing every other one blocks that route. It narrows the risk but does
    not make untrusted pickles safe: only load files you trust.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),  # pickles written by NumPy 1.x (CIFAR's)
        ("numpy._core.multiarray", "_reconstruct"),  # NumPy 2.x
        ("numpy.core.numeric", "_frombuffer"),  # protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes pickled by Python 3 with protocol < 3
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: a CIFAR-10 "
                                         f"batch holds only NumPy arrays and lists")
        return super().find_class(module, name)


def _read_cifar_pickle(path: Path):
    """(uint8 images (N, 3, 32, 32), int64 labels) of one python-version batch file."""
    try:
        with open(path, "rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated or corrupt pickles raise many different types
        raise DatasetFormatError(path, f"cannot unpickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(batch, dict):
        raise DatasetFormatError(path, f"holds a {type(batch).__name__}, expected the dict of a "
                                       f"CIFAR-10 python batch")
    missing = [key for key in (b"data", b"labels") if key not in batch]
    if missing:
        found = sorted(batch, key=repr)
        raise DatasetFormatError(path, f"missing key(s) {missing} (found {found})")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != _CIFAR_PIXELS or data.shape[0] == 0:
        described = (f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                     else type(data).__name__)
        raise DatasetFormatError(path, f"b'data' is a {described}, expected a uint8 array of "
                                       f"shape (N, {_CIFAR_PIXELS})")
    labels = np.asarray(batch[b"labels"])
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or labels.shape[0] != data.shape[0]:
        raise DatasetFormatError(path, f"b'labels' must be {data.shape[0]} integers (one per "
                                       f"image), got {labels.dtype} values of shape "
                                       f"{labels.shape}")
    labels = labels.astype(np.int64)
    _check_class_labels(labels, path)
    return data.reshape((-1,) + _CIFAR_SHAPE), labels


def load_cifar10(root, train: bool = True) -> ArrayDataset:
    """Load CIFAR-10 from ``root``, in whichever of its two distributed formats it holds.

    Looks in ``root`` and in its ``cifar-10-batches-bin`` / ``cifar-10-batches-py``
    sub-folders (the archives' layout) for

    * the binary version: ``data_batch_1.bin`` .. ``data_batch_5.bin`` and ``test_batch.bin``
      (records of 1 label byte + 3072 pixel bytes), preferred when both are present; or
    * the python version: ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, pickled
      dicts with ``b"data"`` (uint8, (N, 3072)) and ``b"labels"``. **Pickle can run code**:
      these are unpickled with ``encoding="bytes"`` by an unpickler that only accepts the
      NumPy globals the batches need, but load only files you trust.

    Returns:
        an :class:`~fastconv.data.ArrayDataset` of (N, 3, 32, 32) float32 images in [0, 1]
        and int64 labels in 0..9 (training batches concatenated in order).

    Raises:
        FileNotFoundError: no complete set of batches is found (the message lists what is).
        DatasetFormatError: a batch file is truncated, corrupt or malformed.
    """
    root = Path(root)
    names = _CIFAR_TRAIN_FILES if train else _CIFAR_TEST_FILES
    partial = []
    for folder in (root,) + tuple(root / sub for sub in _CIFAR_SUBFOLDERS):
        for suffix, read in ((".bin", _read_cifar_binary), ("", _read_cifar_pickle)):
            paths = [folder / f"{name}{suffix}" for name in names]
            present = [p for p in paths if p.is_file()]
            if len(present) == len(paths):
                parts = [read(p) for p in paths]
                images = np.concatenate([images for images, _ in parts])
                labels = np.concatenate([labels for _, labels in parts])
                return ArrayDataset(_uint8_to_unit(images), labels)
            if present:
                missing = ", ".join(p.name for p in paths if p not in present)
                partial.append(f"{folder} lacks {missing}")
    which = "training" if train else "test"
    detail = "; ".join(partial) if partial else "no batch files found"
    raise FileNotFoundError(f"no complete set of CIFAR-10 {which} batches in {root} or its "
                            f"{' / '.join(_CIFAR_SUBFOLDERS)} sub-folders (expected "
                            f"{', '.join(names)}, each with or without .bin): {detail}")


# ----------------------------------------------------------------------------------------------
# scikit-learn digits
# ----------------------------------------------------------------------------------------------

def load_digits(test_fraction: float = 0.2, seed: int | None = 0):
    """scikit-learn's bundled 8x8 handwritten digits (1797 images), split in two.

    Args:
        test_fraction: share of the images in the test part (rounded to the nearest count).
        seed: seed of the split; the same seed gives the same split.

    Returns:
        ``(train, test)`` :class:`~fastconv.data.ArrayDataset` objects of (N, 1, 8, 8) float32
        images in [0, 1] (scikit-learn's 0..16 divided by 16) and int64 labels 0..9. The split
        is stratified: each digit keeps its share in both parts. Needs scikit-learn.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as exc:
        raise ImportError(f"load_digits needs scikit-learn; {EXTRAS_HINT}") from exc
    digits = sklearn_load_digits()
    images = (np.asarray(digits.images, dtype=np.float32) / np.float32(16.0))[:, None]
    labels = np.asarray(digits.target, dtype=np.int64)
    train, test = _train_test_indices(len(labels), test_fraction, seed, labels)
    return (ArrayDataset(images[train], labels[train]),
            ArrayDataset(images[test], labels[test]))
