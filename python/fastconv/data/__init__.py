"""fastconv.data: datasets, batch loading, augmentation and readers for image classification.

Batches are plain NumPy arrays, ``x`` float32 (N, C, H, W) and ``y`` int64 (N,), so this
layer does not depend on the autograd ``Tensor``::

    from fastconv.data import DataLoader, Normalize, load_mnist

    train = load_mnist("data/mnist", train=True)
    loader = DataLoader(train, batch_size=64, shuffle=True, seed=0,
                        transform=Normalize(0.1307, 0.3081))
    for epoch in range(10):
        loader.set_epoch(epoch)
        for x, y in loader:
            ...

Modules: :mod:`.dataset` (Dataset, ArrayDataset, Subset, splits), :mod:`.sampler` (the
sampler protocol), :mod:`.loader` (DataLoader), :mod:`.transforms` (batch augmentation),
:mod:`.readers` (MNIST, CIFAR-10, scikit-learn digits), :mod:`.images` (image files).
"""

from .dataset import ArrayDataset, Dataset, Subset, random_split, train_test_split
from .images import IMAGE_EXTENSIONS, ImageFolder, load_image
from .loader import DataLoader
from .readers import DatasetFormatError, load_cifar10, load_digits, load_mnist, read_idx
from .sampler import IndexSampler, RandomSampler, Sampler, SequentialSampler
from .transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip

__all__ = [
    # datasets
    "Dataset", "ArrayDataset", "Subset", "random_split", "train_test_split",
    # loading
    "DataLoader", "Sampler", "SequentialSampler", "RandomSampler", "IndexSampler",
    # transforms
    "Compose", "Normalize", "RandomCrop", "RandomHorizontalFlip",
    # readers
    "DatasetFormatError", "read_idx", "load_mnist", "load_cifar10", "load_digits",
    "ImageFolder", "load_image", "IMAGE_EXTENSIONS",
]
