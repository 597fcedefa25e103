"""Minimum-norm point of the convex hull of T vectors, given only their Gramian.

Solves  min_{w ∈ Δ_T}  wᵀ G w  (Δ_T the probability simplex), the sub-problem of MGDA.

* :func:`min_norm_weights_wolfe` — Wolfe's (1976) finite algorithm, exact up to round-off. It keeps
  a "corral" of affinely independent vertices and alternates a major step (add the vertex most
  opposed to the current point) with minor steps (affine projection onto the corral, clipped to
  its convex hull).
* :func:`min_norm_weights_frank_wolfe` — the Frank-Wolfe iteration of Sener & Koltun (2018,
  Algorithm 2), with its exact line search; approximate, stops after ``max_iter`` steps or when
  the step is below ``tol``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["min_norm_weights_wolfe", "min_norm_weights_frank_wolfe"]


def _affine_minimiser(gram: np.ndarray, corral: list[int]) -> np.ndarray:
    """Weights μ (Σμ = 1) of the point of minimum norm in the affine hull of the corral."""
    k = len(corral)
    system = np.zeros((k + 1, k + 1))
    system[:k, :k] = gram[np.ix_(corral, corral)]
    system[:k, k] = 1.0
    system[k, :k] = 1.0
    rhs = np.zeros(k + 1)
    rhs[k] = 1.0
    solution = np.linalg.lstsq(system, rhs, rcond=None)[0]
    return solution[:k]


def min_norm_weights_wolfe(gram: np.ndarray, tol: float = 1e-12, max_iter: int = 1000) -> np.ndarray:
    """Exact min-norm convex weights by Wolfe's algorithm (float64)."""
    gram = np.asarray(gram, dtype=np.float64)
    n = gram.shape[0]
    scale = float(np.max(np.diag(gram))) if n else 0.0
    if n == 1 or scale <= 0.0:
        weights = np.zeros(n)
        weights[int(np.argmin(np.diag(gram)))] = 1.0
        return weights
    g = gram / scale  # tolerances below are relative to the largest squared norm
    start = int(np.argmin(np.diag(g)))
    corral = [start]
    lam = np.array([1.0])
    for _ in range(max_iter):
        w = np.zeros(n)
        w[corral] = lam
        gw = g @ w
        norm2 = float(w @ gw)
        j = int(np.argmin(gw))
        # Wolfe's stopping rule: x·x − min_j x·p_j ≤ tol · max‖p‖² → x is the min-norm point.
        if norm2 - gw[j] <= tol * 1.0 or j in corral:
            break
        corral.append(j)
        lam = np.append(lam, 0.0)
        while True:  # minor cycle
            mu = _affine_minimiser(g, corral)
            if np.all(mu > tol):
                lam = mu
                break
            negative = mu <= tol
            ratios = lam[negative] / np.maximum(lam[negative] - mu[negative], np.finfo(float).tiny)
            theta = float(np.clip(np.min(ratios), 0.0, 1.0))
            lam = (1.0 - theta) * lam + theta * mu
            keep = lam > tol
            if not keep.any():  # numerical safety: keep the largest
                keep[int(np.argmax(lam))] = True
            corral = [c for c, k in zip(corral, keep) if k]
            lam = lam[keep]
            lam = lam / lam.sum()
    weights = np.zeros(n)
    weights[corral] = lam
    weights = np.clip(weights, 0.0, None)
    return weights / weights.sum()


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
