"""MGDA — multiple-gradient descent (Désidéri 2012; Sener & Koltun, NeurIPS 2018)."""

from __future__ import annotations

import torch
from torch import Tensor

from deconflict.optim._base import GramianAggregator
from deconflict.optim._registry import register
from deconflict.optim._simplex import min_norm_weights_frank_wolfe, min_norm_weights_wolfe

__all__ = ["MGDA"]


@register("mgda_ub", "mgd")
class MGDA(GramianAggregator):
    """MGDA: the minimum-norm point of the convex hull of the task gradients.

    Sener & Koltun, *Multi-Task Learning as Multi-Objective Optimization*, NeurIPS 2018, Eq. (3):
    ``min_α ‖Σ_t α_t g_t‖²  s.t.  α_t ≥ 0, Σ_t α_t = 1``; the update is d = Σ_t α_t g_t, which is
    zero at a Pareto-stationary point and otherwise a direction that decreases every task.
    At feature level (gradients with respect to the shared representation) this is MGDA-UB
    (Sec. 3.3, Eq. (7)).

    Args:
        solver: ``"exact"`` (Wolfe's min-norm-point algorithm: exact up to round-off, default) or
            ``"frank_wolfe"`` (the paper's Algorithm 2, approximate, as in its official code).
        max_iter: iteration limit of the Frank-Wolfe solver (official code: 250).
        tol: stopping tolerance of the Frank-Wolfe solver (official code: 1e-5).
    """

    name = "mgda"
    paper = "Sener & Koltun 2018, Multi-Task Learning as Multi-Objective Optimization (NeurIPS)"
    equation = "Eq. (3): min_{α∈Δ} ‖Σ_t α_t g_t‖²; MGDA-UB Eq. (7) at feature level"

    def __init__(self, solver: str = "exact", max_iter: int = 250, tol: float = 1e-5) -> None:
        super().__init__()
        if solver not in ("exact", "frank_wolfe"):
            raise self._invalid(f"solver must be 'exact' or 'frank_wolfe', got {solver!r}.")
        if int(max_iter) < 1:
            raise self._invalid(f"max_iter must be at least 1, got {max_iter!r}.")
        if not tol > 0:
            raise self._invalid(f"tol must be positive, got {tol!r}.")
        self.solver = solver
        self.max_iter = int(max_iter)
        self.tol = float(tol)

    def weights(self, gramian: Tensor) -> Tensor:
        gram = gramian.detach().cpu().numpy()
        if self.solver == "exact":
            alpha = min_norm_weights_wolfe(gram)
        else:
            alpha = min_norm_weights_frank_wolfe(gram, max_iter=self.max_iter, tol=self.tol)
        return torch.from_numpy(alpha).to(device=gramian.device, dtype=gramian.dtype)
