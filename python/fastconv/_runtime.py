"""Threads, instruction-set selection and build information of the compiled kernels."""

from __future__ import annotations

import os

from . import _core
from .kernels import _int

__all__ = ["set_num_threads", "get_num_threads", "available_isas", "get_isa", "set_isa",
           "show_config"]


def set_num_threads(n: int) -> None:
    """Set the number of threads the kernels use (default: OMP_NUM_THREADS, else all cores)."""
    _core.set_num_threads(_int(n, "n", minimum=1))


def get_num_threads() -> int:
    """The number of threads the kernels use."""
    return _core.get_num_threads()


def available_isas() -> list[str]:
    """Instruction sets this build has kernels for and this CPU can run, best last."""
    return list(_core.available_isas())


def get_isa() -> str:
    """The instruction set whose kernels are in use."""
    return _core.get_isa()


def set_isa(name: str) -> None:
    """Use the kernels of instruction set `name` (one of available_isas()), e.g. to compare paths."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected a str, got {name!r}")
    if not _core.set_isa(name):
        raise ValueError(f"name: ISA {name!r} is not available on this CPU/build; "
                         f"available: {available_isas()}")


def _apply_isa_environment() -> None:
    """Honour FASTCONV_ISA=<name> at import."""
    requested = os.environ.get("FASTCONV_ISA", "").strip()
    if requested and not _core.set_isa(requested):
        raise ValueError(f"FASTCONV_ISA={requested!r} is not available on this CPU/build; "
                         f"available: {available_isas()}")


def show_config() -> None:
    """Print the build and runtime configuration of fastconv."""
    info = _core.build_info()
    openmp = f"on (OpenMP {info['openmp_version']})" if info["openmp"] else "off (single-threaded)"
    lines = [
        f"fastconv {info['version']}",
        f"  compiler:       {info['compiler']}",
        f"  OpenMP:         {openmp}",
        f"  threads:        {get_num_threads()}",
        f"  ISA in use:     {get_isa()}",
        f"  ISAs available: {', '.join(available_isas())}",
        f"  ISAs compiled:  {', '.join(info['isas_compiled'])}",
    ]
    print("\n".join(lines))
