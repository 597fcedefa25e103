"""Minimum-norm point of the convex hull of T vectors, given only their Gramian.

Solves  min_{w ∈ Δ_T}  wᵀ G w  (Δ_T the probability simplex), the sub-problem of MGDA.

* :func:`min_norm_weights` — exact (finite active-set algorithm): with A such that AᵀA = G, the
  non-negative least-squares problem  min_{y ≥ 0} ‖[A; 1ᵀ] y − e_{T+1}‖  (Lawson & Hanson's
  reduction of least-distance programming, solved by SciPy's NNLS) gives w = y / Σ y.
* :func:`min_norm_weights_frank_wolfe` — the Frank-Wolfe iteration of Sener & Koltun (2018,
  Algorithm 2), with its exact line search; approximate, stops after ``max_iter`` steps or when
  the step is below ``tol``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["min_norm_weights", "min_norm_weights_frank_wolfe"]


def min_norm_weights(gram: np.ndarray) -> np.ndarray:
    """Exact min-norm convex weights (float64)."""
    gram = np.asarray(gram, dtype=np.float64)
    n = gram.shape[0]
    scale = float(np.max(np.diag(gram))) if n else 0.0
    if n == 1 or scale <= 0.0:
        weights = np.zeros(n)
        weights[int(np.argmin(np.diag(gram)))] = 1.0
        return weights
    eigenvalues, eigenvectors = np.linalg.eigh(gram / scale)
    factor = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))).T  # factorᵀ factor = G / scale
    system = np.vstack([factor, np.ones((1, n))])
    target = np.zeros(n + 1)
    target[-1] = 1.0
    from scipy.optimize import nnls  # imported here: scipy.optimize costs ~0.4 s per process

    y, _ = nnls(system, target, maxiter=50 * n)
    total = y.sum()
    if not total > 0:  # cannot happen for a PSD Gramian; keep the result a valid convex combination
        y, total = np.ones(n), float(n)
    return y / total


def min_norm_weights_frank_wolfe(gram: np.ndarray, max_iter: int = 250, tol: float = 1e-5) -> np.ndarray:
    """Sener & Koltun (2018) Algorithm 2: Frank-Wolfe from the uniform weights with exact line search."""
    gram = np.asarray(gram, dtype=np.float64)
    n = gram.shape[0]
    weights = np.full(n, 1.0 / n)
    for _ in range(max_iter):
        gw = gram @ weights
        t = int(np.argmin(gw))
        # line search on ‖(1−γ) θ + γ g_t‖² with θ = Σ w_i g_i
        theta_theta = float(weights @ gw)
        theta_gt = float(gw[t])
        gt_gt = float(gram[t, t])
        denominator = theta_theta - 2.0 * theta_gt + gt_gt
        if denominator <= 0.0:
            break
        gamma = float(np.clip((theta_theta - theta_gt) / denominator, 0.0, 1.0))
        update = -gamma * weights
        update[t] += gamma
        weights = weights + update
        if np.abs(update).sum() < tol:
            break
    return weights
