"""MGDA — multiple-gradient descent (Désidéri 2012; Sener & Koltun, NeurIPS 2018)."""

from __future__ import annotations

import torch
from torch import Tensor

from deconflict.numerics import single_threaded_blas
from deconflict.optim._base import GramianAggregator, StepContext
from deconflict.optim._registry import register
from deconflict.optim._simplex import min_norm_weights, min_norm_weights_frank_wolfe

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
        solver: ``"exact"`` (a finite active-set algorithm, exact up to round-off, default) or
            ``"frank_wolfe"`` (the paper's Algorithm 2, approximate, as in its official code).
        max_iter: iteration limit of the Frank-Wolfe solver (official code: 250).
        tol: stopping tolerance of the Frank-Wolfe solver (official code: 1e-5).
        normalization: the official code's option to solve for α on normalised gradients g_t/n_t
            (the update stays Σ α_t g_t): ``none`` (the paper), ``l2`` (n_t = ‖g_t‖), ``loss``
            (n_t = L_t), ``loss+`` (n_t = L_t ‖g_t‖, the official default). ``loss`` and ``loss+``
            need the losses (the training engine passes them).
    """

    name = "mgda"
    claims = frozenset({"homogeneous", "permutation_invariant", "non_conflicting"})
    paper = "Sener & Koltun 2018, Multi-Task Learning as Multi-Objective Optimization (NeurIPS)"
    equation = "Eq. (3): min_{α∈Δ} ‖Σ_t α_t g_t‖²; MGDA-UB Eq. (7) at feature level"

    def __init__(
        self, solver: str = "exact", max_iter: int = 250, tol: float = 1e-5, normalization: str = "none"
    ) -> None:
        super().__init__()
        if solver not in ("exact", "frank_wolfe"):
            raise self._invalid(f"solver must be 'exact' or 'frank_wolfe', got {solver!r}.")
        if int(max_iter) < 1:
            raise self._invalid(f"max_iter must be at least 1, got {max_iter!r}.")
        if not tol > 0:
            raise self._invalid(f"tol must be positive, got {tol!r}.")
        if normalization not in ("none", "l2", "loss", "loss+"):
            raise self._invalid(f"normalization must be 'none', 'l2', 'loss' or 'loss+', got {normalization!r}.")
        self.solver = solver
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.normalization = normalization

    def aggregate(self, jacobian: Tensor, context: StepContext | None) -> Tensor:
        if self.normalization == "none":
            return super().aggregate(jacobian, context)
        gramian = (jacobian @ jacobian.T).to(torch.float64)
        norms = gramian.diagonal().clamp_min(0).sqrt()
        if self.normalization == "l2":
            factors = norms
        else:
            losses = self._require(context, "losses").to(torch.float64).to(gramian.device)
            factors = losses if self.normalization == "loss" else losses * norms
        factors = torch.where(factors > 0, factors, torch.ones_like(factors))
        with single_threaded_blas():
            alpha = self.weights(gramian / (factors[:, None] * factors[None, :]))
        self.last_weights = alpha.to(jacobian.dtype)
        return self.last_weights @ jacobian

    def weights(self, gramian: Tensor) -> Tensor:
        gram = gramian.detach().cpu().numpy()
        if self.solver == "exact":
            alpha = min_norm_weights(gram)
        else:
            alpha = min_norm_weights_frank_wolfe(gram, max_iter=self.max_iter, tol=self.tol)
        return torch.from_numpy(alpha).to(device=gramian.device, dtype=gramian.dtype)
