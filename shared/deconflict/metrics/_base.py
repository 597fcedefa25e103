"""Accumulating metrics: update with batches, compute once, with three ways of averaging."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from deconflict.errors import DeconflictError, ShapeError

__all__ = ["REDUCTIONS", "Metric", "MetricError", "check_finite_predictions"]

#: How a dense metric averages over a test set (the papers' code lineages differ, see the notes):
#: ``global``: over every valid pixel of the test set at once (LibMTL, SamsungLabs; confusion
#: matrices in all lineages); ``per_batch``: the metric of each batch, averaged over batches with
#: equal weight (MTAN, CAGrad, Nash-MTL, FAMO, GO4Align); ``per_image``: the metric of each image,
#: averaged over images (the pre-2020 MTAN segmentation code, ASTMT saliency).
REDUCTIONS = ("global", "per_batch", "per_image")


class MetricError(DeconflictError, ValueError):
    """A metric cannot be computed from what it was given (no valid target, bad shapes, NaN)."""


def check_finite_predictions(name: str, predictions: Tensor) -> None:
    if predictions.is_floating_point() and not bool(torch.isfinite(predictions).all()):
        raise MetricError(
            f"{name}: the predictions contain NaN or Inf; the model diverged or its output is not "
            "normalised. Evaluate a finite checkpoint."
        )


class Metric:
    """Base class: ``update(predictions, targets)`` per batch, ``compute()`` → {name: value}.

    Subclasses implement :meth:`_batch_state` (what a batch contributes: an additive state for
    ``global``, and the per-batch / per-image values) and :meth:`_finish` (values from a state).
    """

    name = "metric"

    def __init__(self, reduction: str = "global") -> None:
        if reduction not in REDUCTIONS:
            raise MetricError(f"{self.name}: reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}.")
        self.reduction = reduction
        self.reset()

    def reset(self) -> None:
        self._state: Any = None
        self._values: list[dict[str, float]] = []

    def _check_shapes(self, predictions: Tensor, targets: Tensor, expected: str) -> None:
        if predictions.shape != targets.shape:
            raise ShapeError(
                f"{self.name}: predictions {tuple(predictions.shape)} and targets {tuple(targets.shape)} "
                f"differ; expected {expected}."
            )

    def _accumulate(self, state: Any, per_item: list[Any]) -> None:
        """Add a batch: its additive state (global), its own values (per batch) or its images'."""
        if self.reduction == "global":
            self._state = state if self._state is None else self._add(self._state, state)
        elif self.reduction == "per_batch":
            if self._has_valid(state):
                self._values.append(self._finish(state))
        else:
            self._values.extend(self._finish(item) for item in per_item if self._has_valid(item))

    def compute(self) -> dict[str, float]:
        if self.reduction == "global":
            if self._state is None or not self._has_valid(self._state):
                raise MetricError(f"{self.name}: no valid target element was seen; nothing to average.")
            return self._finish(self._state)
        if not self._values:
            raise MetricError(f"{self.name}: no batch or image with a valid target element was seen.")
        keys = self._values[0].keys()
        return {key: float(sum(v[key] for v in self._values) / len(self._values)) for key in keys}

    # -- to implement --------------------------------------------------------------------------
    @staticmethod
    def _add(a: Any, b: Any) -> Any:
        raise NotImplementedError

    def _has_valid(self, state: Any) -> bool:
        raise NotImplementedError

    def _finish(self, state: Any) -> dict[str, float]:
        raise NotImplementedError
