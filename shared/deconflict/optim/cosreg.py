"""CosReg — orthogonal-gradient regularization (Suteu & Guo 2019)."""

from __future__ import annotations

import torch
from torch import Tensor

from deconflict.optim._base import Regularizer, StepContext
from deconflict.optim._registry import register

__all__ = ["CosReg"]


@register("cos_reg", "orthogonal_gradients")
class CosReg(Regularizer):
    """CosReg: penalise the squared cosine similarity between task gradients.

    Suteu & Guo, *Regularizing Deep Multi-Task Networks using Orthogonal Gradients*, 2019; as the
    robust-MTL paper (Mao et al.) writes it, Eq. (3): min_θ Σ_t L_t + L_reg(G), with "squared
    cosine similarity as a regularization term":

        L_reg = λ · mean_{i<j} cos²(g_i, g_j)

    on the task gradients of the shared parameters (parameter level) or of the shared
    representation (feature level). The gradients are taken with a graph (double backpropagation),
    so the penalty does change the update. (The code lineage of the robust-MTL paper,
    ``danielmao2019/Pylon``, reads the gradients without a graph, which makes its penalty a
    constant; ``detach=True`` reproduces that behaviour.)

    Args:
        weight: λ (not stated in the papers; 10.0 as in the Pylon lineage's config).
        eps: guards the gradient norms.
        detach: compute the penalty without a graph (Pylon's effective behaviour: no effect on training).
    """

    name = "cosreg"
    paper = "Suteu & Guo 2019, Regularizing Deep Multi-Task Networks using Orthogonal Gradients; robust-MTL Eq. (3)"
    equation = "robust-MTL Eq. (3): Σ_t L_t + λ mean_{i<j} cos²(g_i, g_j), second order"

    def __init__(self, weight: float = 10.0, eps: float = 1e-12, detach: bool = False) -> None:
        super().__init__()
        if not (isinstance(weight, (int, float)) and weight >= 0):
            raise self._invalid(f"weight must be ≥ 0, got {weight!r}.")
        if not eps > 0:
            raise self._invalid(f"eps must be > 0, got {eps!r}.")
        self.weight = float(weight)
        self.eps = float(eps)
        self.detach = bool(detach)

    @staticmethod
    def mean_squared_cosine(jacobian: Tensor, eps: float = 1e-12) -> Tensor:
        """mean over task pairs i < j of cos²(g_i, g_j) (0 for a single task)."""
        n_tasks = jacobian.shape[0]
        if n_tasks < 2:
            return jacobian.sum() * 0.0
        unit = jacobian / (jacobian.norm(dim=1, keepdim=True) + eps)
        cosine = unit @ unit.T
        upper = torch.triu_indices(n_tasks, n_tasks, offset=1)
        return (cosine[upper[0], upper[1]] ** 2).mean()

    def penalty(self, jacobian: Tensor, context: StepContext | None) -> Tensor:
        source = jacobian.detach() if self.detach else jacobian
        return self.weight * self.mean_squared_cosine(source, self.eps)
