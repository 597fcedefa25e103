"""Equal weighting: joint training, the baseline of every paper."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from deconflict.optim._base import LossWeighting
from deconflict.optim._registry import register

__all__ = ["Equal"]


@register("ew", "joint", "ls", "linear_scalarization")
class Equal(LossWeighting):
    """Joint training: every task weighs the same (linear scalarization with equal weights).

    Minimises ``Σ_t L_t`` (``reduction="sum"``, the multi-task objective ``f1(θ1) + f2(θ2)`` of
    DR-MGF Fig. 3, the "joint training" row of every paper, LibMTL's EW and Nash-MTL's LS) or
    ``(1/T) Σ_t L_t`` (``reduction="mean"``). The two differ only by the constant factor T, i.e. by
    the learning rate.

    Args:
        reduction: ``"sum"`` (weights 1) or ``"mean"`` (weights 1/T).
    """

    name = "equal"
    paper = "Joint training / linear scalarization (baseline in all five papers)"
    equation = "L = Σ_t w_t L_t with w_t = 1 (sum) or 1/T (mean)"

    def __init__(self, reduction: str = "sum") -> None:
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise self._invalid(f"reduction must be 'sum' or 'mean', got {reduction!r}.")
        self.reduction = reduction

    def weigh(self, losses: Tensor, context: object = None) -> Tensor:
        n_tasks = losses.shape[0]
        value = 1.0 if self.reduction == "sum" else 1.0 / n_tasks
        return torch.full((n_tasks,), value, dtype=losses.dtype, device=losses.device)


@register("manual", "fixed_weights")
class FixedWeights(LossWeighting):
    """Fixed, manually tuned task weights: minimise Σ_t w_t L_t with the given w.

    The "manually tuned" weighting of the task-priority paper (Jeong & Yoon 2024) and the
    hand-set weights many papers use as a baseline.

    Args:
        weights: one non-negative weight per task (at least one positive).
    """

    name = "fixed"
    paper = "Manually tuned weights (task-priority paper, Jeong & Yoon 2024, baseline)"
    equation = "L = Σ_t w_t L_t with w fixed"

    @classmethod
    def example_hparams(cls, n_tasks: int) -> dict[str, Any]:
        return {"weights": [1.0] * n_tasks}

    def __init__(self, weights: tuple[float, ...] | list[float] = ()) -> None:
        super().__init__()
        values = [float(w) for w in weights]
        if not values or any(not (w >= 0) or w != w or w == float("inf") for w in values) or sum(values) == 0:
            raise self._invalid(f"weights must be a non-empty list of finite numbers ≥ 0, not all 0; got {weights!r}.")
        self.weights = tuple(values)

    def weigh(self, losses: Tensor, context: object = None) -> Tensor:
        if losses.shape[0] != len(self.weights):
            raise self._invalid(f"{len(self.weights)} weights for {losses.shape[0]} tasks.")
        return torch.tensor(self.weights, dtype=losses.dtype, device=losses.device)
