"""Equal weighting: joint training, the baseline of every paper."""

from __future__ import annotations

import torch
from torch import Tensor

from deconflict.optim._base import LossWeighting
from deconflict.optim._registry import register

__all__ = ["Equal"]


@register("ew", "joint", "ls", "linear_scalarization")
class Equal(LossWeighting):
    """Joint training: every task weighs the same (linear scalarization with equal weights).

    Minimises ``Σ_t L_t`` (``reduction="sum"``, the multi-task objective ``f1(θ1) + f2(θ2)`` of
    DR-MGF Fig. 3 and the "joint training" row of every paper) or ``(1/T) Σ_t L_t``
    (``reduction="mean"``, LibMTL's EW). The two differ only by the constant factor T, i.e. by the
    learning rate.

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

    def weigh(self, losses: Tensor) -> Tensor:
        n_tasks = losses.shape[0]
        value = 1.0 if self.reduction == "sum" else 1.0 / n_tasks
        return torch.full((n_tasks,), value, dtype=losses.dtype, device=losses.device)
