"""Tests of fastconv.data: datasets, DataLoader (batching, shuffling, samplers, prefetching),
batch transforms, and the readers (IDX, CIFAR-10 binary and pickle, ImageFolder, digits).

Every data file is written by the test itself under pytest's tmp_path. Labels are often
``arange(n)`` so that a batch's labels say exactly which samples it holds.
"""

import gc
import gzip
import pickle
import re
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv.data import (ArrayDataset, Compose, DataLoader, Dataset, DatasetFormatError,
                           ImageFolder, IndexSampler, Normalize, RandomCrop,
                           RandomHorizontalFlip, RandomSampler, Subset, load_cifar10,
                           load_digits, load_image, load_mnist, random_split, read_idx,
                           train_test_split)
from fastconv.data.loader import PREFETCH_THREAD_NAME


def prefetch_threads():
    return [t for t in threading.enumerate() if t.name == PREFETCH_THREAD_NAME and t.is_alive()]


@pytest.fixture(autouse=True)
def _no_leaked_prefetch_thread():
    """Fail the test that leaves a prefetch thread running (after a short grace period)."""
    yield
    deadline = time.monotonic() + 2.0
    while prefetch_threads() and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert not prefetch_threads(), "a prefetch thread outlived its test"


def make_dataset(n=10, shape=(2, 3, 4), seed=0, **kwargs):
    """Random float32 images with labels 0..n-1 (a batch's labels are its sample indices)."""
    images = np.random.default_rng(seed).random((n,) + shape, dtype=np.float32)
    return ArrayDataset(images, np.arange(n), **kwargs)


def epoch_labels(loader):
    return np.concatenate([y for _, y in loader])


# ----------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------

def test_array_dataset_items_and_batches():
    ds = make_dataset(6)
    x, y = ds[4]
    assert x.shape == (2, 3, 4) and x.dtype == np.float32 and y == 4
    np.testing.assert_array_equal(x, ds.images[4])
    xs, ys = ds.get_batch(np.array([5, 0, 2]))
    np.testing.assert_array_equal(xs, ds.images[[5, 0, 2]])
    np.testing.assert_array_equal(ys, [5, 0, 2])
    assert ys.dtype == np.int64 and len(ds) == 6


def test_array_dataset_uint8_conversion_is_explicit():
    pixels = np.array([0, 17, 34, 51, 68, 85, 102, 255], dtype=np.uint8).reshape(2, 1, 2, 2)
    with pytest.raises(ValueError, match="scale_uint8"):
        ArrayDataset(pixels, [0, 1])
    scaled = ArrayDataset(pixels, [0, 1], scale_uint8=True)
    raw = ArrayDataset(pixels, [0, 1], scale_uint8=False)
    assert scaled.images.dtype == np.uint8  # kept compact, converted per batch
    xs, _ = scaled.get_batch(np.array([0, 1]))
    assert xs.dtype == np.float32
    np.testing.assert_array_equal(xs, pixels.astype(np.float32) / 255)
    assert xs.max() == 1.0 and xs.min() == 0.0
    xr, _ = raw.get_batch(np.array([1]))
    np.testing.assert_array_equal(xr, pixels[1:].astype(np.float32))
    np.testing.assert_array_equal(scaled[1][0], pixels[1].astype(np.float32) / 255)
    # float64 images are stored as float32
    assert ArrayDataset(np.zeros((1, 1, 1, 1)), [0]).images.dtype == np.float32


@pytest.mark.parametrize("images, labels, error, match", [
    (np.zeros((3, 4, 4), np.float32), [0, 1, 2], ValueError, r"images\[:, None\]"),
    (np.zeros((3, 1, 4, 4), np.float32), [0, 1], ValueError, "3 labels"),
    (np.zeros((2, 1, 4, 4), np.float32), [0.0, 1.5], TypeError, "integers"),
    (np.zeros((2, 1, 4, 4), np.int32), [0, 1], TypeError, "uint8"),
])
def test_array_dataset_rejects_bad_arrays(images, labels, error, match):
    with pytest.raises(error, match=match):
        ArrayDataset(images, labels)


def test_array_dataset_transform_applies_to_batches_and_items():
    ds = make_dataset(4, transform=Normalize(0.5, 2.0))
    xs, _ = ds.get_batch(np.array([1, 3]))
    np.testing.assert_allclose(xs, (ds.images[[1, 3]] - 0.5) / 2.0, rtol=1e-6)
    np.testing.assert_allclose(ds[2][0], (ds.images[2] - 0.5) / 2.0, rtol=1e-6)


def test_subset_and_random_split():
    ds = make_dataset(10)
    sub = Subset(ds, [7, 2, 9])
    assert len(sub) == 3 and sub[1][1] == 2
    np.testing.assert_array_equal(sub.get_batch(np.array([2, 0]))[1], [9, 7])
    np.testing.assert_array_equal(sub.labels, [7, 2, 9])
    with pytest.raises(IndexError):
        Subset(ds, [10])

    a, b = random_split(ds, [6, 4], seed=3)
    ia, ib = a.indices, b.indices
    assert len(a) == 6 and len(b) == 4
    assert np.intersect1d(ia, ib).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([ia, ib])), np.arange(10))
    np.testing.assert_array_equal(random_split(ds, [6, 4], seed=3)[0].indices, ia)
    assert any(not np.array_equal(random_split(ds, [6, 4], seed=s)[0].indices, ia)
               for s in range(4, 8))
    assert [len(p) for p in random_split(make_dataset(11), [0.5, 0.3, 0.2], seed=0)] == [6, 3, 2]
    with pytest.raises(ValueError, match="sum"):
        random_split(ds, [6, 5])


def test_train_test_split_stratified():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    ds = ArrayDataset(np.zeros((100, 1, 1, 1), np.float32), labels)
    train, test = train_test_split(ds, test_fraction=0.2, seed=1, stratify=True)
    assert len(test) == 20 and len(train) == 80
    np.testing.assert_array_equal(np.bincount(test.labels), [10, 6, 4])
    both = np.concatenate([train.indices, test.indices])
    np.testing.assert_array_equal(np.sort(both), np.arange(100))
    again = train_test_split(ds, test_fraction=0.2, seed=1, stratify=True)[1]
    np.testing.assert_array_equal(again.indices, test.indices)
    with pytest.raises(ValueError, match="test_fraction"):
        train_test_split(ds, test_fraction=1.0)
    # shares 1.2, 2.0, 2.8 of 6 test samples: the leftover one goes to the largest remainder
    uneven = ArrayDataset(np.zeros((15, 1, 1, 1), np.float32), np.repeat([0, 1, 2], [3, 5, 7]))
    _, test = train_test_split(uneven, test_fraction=0.4, seed=0, stratify=True)
    np.testing.assert_array_equal(np.bincount(test.labels), [1, 2, 3])
    assert len(train_test_split(uneven, test_fraction=0.4, seed=0)[1]) == 6


# ----------------------------------------------------------------------------------------------
# DataLoader: batching
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prefetch", [0, 2])
def test_batches_shapes_dtypes_and_last_partial_batch(prefetch):
    ds = make_dataset(10)
    loader = DataLoader(ds, batch_size=4, prefetch=prefetch)
    batches = list(loader)
    assert len(loader) == 3 == len(batches)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    for i, (x, y) in enumerate(batches):
        assert x.dtype == np.float32 and x.flags.c_contiguous and x.shape[1:] == (2, 3, 4)
        assert y.dtype == np.int64 and y.flags.c_contiguous and y.shape == (x.shape[0],)
        np.testing.assert_array_equal(y, np.arange(4 * i, min(4 * i + 4, 10)))
        np.testing.assert_array_equal(x, ds.images[y])


@pytest.mark.parametrize("n, batch_size, drop_last, sizes", [
    (10, 4, True, [4, 4]),
    (10, 4, False, [4, 4, 2]),
    (8, 4, True, [4, 4]),
    (8, 4, False, [4, 4]),
    (3, 5, True, []),
    (3, 5, False, [3]),
    (1, 1, False, [1]),
])
def test_drop_last_and_len(n, batch_size, drop_last, sizes):
    loader = DataLoader(make_dataset(n), batch_size=batch_size, drop_last=drop_last)
    assert [len(y) for _, y in loader] == sizes
    assert len(loader) == len(sizes)


class ListDataset:
    """A duck-typed dataset without get_batch: float64 (C, H, W) images, int labels."""

    def __init__(self, n):
        self.images = [np.full((1, 2, 2), float(i)) for i in range(n)]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], i


class StackingDataset(Dataset):
    """Relies on Dataset's default get_batch (stacking __getitem__)."""

    def __len__(self):
        return 5

    def __getitem__(self, i):
        return np.full((1, 1, 3), i, dtype=np.uint8), i


@pytest.mark.parametrize("dataset", [ListDataset(5), StackingDataset()])
def test_datasets_without_fast_path_are_stacked(dataset):
    batches = list(DataLoader(dataset, batch_size=2, prefetch=0))
    x, y = batches[1]
    assert x.dtype == np.float32 and x.flags.c_contiguous and y.dtype == np.int64
    np.testing.assert_array_equal(y, [2, 3])
    np.testing.assert_array_equal(x[:, 0, 0, 0], [2.0, 3.0])
    assert [len(y) for _, y in batches] == [2, 2, 1]


def test_loader_rejects_non_integer_labels_and_bad_arguments():
    class FloatLabels(ListDataset):
        def __getitem__(self, i):
            return self.images[i], float(i) + 0.5

    with pytest.raises(TypeError, match="labels"):
        list(DataLoader(FloatLabels(3), batch_size=2, prefetch=0))
    ds = make_dataset(4)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(ds, batch_size=0)
    with pytest.raises(ValueError, match="prefetch"):
        DataLoader(ds, prefetch=-1)
    with pytest.raises(ValueError, match="sampler"):
        DataLoader(ds, shuffle=True, sampler=[0, 1])
    with pytest.raises(ValueError, match="seed"):
        DataLoader(ds, seed=1, sampler=[0, 1])


# ----------------------------------------------------------------------------------------------
# DataLoader: shuffling and set_epoch
# ----------------------------------------------------------------------------------------------

def test_shuffle_visits_every_sample_once_per_epoch_in_new_orders():
    loader = DataLoader(make_dataset(50), batch_size=8, shuffle=True, seed=7)
    orders = [epoch_labels(loader) for _ in range(4)]
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(50))
    assert not np.array_equal(orders[0], np.arange(50))
    assert len({tuple(o) for o in orders}) == 4  # every epoch has its own order


def test_shuffle_is_reproducible_for_a_seed():
    def orders(seed, prefetch):
        loader = DataLoader(make_dataset(30), batch_size=7, shuffle=True, seed=seed,
                            prefetch=prefetch)
        return [epoch_labels(loader) for _ in range(3)]

    first = orders(11, prefetch=0)
    for a, b in zip(first, orders(11, prefetch=2)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, orders(12, prefetch=0)))


def test_set_epoch_makes_the_order_a_function_of_seed_and_epoch():
    walked = DataLoader(make_dataset(40), batch_size=5, shuffle=True, seed=3)
    by_epoch = [epoch_labels(walked) for _ in range(3)]
    jumped = DataLoader(make_dataset(40), batch_size=5, shuffle=True, seed=3)
    for epoch in (2, 0, 1, 2):
        jumped.set_epoch(epoch)
        np.testing.assert_array_equal(epoch_labels(jumped), by_epoch[epoch])
    # after set_epoch(e), the following epoch is e + 1
    jumped.set_epoch(0)
    epoch_labels(jumped)
    np.testing.assert_array_equal(epoch_labels(jumped), by_epoch[1])
    assert np.array_equal(RandomSampler(40, seed=3).permutation(2), by_epoch[2])


def test_unseeded_shuffle_still_covers_every_sample():
    order = epoch_labels(DataLoader(make_dataset(20), batch_size=3, shuffle=True))
    np.testing.assert_array_equal(np.sort(order), np.arange(20))


# ----------------------------------------------------------------------------------------------
# DataLoader: the sampler protocol
# ----------------------------------------------------------------------------------------------

class ShardSampler:
    """What a distributed sampler looks like: rank r of w takes perm[r::w] of a shared,
    epoch-seeded permutation. Plain protocol: __iter__, __len__, set_epoch."""

    def __init__(self, n, rank, world, seed):
        self.order = RandomSampler(n, seed)
        self.rank, self.world, self.n = rank, world, n

    def set_epoch(self, epoch):
        self.order.set_epoch(epoch)

    def __iter__(self):
        shard = np.concatenate(list(self.order))[self.rank::self.world]
        return iter([shard])

    def __len__(self):
        return len(range(self.rank, self.n, self.world))


@pytest.mark.parametrize("prefetch", [0, 2])
def test_a_shard_sampler_plugs_in_without_special_cases(prefetch):
    ds = make_dataset(23)
    loaders = [DataLoader(ds, batch_size=3, prefetch=prefetch,
                          sampler=ShardSampler(23, rank, 2, seed=5)) for rank in range(2)]
    assert [len(loader) for loader in loaders] == [4, 4]  # shards of 12 and 11
    seen = {}
    for epoch in range(2):
        shards = []
        for loader in loaders:
            loader.set_epoch(epoch)
            shards.append(epoch_labels(loader))
        assert np.intersect1d(*shards).size == 0
        np.testing.assert_array_equal(np.sort(np.concatenate(shards)), np.arange(23))
        seen[epoch] = shards[0]
    assert not np.array_equal(seen[0], seen[1])
    loaders[0].set_epoch(1)
    np.testing.assert_array_equal(epoch_labels(loaders[0]), seen[1])


def test_sampler_of_single_ints_and_mixed_chunks_is_cut_into_batches():
    class Backwards:
        def __iter__(self):
            return iter(range(9, -1, -1))

        def __len__(self):
            return 10

    loader = DataLoader(make_dataset(10), batch_size=4, sampler=Backwards(), prefetch=0)
    assert [y.tolist() for _, y in loader] == [[9, 8, 7, 6], [5, 4, 3, 2], [1, 0]]
    assert len(loader) == 3

    class Mixed:
        def __iter__(self):
            return iter([1, np.array([2, 3, 4]), np.int64(5), np.array([6, 7]),
                         np.array([], dtype=np.int64), 8])

    loader = DataLoader(make_dataset(10), batch_size=3, sampler=Mixed())
    assert [y.tolist() for _, y in loader] == [[1, 2, 3], [4, 5, 6], [7, 8]]
    with pytest.raises(TypeError, match="__len__"):
        len(loader)


def test_fixed_index_samplers_and_invalid_samplers():
    ds = make_dataset(10)
    chunks = [np.array([3, 1]), np.array([4, 1, 5])]  # the same indices every epoch
    loader = DataLoader(ds, batch_size=2, sampler=chunks)
    assert len(loader) == 3 and isinstance(loader.sampler, IndexSampler)
    for _ in range(2):
        assert epoch_labels(loader).tolist() == [3, 1, 4, 1, 5]
    with pytest.raises(TypeError, match="re-iterable"):
        DataLoader(ds, sampler=(i for i in range(3)))
    with pytest.raises(IndexError, match="10"):
        list(DataLoader(ds, batch_size=2, sampler=[0, 10], prefetch=0))
    with pytest.raises(TypeError, match="integer"):
        list(DataLoader(ds, batch_size=2, sampler=_FloatSampler(), prefetch=0))


class _FloatSampler:
    def __iter__(self):
        return iter([np.array([0.0, 1.0])])


# ----------------------------------------------------------------------------------------------
# DataLoader: prefetching
# ----------------------------------------------------------------------------------------------

def test_prefetch_gives_the_same_batches_as_synchronous_loading():
    def pipeline():
        return Compose([RandomCrop(4, padding=1, rng=5), RandomHorizontalFlip(rng=6)])

    def run(prefetch):
        loader = DataLoader(make_dataset(37, (2, 4, 4)), batch_size=5, shuffle=True, seed=2,
                            prefetch=prefetch, transform=pipeline())
        return [batch for _ in range(2) for batch in loader]

    sync, background = run(0), run(3)
    assert len(sync) == len(background) == 16
    for (xa, ya), (xb, yb) in zip(sync, background):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


class SlowDataset(ArrayDataset):
    def get_batch(self, indices):
        time.sleep(0.005)
        return super().get_batch(indices)


@pytest.mark.parametrize("slow", [False, True])
def test_early_break_stops_the_prefetch_thread(slow):
    cls = SlowDataset if slow else ArrayDataset
    ds = cls(np.zeros((200, 1, 2, 2), np.float32), np.arange(200))
    loader = DataLoader(ds, batch_size=2, prefetch=3)
    assert not prefetch_threads()
    for i, (x, y) in enumerate(loader):
        if i == 0:
            assert len(prefetch_threads()) == 1  # it does run in the background
        if i == 2:
            break
    assert not prefetch_threads()  # joined at the break, no grace period


def test_close_and_context_manager_stop_the_thread():
    loader = DataLoader(make_dataset(100), batch_size=1, prefetch=2)
    it = iter(loader)
    next(it)
    it.close()
    assert not prefetch_threads()
    with pytest.raises(StopIteration):
        next(it)
    with iter(loader) as it:
        next(it)
    assert not prefetch_threads()


def exploding_transform():
    """A transform that fails on the third batch it sees."""
    calls = []

    def explode_on_third_batch(images):
        calls.append(1)
        if len(calls) == 3:
            raise ZeroDivisionError("boom in the transform")
        return images

    return explode_on_third_batch


@pytest.mark.parametrize("prefetch", [0, 2])
def test_exception_in_a_transform_reaches_the_consumer_with_its_traceback(prefetch):
    loader = DataLoader(make_dataset(20), batch_size=2, prefetch=prefetch,
                        transform=exploding_transform())
    received = []
    with pytest.raises(ZeroDivisionError, match="boom") as info:
        for _, y in loader:
            received.append(y.tolist())
    assert received == [[0, 1], [2, 3]]  # the batches before the failure arrive
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "explode_on_third_batch" in frames  # the producer's frames are kept
    assert not prefetch_threads()


def test_exception_in_the_dataset_is_reraised_and_the_thread_ends():
    class Broken(ArrayDataset):
        def get_batch(self, indices):
            if 6 in indices:
                raise KeyError("sample 6 is broken")
            return super().get_batch(indices)

    ds = Broken(np.zeros((10, 1, 1, 1), np.float32), np.arange(10))
    with pytest.raises(KeyError, match="sample 6"):
        list(DataLoader(ds, batch_size=3, prefetch=2))
    assert not prefetch_threads()


def test_interpreter_exits_with_a_prefetch_thread_still_running():
    package_dir = str(Path(fastconv.__file__).resolve().parent.parent)
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {package_dir!r})
        import numpy as np
        from fastconv.data import ArrayDataset, DataLoader

        class Slow(ArrayDataset):
            def get_batch(self, indices):
                time.sleep(0.01)
                return super().get_batch(indices)

        ds = Slow(np.zeros((1000, 1, 2, 2), np.float32), np.arange(1000))
        it = iter(DataLoader(ds, batch_size=1, prefetch=4))  # kept alive until exit
        next(it)
        print("started", flush=True)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "started" in result.stdout
    assert "Traceback" not in result.stderr and "Exception" not in result.stderr


# ----------------------------------------------------------------------------------------------
# Transforms
# ----------------------------------------------------------------------------------------------

def test_normalize_per_channel_and_scalar():
    x = np.random.default_rng(0).random((4, 3, 2, 5), dtype=np.float32)
    original = x.copy()
    mean, std = [0.1, 0.2, 0.3], [0.5, 1.0, 2.0]
    out = Normalize(mean, std)(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    for c in range(3):
        np.testing.assert_allclose(out[:, c], (x[:, c] - mean[c]) / std[c], rtol=1e-6)
    np.testing.assert_array_equal(x, original)  # input untouched
    np.testing.assert_allclose(Normalize(0.5, 0.25)(x), (x - 0.5) / 0.25, rtol=1e-6)
    with pytest.raises(ValueError, match="channels"):
        Normalize([0.1, 0.2], [1.0, 1.0])(x)
    with pytest.raises(ValueError, match="positive"):
        Normalize(0.0, [1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        Normalize(0.0, 1.0)(x[0])


def find_window(out_image, padded_image):
    """Every (top, left) at which ``out_image`` is the window of ``padded_image``."""
    h, w = out_image.shape[-2:]
    ph, pw = padded_image.shape[-2:]
    return [(t, l) for t in range(ph - h + 1) for l in range(pw - w + 1)
            if np.array_equal(out_image, padded_image[:, t:t + h, l:l + w])]


@pytest.mark.parametrize("image_shape, size, padding", [
    ((2, 5, 6), (5, 6), 2),    # CIFAR-style: same size out, zero padding around
    ((1, 3, 3), 3, 1),
    ((3, 6, 7), (3, 4), 0),    # a smaller crop without padding
    ((1, 4, 4), (4, 4), (1, 0)),
])
def test_random_crop_is_a_per_sample_window_of_the_padded_image(image_shape, size, padding):
    n = 300
    x = np.random.default_rng(1).random((n,) + image_shape, dtype=np.float32) + 1  # no zeros
    crop = RandomCrop(size, padding=padding, rng=4)
    out = crop(x)
    ph, pw = crop.padding
    ch, cw = crop.size
    assert out.shape == (n, image_shape[0], ch, cw) and out.dtype == np.float32
    assert out.flags.c_contiguous
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    offsets = set()
    for i in range(n):
        matches = find_window(out[i], padded[i])
        assert len(matches) == 1, f"sample {i} is not a window of its padded image"
        offsets.add(matches[0])
    # every valid offset occurs: each sample draws its own, over the whole range
    all_offsets = {(t, l) for t in range(padded.shape[2] - ch + 1)
                   for l in range(padded.shape[3] - cw + 1)}
    assert offsets == all_offsets


def test_random_crop_rejects_windows_larger_than_the_padded_image():
    with pytest.raises(ValueError, match="larger"):
        RandomCrop(8, padding=1)(np.zeros((1, 1, 5, 5), np.float32))
    with pytest.raises(ValueError, match="size"):
        RandomCrop(0)


def test_horizontal_flip_extremes_and_per_sample_choice():
    x = np.random.default_rng(2).random((64, 2, 3, 4), dtype=np.float32)
    np.testing.assert_array_equal(RandomHorizontalFlip(p=0.0, rng=0)(x), x)
    np.testing.assert_array_equal(RandomHorizontalFlip(p=1.0, rng=0)(x), x[..., ::-1])
    out = RandomHorizontalFlip(p=0.5, rng=0)(x)
    flipped = np.array([np.array_equal(o, s[..., ::-1]) for o, s in zip(out, x)])
    kept = np.array([np.array_equal(o, s) for o, s in zip(out, x)])
    assert np.all(flipped ^ kept)  # each sample is exactly one of the two
    assert 0 < flipped.sum() < 64
    with pytest.raises(ValueError, match="p"):
        RandomHorizontalFlip(p=1.5)


@pytest.mark.parametrize("make", [
    lambda rng: RandomCrop(4, padding=2, rng=rng),
    lambda rng: RandomHorizontalFlip(p=0.5, rng=rng),
])
def test_random_transforms_are_reproducible_for_a_seed(make):
    x = np.random.default_rng(3).random((32, 1, 4, 4), dtype=np.float32)
    np.testing.assert_array_equal(make(9)(x), make(9)(x))
    np.testing.assert_array_equal(make(np.random.default_rng(9))(x), make(9)(x))
    assert not np.array_equal(make(9)(x), make(10)(x))
    t = make(9)
    assert not np.array_equal(t(x), t(x))  # the generator advances between batches


def test_compose_applies_in_order():
    x = np.random.default_rng(4).random((3, 2, 2, 3), dtype=np.float32)
    out = Compose([RandomHorizontalFlip(p=1.0), Normalize(0.5, 0.5)])(x)
    np.testing.assert_allclose(out, (x[..., ::-1] - 0.5) / 0.5, rtol=1e-6)
    with pytest.raises(TypeError):
        Compose([1])


# ----------------------------------------------------------------------------------------------
# MNIST IDX reader
# ----------------------------------------------------------------------------------------------

def idx_bytes(array, magic=None, dims=None):
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x00000803 if array.ndim == 3 else 0x00000801
    dims = array.shape if dims is None else dims
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in dims)
    return header + array.tobytes()


def write_mnist(folder, n_train=7, n_test=3, gz=False, seed=0):
    """Write the four MNIST files; return {(split, kind): array}."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, array, name in (("images", images, f"{prefix}-images-idx3-ubyte"),
                                  ("labels", labels, f"{prefix}-labels-idx1-ubyte")):
            data = idx_bytes(array)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
            arrays[prefix, kind] = array
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_raw_and_gzip(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    suffix = ".gz" if gz else ""
    images = read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}")
    labels = read_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}")
    assert images.dtype == np.uint8 and labels.dtype == np.uint8
    np.testing.assert_array_equal(images, arrays["train", "images"])
    np.testing.assert_array_equal(labels, arrays["train", "labels"])


def test_read_idx_detects_gzip_by_its_magic_bytes(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    (tmp_path / "named-raw.idx").write_bytes(gzip.compress(idx_bytes(labels)))
    (tmp_path / "named.gz").write_bytes(idx_bytes(labels))  # raw despite its name
    np.testing.assert_array_equal(read_idx(tmp_path / "named-raw.idx"), labels)
    np.testing.assert_array_equal(read_idx(tmp_path / "named.gz"), labels)


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    for train, prefix, n in ((True, "train", 7), (False, "t10k", 3)):
        ds = load_mnist(tmp_path, train=train)
        assert isinstance(ds, ArrayDataset) and len(ds) == n
        assert ds.images.shape == (n, 1, 28, 28) and ds.images.dtype == np.float32
        assert ds.labels.dtype == np.int64
        expected = arrays[prefix, "images"][:, None] / np.float32(255)
        np.testing.assert_array_equal(ds.images, expected)
        np.testing.assert_array_equal(ds.labels, arrays[prefix, "labels"])
        assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0


IMAGES = np.arange(2 * 28 * 28, dtype=np.uint64).reshape(2, 28, 28).astype(np.uint8)
GOOD_IMAGES = idx_bytes(IMAGES)


@pytest.mark.parametrize("data, match", [
    (GOOD_IMAGES[:-10], "truncated"),
    (GOOD_IMAGES + b"\0", "trailing"),
    (GOOD_IMAGES[:10], "truncated header"),
    (b"", "too short"),
    (b"\x12\x34\x56\x78" + GOOD_IMAGES[4:], "magic"),
    (b"\0\0\x0d\x03" + GOOD_IMAGES[4:], "element type"),
    (idx_bytes(IMAGES, dims=(2, 28, 27)), "trailing"),
    (idx_bytes(IMAGES, dims=(3, 28, 28)), "truncated"),
    (gzip.compress(GOOD_IMAGES)[:-12], "gzip"),
    (gzip.compress(GOOD_IMAGES)[:20] + b"\xff" * 30 + gzip.compress(GOOD_IMAGES)[50:], "gzip"),
], ids=["short-payload", "trailing-byte", "short-header", "empty", "bad-magic", "float-type",
        "dims-too-small", "dims-too-large", "truncated-gzip", "corrupt-gzip"])
def test_read_idx_rejects_bad_files_naming_them(tmp_path, data, match):
    path = tmp_path / "broken-images-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(DatasetFormatError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value) and info.value.path == path
    assert isinstance(info.value, ValueError)


def test_load_mnist_checks_consistency_naming_the_file(tmp_path):
    write_mnist(tmp_path)
    images, labels = tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte"
    good_labels = labels.read_bytes()

    labels.write_bytes(idx_bytes(np.array([0, 1, 2, 3, 4, 5, 10])))
    with pytest.raises(DatasetFormatError, match=r"label 10 at index 6.*0\.\.9") as info:
        load_mnist(tmp_path)
    assert labels.name in str(info.value)

    labels.write_bytes(idx_bytes(np.arange(6)))
    with pytest.raises(DatasetFormatError, match="6 labels") as info:
        load_mnist(tmp_path)
    assert labels.name in str(info.value) and images.name in str(info.value)

    labels.write_bytes(good_labels)
    images.write_bytes(idx_bytes(np.zeros((7, 27, 28))))
    with pytest.raises(DatasetFormatError, match="27x28") as info:
        load_mnist(tmp_path)
    assert images.name in str(info.value)

    images.write_bytes(good_labels)  # a labels file where the images should be
    with pytest.raises(DatasetFormatError, match="holds labels") as info:
        load_mnist(tmp_path)
    assert images.name in str(info.value)

    images.unlink()
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)


# ----------------------------------------------------------------------------------------------
# CIFAR-10 readers
# ----------------------------------------------------------------------------------------------

CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def cifar_arrays(n, seed):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
            rng.integers(0, 10, n).astype(np.int64))


def cifar_bin_bytes(images, labels):
    records = np.concatenate([np.asarray(labels, np.uint8)[:, None],
                              images.reshape(len(images), -1)], axis=1)
    return records.tobytes()


def cifar_pickle_bytes(images, labels, protocol=2, replace=None):
    batch = {b"batch_label": b"training batch", b"labels": [int(v) for v in labels],
             b"data": images.reshape(len(images), -1),
             b"filenames": [b"img%d.png" % i for i in range(len(images))]}
    batch.update(replace or {})
    return pickle.dumps(batch, protocol=protocol)


def write_cifar(folder, binary, protocol=2):
    """Five training batches of 2 images and a test batch of 3; return the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for i, name in enumerate(CIFAR_TRAIN + ["test_batch"]):
        images, labels = cifar_arrays(3 if name == "test_batch" else 2, seed=i)
        if binary:
            (folder / f"{name}.bin").write_bytes(cifar_bin_bytes(images, labels))
        else:
            (folder / name).write_bytes(cifar_pickle_bytes(images, labels, protocol))
        written[name] = images, labels
    return written


def check_cifar(ds, written, names):
    images = np.concatenate([written[n][0] for n in names])
    labels = np.concatenate([written[n][1] for n in names])
    assert ds.images.shape == (len(labels), 3, 32, 32) and ds.images.dtype == np.float32
    np.testing.assert_array_equal(ds.images, images / np.float32(255))
    np.testing.assert_array_equal(ds.labels, labels)
    assert ds.labels.dtype == np.int64


@pytest.mark.parametrize("layout", ["binary", "pickle-2", "pickle-5", "binary-subfolder",
                                    "pickle-subfolder"])
def test_load_cifar10_round_trips(tmp_path, layout):
    binary = layout.startswith("binary")
    folder = tmp_path
    if layout.endswith("subfolder"):
        folder = tmp_path / ("cifar-10-batches-bin" if binary else "cifar-10-batches-py")
    protocol = int(layout[-1]) if layout[-1].isdigit() else 2
    written = write_cifar(folder, binary, protocol)
    check_cifar(load_cifar10(tmp_path, train=True), written, CIFAR_TRAIN)
    check_cifar(load_cifar10(tmp_path, train=False), written, ["test_batch"])


def test_load_cifar10_prefers_the_binary_version(tmp_path):
    written = write_cifar(tmp_path, binary=True)
    write_cifar(tmp_path, binary=False)  # same names without .bin, different data
    (tmp_path / "test_batch").write_bytes(cifar_pickle_bytes(*cifar_arrays(3, seed=99)))
    check_cifar(load_cifar10(tmp_path, train=False), written, ["test_batch"])


def test_load_cifar10_reports_missing_batches(tmp_path):
    write_cifar(tmp_path, binary=True)
    (tmp_path / "data_batch_5.bin").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_5.bin"):
        load_cifar10(tmp_path, train=True)
    with pytest.raises(FileNotFoundError, match="test"):
        load_cifar10(tmp_path / "nowhere", train=False)


class _OpensAFile:
    """Unpickling this calls builtins.open, which the CIFAR unpickler must refuse."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def _bad_pickles(tmp_path):
    images, labels = cifar_arrays(3, seed=0)
    rows = images.reshape(3, -1)

    def with_(key, value):
        return cifar_pickle_bytes(images, labels, replace={key: value})

    good = cifar_pickle_bytes(images, labels)
    return {
        "truncated": (good[:len(good) // 2], "unpickle"),
        "garbage": (b"not a pickle at all", "unpickle"),
        "not-a-dict": (pickle.dumps([1, 2, 3]), "list"),
        "missing-labels": (pickle.dumps({b"data": rows}), "labels"),
        "missing-data": (pickle.dumps({b"labels": [0, 1, 2]}), "data"),
        "float-data": (with_(b"data", rows.astype(np.float32)), "uint8"),
        "short-rows": (with_(b"data", rows[:, 1:]), "3072"),
        "label-count": (with_(b"labels", [0, 1]), "3 integers"),
        "label-range": (with_(b"labels", [0, 10, 1]), "label 10"),
        "str-labels": (with_(b"labels", ["a", "b", "c"]), "integers"),
        "evil-global": (pickle.dumps({b"data": _OpensAFile(tmp_path / "pwned"),
                                      b"labels": [0]}), "refusing"),
    }


@pytest.mark.parametrize("case", ["truncated", "garbage", "not-a-dict", "missing-labels",
                                  "missing-data", "float-data", "short-rows", "label-count",
                                  "label-range", "str-labels", "evil-global"])
def test_load_cifar10_rejects_bad_pickles_naming_the_file(tmp_path, case):
    data, match = _bad_pickles(tmp_path)[case]
    path = tmp_path / "test_batch"
    path.write_bytes(data)
    with pytest.raises(DatasetFormatError, match=match) as info:
        load_cifar10(tmp_path, train=False)
    assert str(path) in str(info.value)
    assert not (tmp_path / "pwned").exists()  # the refused global never ran


@pytest.mark.parametrize("case, match", [
    ("truncated", "multiple of the 3073-byte record"),
    ("extra-byte", "multiple of the 3073-byte record"),
    ("empty", "multiple"),
    ("label-range", "label 12 at index 1"),
])
def test_load_cifar10_rejects_bad_binary_batches_naming_the_file(tmp_path, case, match):
    images, labels = cifar_arrays(3, seed=0)
    good = cifar_bin_bytes(images, labels)
    data = {"truncated": good[:-1], "extra-byte": good + b"\0", "empty": b"",
            "label-range": cifar_bin_bytes(images, [1, 12, 3])}[case]
    path = tmp_path / "test_batch.bin"
    path.write_bytes(data)
    with pytest.raises(DatasetFormatError, match=match) as info:
        load_cifar10(tmp_path, train=False)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------------------------
# scikit-learn digits
# ----------------------------------------------------------------------------------------------

def test_load_digits_shapes_range_split_and_determinism():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    train, test = load_digits(test_fraction=0.2, seed=0)
    full = sklearn_datasets.load_digits()
    n = len(full.target)
    assert len(test) == round(0.2 * n) and len(train) + len(test) == n
    for ds in (train, test):
        assert ds.images.shape[1:] == (1, 8, 8) and ds.images.dtype == np.float32
        assert ds.labels.dtype == np.int64
        assert ds.images.min() == 0.0 and ds.images.max() == 1.0
    # train + test is exactly the full set (as a multiset of (image, label) rows): disjoint
    # parts that cover everything
    def rows(images, labels):
        table = np.concatenate([images.reshape(len(labels), -1), labels[:, None]], axis=1)
        return table[np.lexsort(table.T[::-1])]

    both = rows(np.concatenate([train.images, test.images]) * 16,
                np.concatenate([train.labels, test.labels]))
    np.testing.assert_array_equal(both, rows(full.images.astype(np.float32), full.target))
    # stratified: every digit keeps its share in the test part
    share = np.bincount(test.labels, minlength=10) / np.bincount(full.target, minlength=10)
    assert np.all(np.abs(share - 0.2) < 0.02)
    again = load_digits(test_fraction=0.2, seed=0)[1]
    np.testing.assert_array_equal(again.images, test.images)
    other = load_digits(test_fraction=0.2, seed=1)[1]
    assert not np.array_equal(other.images, test.images)
    assert len(load_digits(test_fraction=0.5)[1]) == 899  # 898.5 rounds half up


def test_load_digits_without_sklearn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=re.escape('pip install "fastconv[datasets]"')):
        load_digits()


# ----------------------------------------------------------------------------------------------
# Image files
# ----------------------------------------------------------------------------------------------

@pytest.fixture
def image_root(tmp_path):
    """root/{dog,cat,ant}/*.png (created in that order) plus files that must be skipped."""
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    pixels = {}
    for name, files in (("dog", ["d1.png"]), ("cat", ["c2.png", "c1.png"]), ("ant", ["a.png"])):
        (tmp_path / name).mkdir()
        for f in files:
            array = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
            Image.fromarray(array).save(tmp_path / name / f)
            pixels[f"{name}/{f}"] = array
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "cat" / ".hidden.png").write_bytes(b"skipped: hidden")
    (tmp_path / "README").write_text("a file next to the class folders")
    return tmp_path, pixels


def test_image_folder_classes_labels_and_pixels(image_root):
    root, pixels = image_root
    ds = ImageFolder(root)
    assert ds.classes == ["ant", "cat", "dog"]
    assert ds.class_to_idx == {"ant": 0, "cat": 1, "dog": 2}
    assert [p.relative_to(root).as_posix() for p in ds.paths] == \
        ["ant/a.png", "cat/c1.png", "cat/c2.png", "dog/d1.png"]
    np.testing.assert_array_equal(ds.labels, [0, 1, 1, 2])
    assert ds.images.shape == (4, 3, 4, 5) and ds.images.dtype == np.float32
    for image, path in zip(ds.images, ds.paths):
        expected = pixels[path.relative_to(root).as_posix()].transpose(2, 0, 1)
        np.testing.assert_array_equal(image, expected / np.float32(255))
    x, y = next(iter(DataLoader(ds, batch_size=4, prefetch=0)))
    np.testing.assert_array_equal(y, [0, 1, 1, 2])


def test_image_folder_grayscale_and_resize(image_root):
    from PIL import Image
    root, pixels = image_root
    gray = ImageFolder(root, grayscale=True)
    assert gray.images.shape == (4, 1, 4, 5)
    expected = np.asarray(Image.fromarray(pixels["ant/a.png"]).convert("L"))
    np.testing.assert_array_equal(gray.images[0, 0], expected / np.float32(255))

    resized = ImageFolder(root, size=(6, 3))
    assert resized.images.shape == (4, 3, 6, 3)
    expected = np.asarray(Image.fromarray(pixels["ant/a.png"]).resize((3, 6), Image.BILINEAR))
    np.testing.assert_array_equal(resized.images[0], expected.transpose(2, 0, 1) / np.float32(255))
    assert ImageFolder(root, size=7, grayscale=True).images.shape == (4, 1, 7, 7)


def test_image_folder_needs_size_for_mixed_image_sizes(image_root):
    from PIL import Image
    root, _ = image_root
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(root / "dog" / "big.png")
    with pytest.raises(ValueError, match="size=") as info:
        ImageFolder(root)
    assert "big.png" in str(info.value)
    assert ImageFolder(root, size=(4, 5)).images.shape == (5, 3, 4, 5)


@pytest.mark.parametrize("content", ["garbage", "truncated"])
def test_image_folder_names_an_unreadable_image(image_root, content):
    root, _ = image_root
    good = (root / "cat" / "c1.png").read_bytes()
    bad = root / "cat" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40 if content == "garbage"
                    else good[:len(good) // 2])
    with pytest.raises(DatasetFormatError) as info:
        ImageFolder(root)
    assert "broken.png" in str(info.value) and info.value.path == bad


def test_image_folder_rejects_empty_layouts(tmp_path):
    pytest.importorskip("PIL")
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolder(tmp_path)
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "empty_class" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="empty_class"):
        ImageFolder(tmp_path)
    with pytest.raises(FileNotFoundError):
        ImageFolder(tmp_path / "missing")


def test_load_image(image_root):
    root, pixels = image_root
    path = root / "dog" / "d1.png"
    image = load_image(path)
    assert image.shape == (3, 4, 5) and image.dtype == np.float32 and image.flags.c_contiguous
    np.testing.assert_array_equal(image, pixels["dog/d1.png"].transpose(2, 0, 1) / np.float32(255))
    assert load_image(path, size=8, grayscale=True).shape == (1, 8, 8)
    assert load_image(path, size=(2, 3)).shape == (3, 2, 3)
    with pytest.raises(FileNotFoundError):
        load_image(root / "dog" / "missing.png")
    (root / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DatasetFormatError, match="bad.jpg"):
        load_image(root / "bad.jpg")


def test_image_readers_without_pillow_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    hint = re.escape('pip install "fastconv[datasets]"')
    with pytest.raises(ImportError, match=hint):
        ImageFolder(tmp_path)
    with pytest.raises(ImportError, match=hint):
        load_image(tmp_path / "x.png")
