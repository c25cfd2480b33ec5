"""fastconv: fast CPU conv2d and pooling kernels for NumPy, with PyTorch's semantics, and a
small PyTorch-shaped layer to train CNNs with them.

Layers, each built on the one before: kernels (NumPy in, NumPy out) -> Tensor (autograd) ->
nn -> optim -> data -> train (fit, evaluate, the `fastconv` command) -> distributed (the
same over MPI ranks).
"""

from . import _core
from ._runtime import (available_algorithms, available_isas, get_algorithm,
                       get_buffer_pool_limit, get_isa, get_num_threads, set_algorithm,
                       set_buffer_pool_limit, set_isa, set_num_threads, show_config)
from ._runtime import _apply_environment
from .kernels import (avg_pool2d, avg_pool2d_backward, conv2d, conv2d_bias_grad,
                      conv2d_input_grad, conv2d_weight_grad, conv_transpose2d, matmul, max_pool2d,
                      max_pool2d_backward, relu, relu_backward)
from .random import manual_seed
from .tensor import Tensor, enable_grad, is_grad_enabled, no_grad, tensor
from . import nn, optim, data, models, train, distributed
from .summary import summary

__version__ = _core.__version__

_apply_environment()
del _apply_environment

__all__ = [
    "conv2d", "conv2d_input_grad", "conv2d_weight_grad", "conv2d_bias_grad", "conv_transpose2d",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward", "matmul",
    "relu", "relu_backward",
    "set_num_threads", "get_num_threads", "show_config",
    "available_isas", "get_isa", "set_isa", "available_algorithms", "get_algorithm",
    "set_algorithm", "set_buffer_pool_limit", "get_buffer_pool_limit",
    "Tensor", "tensor", "no_grad", "enable_grad", "is_grad_enabled", "manual_seed",
    "nn", "optim", "data", "models", "train", "distributed", "summary",
]
