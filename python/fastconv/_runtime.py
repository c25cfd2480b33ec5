"""Threads, instruction-set selection and build information of the compiled kernels."""

from __future__ import annotations

import os

from . import _core
from .kernels import _int

__all__ = ["set_num_threads", "get_num_threads", "available_isas", "get_isa", "set_isa",
           "available_algorithms", "get_algorithm", "set_algorithm", "set_buffer_pool_limit",
           "get_buffer_pool_limit", "show_config"]


_threads_chosen = False  # whether set_num_threads was called (fastconv.distributed keeps it)


def set_num_threads(n: int) -> None:
    """Set the number of threads the kernels use (default: OMP_NUM_THREADS, else all cores)."""
    global _threads_chosen
    _core.set_num_threads(_int(n, "n", minimum=1))
    _threads_chosen = True


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


def available_algorithms() -> list[str]:
    """Convolution algorithm choices for set_algorithm."""
    return list(_core.conv_algorithms())


def get_algorithm() -> str:
    """The convolution algorithm choice in use (see set_algorithm)."""
    return _core.get_algorithm()


def set_algorithm(name: str) -> None:
    """Choose how convolutions are computed.

    "auto" (the default): Winograd F(2x2, 3x3) for the forward pass and input gradient of
    3x3, stride-1, undilated, ungrouped layers with at least 16 input and 16 output channels,
    the GEMM path otherwise. "gemm": never Winograd (its rounding differs slightly from the
    GEMM path's, by about as much as the GEMM path's own rounding error). "winograd":
    Winograd wherever it applies, even on layers too small to gain from it.
    """
    if not isinstance(name, str):
        raise TypeError(f"name: expected a str, got {name!r}")
    if not _core.set_algorithm(name):
        raise ValueError(f"name: expected one of {available_algorithms()}, got {name!r}")


def set_buffer_pool_limit(nbytes: int) -> None:
    """Keep at most `nbytes` of freed output memory for reuse (default 1 GiB).

    The kernels' fresh outputs come from a pool: when an array (and every view of it) is
    gone, its memory of 64 KiB or more is kept and handed out again for an array of the same
    size, instead of going back to the system and page-faulting on its next first touch. The
    limit bounds the free memory kept, not the arrays in use; 0 keeps none and frees what is
    kept. FASTCONV_BUFFER_POOL_MB=<n> sets it at import.
    """
    _core.set_buffer_pool_limit(_int(nbytes, "nbytes", minimum=0))


def get_buffer_pool_limit() -> int:
    """The most bytes of freed output memory the pool keeps (see set_buffer_pool_limit)."""
    return _core.buffer_pool_limit()


def _apply_environment() -> None:
    """Honour FASTCONV_ISA=<name>, FASTCONV_ALGORITHM=<name> and FASTCONV_BUFFER_POOL_MB=<n>
    at import."""
    requested = os.environ.get("FASTCONV_ISA", "").strip()
    if requested and not _core.set_isa(requested):
        raise ValueError(f"FASTCONV_ISA={requested!r} is not available on this CPU/build; "
                         f"available: {available_isas()}")
    algorithm = os.environ.get("FASTCONV_ALGORITHM", "").strip()
    if algorithm and not _core.set_algorithm(algorithm):
        raise ValueError(f"FASTCONV_ALGORITHM={algorithm!r} is not one of "
                         f"{available_algorithms()}")
    pool_mb = os.environ.get("FASTCONV_BUFFER_POOL_MB", "").strip()
    if pool_mb:
        if not pool_mb.isdigit():
            raise ValueError(f"FASTCONV_BUFFER_POOL_MB={pool_mb!r}: expected a whole number of "
                             "MiB, e.g. 0 or 512")
        _core.set_buffer_pool_limit(int(pool_mb) << 20)


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
        f"  conv algorithm: {get_algorithm()}",
        f"  buffer pool:    {_core.buffer_pool_cached_bytes() >> 20} MiB kept of "
        f"{get_buffer_pool_limit() >> 20} MiB",
    ]
    print("\n".join(lines))
