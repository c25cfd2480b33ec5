"""Layers, losses and containers with torch.nn's names (`fastconv.nn.functional` for the ops)."""

from . import functional, init
from .layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Conv2d, ConvTranspose2d,
                     CrossEntropyLoss, Dropout, Flatten, Identity, LeakyReLU, Linear, LogSoftmax,
                     MaxPool2d, MSELoss, NLLLoss, ReLU, Sigmoid, Softmax, Tanh)
from .module import Module, ModuleList, Parameter, Sequential

__all__ = [
    "functional", "init", "Module", "ModuleList", "Parameter", "Sequential",
    "Conv2d", "ConvTranspose2d", "Linear", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
    "BatchNorm2d", "Dropout", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax",
    "Flatten", "Identity", "CrossEntropyLoss", "MSELoss", "NLLLoss",
]
