"""Layer 2 — multi-task optimizers (``deconflict.optim``).

Two kinds of method, each a small class registered by name:

* an **aggregator** is called on a T×D Jacobian (row t: the gradient of task t) and returns the
  D-vector update direction (MGDA, PCGrad, CAGrad, Nash-MTL, ...);
* a **loss weighting** is called on the T losses and returns T weights (equal weighting, ...).

>>> from deconflict import optim
>>> "pcgrad" in optim.available()
True
>>> aggregator = optim.get("cagrad", c=0.4)

Stateful methods expose ``reset()``, ``state_dict()`` and ``load_state_dict()``.
"""

from deconflict.optim._base import Aggregator, GramianAggregator, LossWeighting, Method
from deconflict.optim._registry import available, canonical_name, get, method_class, register

# Importing the modules registers their methods.
from deconflict.optim.equal import Equal
from deconflict.optim.mgda import MGDA
from deconflict.optim.pcgrad import PCGrad
from deconflict.optim.cagrad import CAGrad
from deconflict.optim.nash_mtl import NashMTL

__all__ = [
    "Aggregator",
    "CAGrad",
    "Equal",
    "GramianAggregator",
    "LossWeighting",
    "MGDA",
    "Method",
    "NashMTL",
    "PCGrad",
    "available",
    "canonical_name",
    "get",
    "method_class",
    "register",
]
