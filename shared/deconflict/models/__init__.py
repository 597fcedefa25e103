"""Layer 3 — architectures (``deconflict.models``). Every model is a :class:`MultiTaskModel`."""

from deconflict.models.base import MultiTaskModel
from deconflict.models.toy import DRMGFToy, toy_objective, toy_task_optima

__all__ = ["DRMGFToy", "MultiTaskModel", "toy_objective", "toy_task_optima"]
