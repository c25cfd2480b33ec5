"""The default random generator (parameter initialisation, dropout, shuffling).

`fastconv.manual_seed(seed)` makes everything that draws from it reproducible; layers and
loaders also accept their own `numpy.random.Generator`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["manual_seed", "default_generator"]

_generator = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the default generator (as torch.manual_seed) and return it."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def default_generator() -> np.random.Generator:
    return _generator
