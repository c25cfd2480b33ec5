"""fastconv.optim: PyTorch-compatible optimizers and learning-rate schedulers on NumPy.

* :class:`Optimizer` -- base class (param groups, state, ``zero_grad``,
  ``state_dict`` / ``load_state_dict`` in PyTorch's layout);
* :class:`SGD`, :class:`Adam`, :class:`AdamW` -- PyTorch 2.x's single-tensor
  update rules;
* :mod:`fastconv.optim.lr_scheduler` -- ``LRScheduler``, ``StepLR``,
  ``CosineAnnealingLR``, ``OneCycleLR``.

Depends on NumPy only.
"""

from . import lr_scheduler
from .optimizer import Optimizer, required
from .optimizers import SGD, Adam, AdamW

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler", "required"]
