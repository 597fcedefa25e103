"""Layer 3 — architectures (``deconflict.models``). Every model is a :class:`MultiTaskModel`.

Models are found by name::

    >>> from deconflict import models
    >>> models.available()
    ['cross_stitch', 'drmgf_toy', 'mtan', 'single', 'split']
    >>> model = models.get("mtan", tasks={"segmentation": 13, "depth": 1, "normal": 3}, width=0.25)

Dense prediction (NYUv2, CityScapes): :class:`SegNetSingle`, :class:`SegNetSplit`,
:class:`SegNetMTAN` and :class:`CrossStitchSegNet` (their tasks' losses and activations come from
:mod:`deconflict.tasks`); DR-MGF's two-task toy network :class:`DRMGFToy`. A new architecture
registers itself with ``@models.register("name")`` in its own module (CONTRIBUTING.md).
"""

from __future__ import annotations

from typing import Any

from deconflict.models.base import MODELS, MultiTaskModel, register

# importing the modules registers their models
from deconflict.models.cross_stitch import CrossStitchSegNet
from deconflict.models.mtan import SegNetMTAN
from deconflict.models.segnet import FILTERS, SegNetBackbone, SegNetSingle, SegNetSplit
from deconflict.models.toy import DRMGFToy, toy_objective, toy_task_optima


def available() -> list[str]:
    """The registered model names."""
    return MODELS.available()


def get(name: str, **kwargs: Any) -> MultiTaskModel:
    """Build the model registered under ``name`` (e.g. ``tasks=...``, ``width=...``)."""
    return MODELS[name](**kwargs)


__all__ = [
    "FILTERS",
    "MODELS",
    "CrossStitchSegNet",
    "DRMGFToy",
    "MultiTaskModel",
    "SegNetBackbone",
    "SegNetMTAN",
    "SegNetSingle",
    "SegNetSplit",
    "available",
    "get",
    "register",
    "toy_objective",
    "toy_task_optima",
]
