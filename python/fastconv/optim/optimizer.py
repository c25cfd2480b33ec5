"""``Optimizer`` base class: parameter groups, per-parameter state, state_dict.

Mirrors ``torch.optim.Optimizer`` (PyTorch 2.x) on NumPy arrays.  A parameter is
any object with

* ``p.data``: a float32 / float64 ``numpy.ndarray``, updated **in place**
  (the model holds references to it; the optimizer never rebinds it);
* ``p.grad``: ``None`` (the parameter is skipped) or an object whose ``.data``
  is an ndarray with ``p.data``'s shape (a bare ndarray is accepted too).

``state_dict()`` uses PyTorch's layout, key names and index numbering, so a
PyTorch optimizer's state_dict with its tensors converted to NumPy (or even left
as CPU tensors: they are read through ``numpy.asarray``) loads into the matching
fastconv optimizer, and ours loads into PyTorch's after ``torch.as_tensor``.
"""

import copy
import numbers
from collections.abc import MutableMapping

import numpy as np

__all__ = ["Optimizer", "required"]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class _RequiredParameter:
    """Singleton marking a hyper-parameter that has no default."""

    def __repr__(self):
        return "<required parameter>"


required = _RequiredParameter()


class _ParamState(MutableMapping):
    """Per-parameter state, keyed by parameter *identity* (``id``).

    Behaves like PyTorch's ``defaultdict(dict)`` keyed by tensors: ``state[p]``
    creates an empty dict on first access.  Identity keys keep this working for
    parameter classes that define an element-wise ``__eq__`` (and hence are
    unhashable).  Iteration yields the parameter objects.
    """

    def __init__(self):
        self._d = {}  # id(p) -> (p, dict)

    def __getitem__(self, p):
        entry = self._d.get(id(p))
        if entry is None:
            entry = (p, {})
            self._d[id(p)] = entry
        return entry[1]

    def __setitem__(self, p, value):
        self._d[id(p)] = (p, value)

    def __delitem__(self, p):
        del self._d[id(p)]

    def __contains__(self, p):
        return id(p) in self._d

    def __iter__(self):
        return (p for p, _ in list(self._d.values()))

    def __len__(self):
        return len(self._d)

    def get(self, p, default=None):
        entry = self._d.get(id(p))
        return default if entry is None else entry[1]

    def __repr__(self):
        return "{" + ", ".join(f"<param {tuple(np.shape(p.data))}>: {s!r}"
                               for p, s in self._d.values()) + "}"


def _is_parameter(obj):
    return hasattr(obj, "data") and hasattr(obj, "grad") and not isinstance(obj, dict)


def _check_number(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    return float(value)


def _check_nonneg(name, value):
    v = _check_number(name, value)
    if not v >= 0.0:  # also rejects NaN
        raise ValueError(f"Invalid {name}: {value!r} ({name} must be >= 0)")
    return v


def _grad_array(p):
    """The gradient of ``p`` as an ndarray of p.data's dtype, or None."""
    g = p.grad
    if g is None:
        return None
    # NB: an ndarray has a ``.data`` attribute too (a memoryview): test it first.
    a = g if isinstance(g, np.ndarray) else getattr(g, "data", g)
    if not isinstance(a, np.ndarray):
        a = np.asarray(a)
    d = p.data
    if a.shape != d.shape:
        raise ValueError(f"gradient shape {a.shape} does not match parameter shape {d.shape}")
    if a.dtype != d.dtype:
        a = a.astype(d.dtype)
    return a


class Optimizer:
    """Base class of all optimizers.

    Args:
        params: an iterable of parameters, or of dicts (parameter groups) each
            with a ``'params'`` entry and optional per-group options.
        defaults: the default options, used for groups that do not set them.
    """

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = _ParamState()
        self.param_groups = []

        if _is_parameter(params) or isinstance(params, (dict, np.ndarray)):
            raise TypeError("params argument given to the optimizer should be an iterable "
                            "of parameters or dicts, but got " + type(params).__name__)
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("params: optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(group)

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group):
        """Add a parameter group (a dict with ``'params'`` and options)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        group = dict(param_group)
        if "params" not in group:
            raise ValueError("param_group must have a 'params' entry")
        params = group["params"]
        if _is_parameter(params):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("params: optimizer parameters need to be organized in ordered "
                            "collections, but the ordering of a set changes between runs; "
                            "use a list instead")
        else:
            params = list(params)
        for p in params:
            if not _is_parameter(p):
                raise TypeError("params: optimizer can only optimize parameters (objects with "
                                f".data and .grad), but got {type(p).__name__}")
            if not isinstance(p.data, np.ndarray) or p.data.dtype not in _FLOAT_DTYPES:
                raise TypeError("params: a parameter's .data must be a float32 or float64 "
                                f"numpy.ndarray, got {type(p.data).__name__}"
                                + (f" of dtype {p.data.dtype}" if hasattr(p.data, "dtype") else ""))
        ids = [id(p) for p in params]
        if len(set(ids)) != len(ids):
            raise ValueError("params: a parameter group contains the same parameter twice")
        group["params"] = params

        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(f"parameter group didn't specify a value of required "
                                 f"optimization parameter {name}")
            group.setdefault(name, default)
        self._validate_group(group)

        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if seen.intersection(ids):
            raise ValueError("params: some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def _validate_group(self, group):
        """Check a group's hyper-parameters; raise ValueError naming the bad one."""
        if "lr" in group:
            _check_nonneg("lr", group["lr"])

    def _validate_state(self, p, group, state):
        """Check one parameter's loaded state (subclasses list required keys)."""

    # --------------------------------------------------------------- gradients
    def zero_grad(self, set_to_none=True):
        """Reset the gradients: set them to None, or (``set_to_none=False``)
        zero their arrays in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    g = p.grad
                    a = g if isinstance(g, np.ndarray) else g.data
                    a[...] = 0

    def step(self, closure=None):
        raise NotImplementedError

    def _call_closure(self, closure):
        return None if closure is None else closure()

    # ----------------------------------------------------------- state dicts
    def state_dict(self):
        """The optimizer's state, in PyTorch's layout::

            {'state': {index: {name: ndarray or number}},
             'param_groups': [{option: value, ..., 'params': [index, ...]}]}

        Indices number the parameters in group order, from 0.  Arrays are
        copies (unlike PyTorch, which returns references), so the result stays
        valid while training goes on.
        """
        index_of = {}
        groups = []
        start = 0
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            for i, p in enumerate(group["params"], start):
                index_of.setdefault(id(p), i)
            packed["params"] = [index_of[id(p)] for p in group["params"]]
            start += len(packed["params"])
            groups.append(packed)
        state = {}
        for p, s in self.state._d.values():
            if id(p) not in index_of:
                continue
            state[index_of[id(p)]] = {k: (v.copy() if isinstance(v, np.ndarray)
                                          else copy.deepcopy(v)) for k, v in s.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load a state from :meth:`state_dict` (ours, or PyTorch's with tensors
        converted to NumPy).  Arrays are copied and cast to the parameter's
        dtype; they never alias the caller's."""
        if not isinstance(state_dict, dict) or "state" not in state_dict \
                or "param_groups" not in state_dict:
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups' entries")
        saved_groups = state_dict["param_groups"]
        if not isinstance(saved_groups, (list, tuple)):
            raise ValueError("state_dict['param_groups'] must be a list of dicts")
        groups = self.param_groups
        if len(groups) != len(saved_groups):
            raise ValueError(f"loaded state dict has a different number of parameter groups "
                             f"({len(saved_groups)}) than the optimizer ({len(groups)})")
        for i, (g, sg) in enumerate(zip(groups, saved_groups)):
            if not isinstance(sg, dict) or "params" not in sg:
                raise ValueError(f"state_dict['param_groups'][{i}] must be a dict with 'params'")
            if len(sg["params"]) != len(g["params"]):
                raise ValueError(f"loaded state dict's parameter group {i} has "
                                 f"{len(sg['params'])} parameters, the optimizer's has "
                                 f"{len(g['params'])}")
        id_map = {}
        group_of = {}
        for g, sg in zip(groups, saved_groups):
            for k, p in zip(sg["params"], g["params"]):
                id_map[k] = p
                group_of[k] = g

        new_groups = []
        for g, sg in zip(groups, saved_groups):
            ng = {k: copy.deepcopy(v) for k, v in sg.items() if k != "params"}
            if isinstance(ng.get("betas"), list):
                ng["betas"] = tuple(ng["betas"])
            for name, default in self.defaults.items():
                if name not in ng:
                    if default is required:
                        raise ValueError(
                            f"loaded parameter group lacks the required option {name!r}")
                    ng[name] = copy.deepcopy(default)
            ng["params"] = g["params"]
            self._validate_group(ng)
            new_groups.append(ng)

        saved_state = state_dict["state"]
        if not isinstance(saved_state, dict):
            raise ValueError("state_dict['state'] must be a dict")
        new_state = _ParamState()
        for k, s in saved_state.items():
            if k not in id_map:
                raise ValueError(f"state_dict['state'] has an entry for parameter index {k!r}, "
                                 "which no parameter group lists")
            p = id_map[k]
            if not isinstance(s, dict):
                raise ValueError(f"state_dict['state'][{k!r}] must be a dict")
            entry = {}
            for name, v in s.items():
                entry[name] = self._load_value(p, k, name, v)
            new_state[p] = entry
        idx_of_group = {id(g): i for i, g in enumerate(groups)}
        for k, p in id_map.items():
            if p in new_state:
                self._validate_state(p, new_groups[idx_of_group[id(group_of[k])]], new_state[p])

        for g, ng in zip(groups, new_groups):  # keep the group dicts' identity
            g.clear()
            g.update(ng)
        self.state = new_state

    @staticmethod
    def _load_value(p, index, name, v):
        if name == "step" and v is not None:
            # PyTorch keeps a float32 0-d tensor; we keep a Python float, so that
            # beta ** step is computed in double precision as PyTorch does.
            a = np.asarray(v)
            if a.size != 1:
                raise ValueError(f"state[{index}]['step'] must be a scalar, got shape {a.shape}")
            return float(a.reshape(()))
        if v is None or isinstance(v, (bool, numbers.Number, str)):
            return v
        if isinstance(v, np.ndarray) or hasattr(v, "__array__"):
            a = np.asarray(v)
            if a.dtype.kind in "fc" or a.dtype.kind in "iu":
                if a.shape != p.data.shape:
                    raise ValueError(f"state[{index}][{name!r}] has shape {a.shape}, the "
                                     f"parameter has shape {p.data.shape}")
                return np.array(a, dtype=p.data.dtype, copy=True, order="C")
            return a.copy()
        return copy.deepcopy(v)

    # ---------------------------------------------------------------- display
    def __repr__(self):
        lines = [self.__class__.__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(group):
                if key != "params":
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)
