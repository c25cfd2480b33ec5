"""Small reference networks: LeNet-5, a small CIFAR-style CNN and ResNet-8.

Each builder takes the input channels, the number of classes and the image size, so the same
architecture serves MNIST (1x28x28), CIFAR-10 (3x32x32) and scikit-learn's digits (1x8x8).
"""

from __future__ import annotations

import numpy as np

from . import nn

__all__ = ["lenet", "small_cnn", "resnet8", "build", "MODELS"]


def _flat_features(layers: nn.Module, in_channels: int, image_size: int) -> int:
    """Number of features the convolutional part gives for one image (by running it)."""
    from .tensor import no_grad
    with no_grad():
        out = layers(np.zeros((1, in_channels, image_size, image_size), dtype=np.float32))
    return int(np.prod(out.shape[1:]))


def lenet(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> nn.Module:
    """LeNet-5 (ReLU and max pooling): conv5-6, pool, conv5-16, pool, fc 120, fc 84, fc."""
    features = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=0 if image_size >= 16 else 2), nn.ReLU(), nn.MaxPool2d(2),
    )
    flat = _flat_features(features, in_channels, image_size)
    return nn.Sequential(*features, nn.Flatten(), nn.Linear(flat, 120), nn.ReLU(),
                         nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes))


def small_cnn(in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> nn.Module:
    """conv3-32, conv32-32, pool, conv32-64, conv64-64, pool, fc 256, fc (ReLU after each).
    On 32x32 images the first linear layer is 4096 -> 256."""
    features = nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    )
    flat = _flat_features(features, in_channels, image_size)
    return nn.Sequential(*features, nn.Flatten(), nn.Linear(flat, 256), nn.ReLU(),
                         nn.Linear(256, num_classes))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride,
                                                    bias=False), nn.BatchNorm2d(out_channels))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, widths=(16, 32, 64)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, channels = [], widths[0]
        for i, width in enumerate(widths):
            blocks.append(BasicBlock(channels, width, stride=1 if i == 0 else 2))
            channels = width
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.layers(self.stem(x)))))


def resnet8(in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> nn.Module:
    """ResNet-8: a 3x3 stem and three basic blocks (16, 32, 64 channels), global pooling, fc."""
    return ResNet(in_channels, num_classes)


MODELS = {"lenet": lenet, "small-cnn": small_cnn, "resnet8": resnet8}


def build(name: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """The model called `name` (one of MODELS) for the given input and classes."""
    if name not in MODELS:
        raise ValueError(f"model: expected one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](in_channels=in_channels, num_classes=num_classes, image_size=image_size)
