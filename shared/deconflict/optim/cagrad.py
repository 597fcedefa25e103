"""CAGrad — conflict-averse gradient descent (Liu et al., NeurIPS 2021)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from deconflict.errors import SolverError
from deconflict.optim._base import GramianAggregator
from deconflict.optim._registry import register
from deconflict.optim._simplex import min_norm_weights

__all__ = ["STATIONARY_TOL", "CAGrad"]


#: ‖min-norm point of the hull‖ / max_i ‖g_i‖ below which the task gradients count as
#: Pareto-stationary (0 in their convex hull). The float64 Gramian resolves norms down to about
#: 1.5e-8 · max_i ‖g_i‖; above this threshold Algorithm 1's normalisation g_w / ‖g_w‖ is accurate to
#: about 1e-6, below it the projection returned instead is optimal for Eq. (4) to within
#: (1 + c) · 1e-5 · ‖g0‖ · max_i ‖g_i‖.
STATIONARY_TOL = 1e-5
#: ridge (relative to max_i ‖g_i‖²) on the projection's multipliers λ: selects the smallest λ where the
#: Gramian is singular; moves d by at most about 1e-6 · ‖g0‖
PROJECTION_RIDGE = 1e-12


def _factor(gram: np.ndarray) -> np.ndarray:
    """R with Rᵀ R = gram (symmetric PSD), from its eigendecomposition (rank-revealing)."""
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))).T


@register()
class CAGrad(GramianAggregator):
    """CAGrad: the direction that maximises the worst task's improvement near the average gradient.

    Liu et al., *Conflict-Averse Gradient Descent for Multi-task Learning*, NeurIPS 2021, Eq. (4)
    and Algorithm 1. With g0 the average gradient:

        max_d min_i ⟨g_i, d⟩   s.t.  ‖d − g0‖ ≤ c ‖g0‖,

    solved through its dual: w* = argmin_{w∈Δ} g_wᵀ g0 + √φ ‖g_w‖ with g_w = Σ_i w_i g_i and
    φ = c²‖g0‖²; then d = g0 + (√φ / ‖g_w*‖) g_w*. The dual is solved on the T×T Gramian
    (accumulated in float64) with SciPy's SLSQP, as the official code does, with analytic
    gradients and a tight tolerance; should SLSQP fail, the dual is solved as a second-order cone
    program (cvxpy + Clarabel) instead.

    **Pareto-stationary points.** When 0 lies in the convex hull of the task gradients, the dual
    optimum may sit at its kink g_w* = 0, where Algorithm 1's g_w/‖g_w‖ is undefined (numerically:
    round-off in an arbitrary direction, turned into a step of length c‖g0‖ that can conflict with
    a task). There Eq. (4)'s optimal value is 0 and its optimal set is every d of the ball with
    ⟨g_i, d⟩ ≥ 0 for all i; this class returns the one closest to g0, the projection of g0 onto
    the cone {d : ⟨g_i, d⟩ ≥ 0 ∀i}: d = g0 + Σ_i λ_i g_i with λ = argmin_{λ≥0} ‖g0 + Σ_i λ_i g_i‖²
    (a non-negative least-squares problem on the Gramian; Moreau's decomposition). The kink is
    detected when the hull's minimum-norm point is below ``STATIONARY_TOL`` · max_i ‖g_i‖ and that
    projection lies in the ball (always, for c ≥ 1). ``last_case`` says which case the last call
    took (``"average"``, ``"algorithm1"`` or ``"stationary"``).

    Args:
        c: radius of the ball around g0, ``c ≥ 0`` (``c = 0`` gives the average gradient).
        rescale: ``0`` returns d as in Algorithm 1 (the paper, and TorchJD); the official code
            (``rescale=1``, its default, also LibMTL's) divides by ``1 + c²``; ``2`` divides by ``1 + c``.
        reduction: ``"mean"`` (g0 is the mean gradient, the paper) or ``"sum"`` (the result times
            T, as the official NYUv2 code does "to match the sum loss").
    """

    name = "cagrad"
    claims = frozenset({"homogeneous", "permutation_invariant"})
    paper = "Liu et al. 2021, Conflict-Averse Gradient Descent for Multi-task Learning (NeurIPS)"
    equation = "Eq. (4), Alg. 1: d = g0 + √φ g_w/‖g_w‖, w = argmin_{w∈Δ} g_wᵀg0 + √φ‖g_w‖, φ = c²‖g0‖²"
    exact_gramian = True

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
        self.last_case = ""

    def dual_weights(self, gram: np.ndarray) -> np.ndarray:
        """w* of the dual problem, on the simplex (SLSQP; the SOCP solver if SLSQP fails)."""
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

        from scipy.optimize import minimize  # imported on use: scipy.optimize costs ~0.4 s per process

        start = np.full(n, 1.0 / n)
        result = minimize(
            objective,
            start,
            jac=True,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * n,
            constraints=({"type": "eq", "fun": lambda w: np.sum(w) - 1.0, "jac": lambda w: np.ones_like(w)},),
            options={"ftol": 1e-12, "maxiter": 500},
        )
        if not result.success:
            return self._dual_weights_socp(bs, gs, sp, str(result.message))
        w = np.clip(result.x, 0.0, None)
        return w / w.sum()

    def _dual_weights_socp(self, b: np.ndarray, gram: np.ndarray, sqrt_phi: float, why: str) -> np.ndarray:
        import cvxpy as cp

        w = cp.Variable(gram.shape[0], nonneg=True)
        problem = cp.Problem(cp.Minimize(b @ w + sqrt_phi * cp.norm(_factor(gram) @ w)), [cp.sum(w) == 1])
        try:
            problem.solve(solver=cp.CLARABEL)
        except cp.error.SolverError as error:
            problem.status = f"solver error: {error}"
        if problem.status not in ("optimal", "optimal_inaccurate") or w.value is None:
            raise SolverError(
                f"{self._where()}: SLSQP failed on the CAGrad dual ({why}) and so did the cone solver "
                f"({problem.status}). The Gramian (scaled) was {gram.tolist()}; if it is degenerate, "
                "check for tasks with zero gradients."
            )
        weights = np.clip(np.asarray(w.value, dtype=np.float64), 0.0, None)
        return weights / weights.sum()

    def stationary_weights(self, gram: np.ndarray) -> np.ndarray | None:
        """Weights of the projection of g0 onto {d : ⟨g_i, d⟩ ≥ 0 ∀i} when Eq. (4)'s dual optimum is at
        its kink (0 in the hull and the projection inside the ball); None otherwise."""
        n = gram.shape[0]
        scale = float(np.max(np.diag(gram)))
        if scale <= 0.0:
            return None
        unit = gram / scale
        hull = min_norm_weights(unit)
        if np.sqrt(max(float(hull @ unit @ hull), 0.0)) > STATIONARY_TOL:
            return None
        factor = _factor(unit)
        mean = np.full(n, 1.0 / n)
        # λ is unique up to the null space of the Gramian (e.g. a task with a zero gradient, whose λ
        # does not move d): a 1e-12 ridge picks the smallest λ, so round-off cannot inflate it
        system = np.vstack([factor, np.sqrt(PROJECTION_RIDGE) * np.eye(n)])
        target = np.concatenate([-factor @ mean, np.zeros(n)])
        from scipy.optimize import nnls

        shift, _ = nnls(system, target, maxiter=50 * n)
        radius2 = self.c**2 * max(float(mean @ unit @ mean), 0.0)
        if float(shift @ unit @ shift) > radius2 * (1.0 + 1e-9):
            return None
        return mean + shift

    def weights(self, gramian: Tensor) -> Tensor:
        gram = gramian.detach().cpu().numpy().astype(np.float64)
        n = gram.shape[0]
        weights = np.full(n, 1.0 / n)
        g0_norm2 = max(float(gram.mean()), 0.0)
        self.last_case = "average"
        if self.c > 0 and g0_norm2 > 0:
            stationary = self.stationary_weights(gram)
            if stationary is not None:
                weights, self.last_case = stationary, "stationary"
            else:
                w = self.dual_weights(gram)
                gw_norm = np.sqrt(max(float(w @ gram @ w), 0.0))
                weights = weights + (self.c * np.sqrt(g0_norm2) / gw_norm) * w
                self.last_case = "algorithm1"
        if self.rescale == 1:
            weights = weights / (1.0 + self.c**2)
        elif self.rescale == 2:
            weights = weights / (1.0 + self.c)
        if self.reduction == "sum":
            weights = weights * n
        return torch.from_numpy(weights).to(device=gramian.device, dtype=gramian.dtype)
