"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deconflict.optim._base import LossWeighting, StepContext
from deconflict.optim._registry import register

__all__ = ["UncertaintyWeighting"]


@register("uncertainty", "kendall")
class UncertaintyWeighting(LossWeighting):
    """UW: learn one homoscedastic uncertainty σ_t per task and weigh each loss by it.

    Kendall et al., *Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry and
    Semantics*, CVPR 2018, Eq. (7): L = Σ_t 1/(2σ_t²) L_t + log σ_t. With the usual
    parameterisation s_t = log σ_t² (learned, numerically stable) this is
    Σ_t ½ e^{−s_t} L_t + ½ s_t: weights ½e^{−s_t}, penalty ½ Σ_t s_t. The s_t are trained by the
    model's optimizer together with the network, as in the paper and in the MTAN / LibMTL code.

    Args:
        init: initial s_t = log σ_t² (0: σ = 1; LibMTL starts at −0.5).
        n_tasks: number of tasks; the training engine sets it from the model, and a standalone
            use takes it from the first call.
    """

    name = "uw"
    paper = "Kendall, Gal & Cipolla 2018, Multi-Task Learning Using Uncertainty to Weigh Losses (CVPR)"
    equation = "Eq. (7): Σ_t 1/(2σ_t²) L_t + log σ_t, with s_t = log σ_t²: Σ_t ½e^{−s_t} L_t + ½s_t"
    stateful = True
    trained_with_model = True

    def __init__(self, n_tasks: int | None = None, init: float = 0.0) -> None:
        super().__init__()
        if n_tasks is not None and (not isinstance(n_tasks, int) or n_tasks < 1):
            raise self._invalid(f"n_tasks must be a positive integer or None, got {n_tasks!r}.")
        self.n_tasks = n_tasks
        self.init = float(init)
        self.log_variance = nn.Parameter(torch.full((n_tasks or 0,), self.init))
        self._penalty: Tensor | None = None

    def setup(self, n_tasks: int, device: torch.device) -> None:
        if self.log_variance.numel() == 0:
            self.log_variance.data = torch.full((n_tasks,), self.init, device=device)

    def parameters(self) -> list[nn.Parameter]:
        return [self.log_variance]

    def reset(self) -> None:
        super().reset()
        with torch.no_grad():
            self.log_variance.fill_(self.init)

    def weigh(self, losses: Tensor, context: StepContext | None) -> Tensor:
        self.setup(losses.shape[0], losses.device)  # sized on the first call when used standalone
        if self.log_variance.shape[0] != losses.shape[0]:
            raise self._invalid(f"built for {self.log_variance.shape[0]} tasks, called with {losses.shape[0]}.")
        s = self.log_variance.to(losses.dtype)
        self._penalty = 0.5 * s.sum()
        return 0.5 * torch.exp(-s)

    def penalty(self) -> Tensor | None:
        return self._penalty

    def state_dict(self) -> dict:
        return {**super().state_dict(), "log_variance": self.log_variance.detach().clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.log_variance.data = state["log_variance"].clone().to(self.log_variance.device)
