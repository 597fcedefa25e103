"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deconflict.optim._base import LearnedLogScales
from deconflict.optim._registry import register

__all__ = ["UncertaintyWeighting"]


@register("uncertainty", "kendall")
class UncertaintyWeighting(LearnedLogScales):
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

    def __init__(self, n_tasks: int | None = None, init: float = 0.0) -> None:
        super().__init__(init=init)
        if n_tasks is not None and (not isinstance(n_tasks, int) or n_tasks < 1):
            raise self._invalid(f"n_tasks must be a positive integer or None, got {n_tasks!r}.")
        self.n_tasks = n_tasks
        if n_tasks is not None:
            self.setup(n_tasks, torch.device("cpu"))

    @property
    def log_variance(self) -> nn.Parameter:
        """s_t = log σ_t²."""
        return self.log_scales

    def scales(self, log_scales: Tensor) -> tuple[Tensor, Tensor]:
        return 0.5 * torch.exp(-log_scales), 0.5 * log_scales.sum()
