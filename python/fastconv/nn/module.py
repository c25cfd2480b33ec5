"""Module, Parameter and Sequential: the containers of a network, as in torch.nn."""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterator

import numpy as np

from ..tensor import Tensor

__all__ = ["Parameter", "Module", "Sequential", "ModuleList"]


class Parameter(Tensor):
    """A Tensor that is a trainable parameter of a Module (requires_grad by default)."""

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True):
        if isinstance(data, Tensor):
            data = data.data
        array = np.asarray(data)
        if array.dtype.kind != "f":
            raise TypeError(f"Parameter: expected a floating point array, got dtype {array.dtype}")
        super().__init__(np.ascontiguousarray(array), requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class of every layer and network.

    Assigning a Parameter or a Module to an attribute registers it; `register_buffer` registers
    state that is saved but not trained (BatchNorm's running statistics). Parameters and buffers
    are NumPy arrays underneath, so `state_dict()` uses PyTorch's keys and shapes and a PyTorch
    state_dict converted to NumPy arrays loads as it is.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------------ registration
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before "
                                 f"assigning attributes")
        if isinstance(value, Parameter):
            target = self._parameters
        elif isinstance(value, Module):
            target = self._modules
        elif name in self.__dict__.get("_buffer_names", ()):
            target = self._buffers
        else:
            target = None
        for registry in (self._parameters, self._buffers, self._modules):
            if registry is not target:
                registry.pop(name, None)
        if target is None:
            object.__setattr__(self, name, value)
        else:
            target[name] = value  # a replaced entry keeps its place (Sequential's order)

    def __getattr__(self, name):
        for registry in ("_parameters", "_buffers", "_modules"):
            values = self.__dict__.get(registry)
            if values is not None and name in values:
                return values[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, array) -> None:
        """State saved in state_dict but not trained (None: a placeholder, not saved)."""
        names = self.__dict__.setdefault("_buffer_names", set())
        names.add(name)
        self.__dict__.pop(name, None)
        self._buffers[name] = None if array is None else np.asarray(array)

    def register_parameter(self, name: str, parameter: Parameter | None) -> None:
        if parameter is None:
            self._parameters[name] = None
        else:
            setattr(self, name, parameter)

    def add_module(self, name: str, module: Module | None) -> None:
        self._modules[name] = module

    # ------------------------------------------------------------------ traversal
    def named_parameters(self, prefix: str = "", recurse: bool = True
                         ) -> Iterator[tuple[str, Parameter]]:
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, p in module._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{module_prefix}.{name}" if module_prefix else name), p

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for module_prefix, module in self.named_modules(prefix):
            for name, b in module._buffers.items():
                if b is not None:
                    yield (f"{module_prefix}.{name}" if module_prefix else name), b

    def buffers(self) -> Iterator[np.ndarray]:
        for _, b in self.named_buffers():
            yield b

    def named_children(self) -> Iterator[tuple[str, Module]]:
        seen = set()  # a module registered twice is listed once, as in PyTorch
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self) -> Iterator[Module]:
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix: str = "", remove_duplicate: bool = True, _memo=None
                      ) -> Iterator[tuple[str, Module]]:
        """Every module once (remove_duplicate False: once per place, as state_dict keys)."""
        memo = set() if _memo is None else _memo
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name,
                                               remove_duplicate, memo)

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def apply(self, function) -> Module:
        for child in self.children():
            child.apply(function)
        function(self)
        return self

    # ------------------------------------------------------------------ modes and gradients
    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.data[...] = 0

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad = requires_grad
        return self

    def to(self, dtype) -> Module:
        """Convert every floating parameter and buffer to `dtype` (np.float32 or np.float64)."""
        dtype = np.dtype(dtype)
        for m in self.modules():
            for p in m._parameters.values():
                if p is not None and p.data.dtype != dtype:
                    p.data = p.data.astype(dtype)
                    p.grad = None
            for name, b in m._buffers.items():
                if b is not None and b.dtype.kind == "f":
                    m._buffers[name] = b.astype(dtype)
        return self

    def float(self) -> Module:
        return self.to(np.float32)

    def double(self) -> Module:
        return self.to(np.float64)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> OrderedDict:
        """Copies of every parameter and buffer, keyed as in PyTorch ("features.0.weight")."""
        state = OrderedDict()
        for module_prefix, module in self.named_modules(remove_duplicate=False):
            for name, p in module._parameters.items():
                if p is not None:
                    state[f"{module_prefix}.{name}" if module_prefix else name] = p.data.copy()
            for name, b in module._buffers.items():
                if b is not None:
                    state[f"{module_prefix}.{name}" if module_prefix else name] = np.array(b)
        return state

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy values (arrays or Tensors) into the parameters and buffers, in place.

        Raises KeyError listing missing and unexpected keys (when strict) and ValueError listing
        every shape mismatch; nothing is changed unless every check passes. Returns
        (missing_keys, unexpected_keys).
        """
        own = OrderedDict()
        for module_prefix, module in self.named_modules(remove_duplicate=False):
            for kind in ("_parameters", "_buffers"):
                for name, value in getattr(module, kind).items():
                    if value is not None:
                        key = f"{module_prefix}.{name}" if module_prefix else name
                        own[key] = (module, kind, name)
        given = {k: np.asarray(v.data if isinstance(v, Tensor) else v)
                 for k, v in state_dict.items()}
        missing = [k for k in own if k not in given]
        unexpected = [k for k in given if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys "
                           f"{unexpected}")
        mismatched = []
        for key, (module, kind, name) in own.items():
            if key in given:
                current = getattr(module, kind)[name]
                shape = current.shape if isinstance(current, np.ndarray) else current.data.shape
                if given[key].shape != shape:
                    mismatched.append(f"{key}: expected {shape}, got {given[key].shape}")
        if mismatched:
            raise ValueError("load_state_dict: shape mismatch for " + "; ".join(mismatched))
        for key, (module, kind, name) in own.items():
            if key not in given:
                continue
            if kind == "_parameters":
                p = module._parameters[name]
                p.data[...] = given[key]  # in place: optimizers keep their references
            else:
                buffer = module._buffers[name]
                module._buffers[name] = given[key].astype(buffer.dtype, copy=True)
        return missing, unexpected

    # ------------------------------------------------------------------ calling and printing
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = [f"({name}): " + repr(m).replace("\n", "\n  ")
                    for name, m in self.named_children()]
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        lines += ["  " + c for c in children]
        return "\n".join(lines) + "\n)"

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))


class Sequential(Module):
    """Modules applied in order: Sequential(a, b, c) or Sequential(OrderedDict(name=module))."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def __getitem__(self, index):
        modules = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*modules[index])
        return modules[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module: Module) -> Sequential:
        self.add_module(str(len(self._modules)), module)
        return self


class ModuleList(Module):
    """A list of modules whose parameters are registered (as torch.nn.ModuleList)."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> ModuleList:
        self.add_module(str(len(self._modules)), module)
        return self

    def __getitem__(self, index):
        return list(self._modules.values())[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())
