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

from deconflict.optim._base import (
    Aggregator,
    Combined,
    GramianAggregator,
    LossWeighting,
    Method,
    Regularizer,
    StepContext,
)
from deconflict.optim._registry import available, canonical_name, get, method_class, register
from deconflict.optim._resolve import MethodSet, resolve
from deconflict.optim.aligned_mtl import AlignedMTL
from deconflict.optim.cagrad import CAGrad
from deconflict.optim.cosreg import CosReg
from deconflict.optim.dwa import DWA

# Importing the modules registers their methods.
from deconflict.optim.equal import Equal, FixedWeights
from deconflict.optim.famo import FAMO
from deconflict.optim.go4align import GO4Align
from deconflict.optim.graddrop import GradDrop
from deconflict.optim.gradnorm import GradNorm
from deconflict.optim.gradvac import GradVac
from deconflict.optim.imtl import IMTL, IMTLG, IMTLL
from deconflict.optim.mgda import MGDA
from deconflict.optim.nash_mtl import NashMTL
from deconflict.optim.pcgrad import PCGrad
from deconflict.optim.random_weighting import RGW, RLW
from deconflict.optim.rotograd import RotoGrad
from deconflict.optim.uncertainty import UncertaintyWeighting

__all__ = [
    "DWA",
    "FAMO",
    "IMTL",
    "IMTLG",
    "IMTLL",
    "MGDA",
    "RGW",
    "RLW",
    "Aggregator",
    "AlignedMTL",
    "CAGrad",
    "Combined",
    "CosReg",
    "Equal",
    "FixedWeights",
    "GO4Align",
    "GradDrop",
    "GradNorm",
    "GradVac",
    "GramianAggregator",
    "LossWeighting",
    "Method",
    "MethodSet",
    "NashMTL",
    "PCGrad",
    "Regularizer",
    "RotoGrad",
    "StepContext",
    "UncertaintyWeighting",
    "available",
    "canonical_name",
    "get",
    "method_class",
    "register",
    "resolve",
]
