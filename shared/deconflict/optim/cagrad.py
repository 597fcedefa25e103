"""CAGrad — conflict-averse gradient descent (Liu et al., NeurIPS 2021)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from deconflict.errors import SolverError
from deconflict.optim._base import GramianAggregator
from deconflict.optim._registry import register

__all__ = ["CAGrad"]


@register()
class CAGrad(GramianAggregator):
    """CAGrad: the direction that maximises the worst task's improvement near the average gradient.

    Liu et al., *Conflict-Averse Gradient Descent for Multi-task Learning*, NeurIPS 2021, Eq. (4)
    and Algorithm 1. With g0 the average gradient:

        max_d min_i ⟨g_i, d⟩   s.t.  ‖d − g0‖ ≤ c ‖g0‖,

    solved through its dual: w* = argmin_{w∈Δ} g_wᵀ g0 + √φ ‖g_w‖ with g_w = Σ_i w_i g_i and
    φ = c²‖g0‖²; then d = g0 + (√φ / ‖g_w*‖) g_w*. The dual is solved on the T×T Gramian with
    SciPy's SLSQP (as the official code does), with analytic gradients and a tight tolerance; a
    failed solve raises :class:`~deconflict.errors.SolverError`.

    Args:
        c: radius of the ball around g0, ``c ≥ 0`` (``c = 0`` gives the average gradient).
        rescale: ``0`` returns d as in Algorithm 1 (the paper, and TorchJD); the official code
            (``rescale=1``, its default, also LibMTL's) divides by ``1 + c²``; ``2`` divides by ``1 + c``.
        reduction: ``"mean"`` (g0 is the mean gradient, the paper) or ``"sum"`` (the result times
            T, as the official NYUv2 code does "to match the sum loss").
    """

    name = "cagrad"
    paper = "Liu et al. 2021, Conflict-Averse Gradient Descent for Multi-task Learning (NeurIPS)"
    equation = "Eq. (4), Alg. 1: d = g0 + √φ g_w/‖g_w‖, w = argmin_{w∈Δ} g_wᵀg0 + √φ‖g_w‖, φ = c²‖g0‖²"

    def __init__(self, c: float = 0.5, rescale: int = 0, reduction: str = "mean") -> None:
        super().__init__()
        if not (isinstance(c, (int, float)) and np.isfinite(c) and c >= 0):
            raise self._invalid(f"c must be a finite number ≥ 0, got {c!r}.")
        if rescale not in (0, 1, 2):
            raise self._invalid(f"rescale must be 0, 1 or 2, got {rescale!r}.")
        if reduction not in ("mean", "sum"):
            raise self._invalid(f"reduction must be 'mean' or 'sum', got {reduction!r}.")
        self.c = float(c)
        self.rescale = int(rescale)
        self.reduction = reduction

    def dual_weights(self, gram: np.ndarray) -> np.ndarray:
        """w* of the dual problem, on the simplex."""
        n = gram.shape[0]
        b = gram.mean(axis=1)  # g_iᵀ g0
        g0_norm2 = max(float(gram.mean()), 0.0)
        sqrt_phi = self.c * np.sqrt(g0_norm2)
        scale = max(float(np.max(np.abs(gram))), np.finfo(float).tiny)
        bs, gs, sp = b / scale, gram / scale, sqrt_phi / np.sqrt(scale)

        def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
            gw = gs @ w
            norm = np.sqrt(max(float(w @ gw), 1e-30))
            return float(w @ bs + sp * norm), bs + sp * gw / norm

        start = np.full(n, 1.0 / n)
        result = minimize(
            objective, start, jac=True, method="SLSQP",
            bounds=[(0.0, 1.0)] * n,
            constraints=({"type": "eq", "fun": lambda w: np.sum(w) - 1.0, "jac": lambda w: np.ones_like(w)},),
            options={"ftol": 1e-12, "maxiter": 500},
        )
        if not result.success:
            raise SolverError(
                f"{self._where()}: SLSQP failed on the CAGrad dual ({result.message}). The Gramian was "
                f"{gram.tolist()}; if it is degenerate, check for tasks with zero gradients."
            )
        w = np.clip(result.x, 0.0, None)
        return w / w.sum()

    def weights(self, gramian: Tensor) -> Tensor:
        gram = gramian.detach().cpu().numpy().astype(np.float64)
        n = gram.shape[0]
        weights = np.full(n, 1.0 / n)
        g0_norm2 = max(float(gram.mean()), 0.0)
        if self.c > 0 and g0_norm2 > 0:
            w = self.dual_weights(gram)
            gw_norm = np.sqrt(max(float(w @ gram @ w), 0.0))
            if gw_norm > 1e-12 * np.sqrt(max(float(np.max(np.diag(gram))), 1e-300)):
                weights = weights + (self.c * np.sqrt(g0_norm2) / gw_norm) * w
        if self.rescale == 1:
            weights = weights / (1.0 + self.c**2)
        elif self.rescale == 2:
            weights = weights / (1.0 + self.c)
        if self.reduction == "sum":
            weights = weights * n
        return torch.from_numpy(weights).to(device=gramian.device, dtype=gramian.dtype)
