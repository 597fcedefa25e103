"""Instruments on task gradients: cosines, magnitudes, conflict, disentanglement.

All functions take a T×D matrix whose rows are task gradients (of the shared parameters, of one
layer, or of the shared representation) and return plain floats or small tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deconflict.errors import ShapeError

__all__ = [
    "cosine_matrix",
    "magnitude_similarity_matrix",
    "pair_indices",
    "gradient_direction_similarity",
    "gradient_magnitude_similarity",
    "conflict_fraction",
    "drmgf_conflict_value",
    "drmgf_convergence_gain",
    "feature_disentanglement_entropy",
]


def _check(jacobian: Tensor) -> Tensor:
    if not isinstance(jacobian, Tensor) or jacobian.dim() != 2 or jacobian.shape[0] < 1:
        shape = tuple(jacobian.shape) if isinstance(jacobian, Tensor) else type(jacobian).__name__
        raise ShapeError(f"expected a T×D matrix of task gradients, got {shape}.")
    return jacobian.detach().to(torch.float64)


def pair_indices(n_tasks: int) -> list[tuple[int, int]]:
    """The unordered task pairs (i, j), i < j."""
    return [(i, j) for i in range(n_tasks) for j in range(i + 1, n_tasks)]


def cosine_matrix(jacobian: Tensor, eps: float = 1e-12) -> Tensor:
    """T×T cosine similarities cos(g_i, g_j); a zero gradient has cosine 0 with everything."""
    g = _check(jacobian)
    norms = g.norm(dim=1)
    unit = g / norms.clamp_min(eps)[:, None]
    cosine = unit @ unit.T
    zero = norms <= eps
    cosine[zero, :] = 0.0
    cosine[:, zero] = 0.0
    return cosine.clamp(-1.0, 1.0)


def magnitude_similarity_matrix(jacobian: Tensor, eps: float = 1e-24) -> Tensor:
    """T×T gradient magnitude similarity 2‖g_i‖‖g_j‖ / (‖g_i‖² + ‖g_j‖²) (PCGrad, Yu et al. 2020, Def. 2)."""
    norms = _check(jacobian).norm(dim=1)
    return 2 * norms[:, None] * norms[None, :] / (norms[:, None] ** 2 + norms[None, :] ** 2).clamp_min(eps)


def _off_diagonal_mean(matrix: Tensor) -> float:
    n = matrix.shape[0]
    if n < 2:
        raise ShapeError("a similarity between tasks needs at least two tasks.")
    return float((matrix.sum() - matrix.diagonal().sum()) / (n * (n - 1)))


def gradient_direction_similarity(jacobian: Tensor) -> float:
    """GDS, robust-MTL Eq. (6): the mean of cos(g_i, g_j) over ordered pairs i ≠ j."""
    return _off_diagonal_mean(cosine_matrix(jacobian))


def gradient_magnitude_similarity(jacobian: Tensor) -> float:
    """GMS, robust-MTL Eq. (7): the mean of 2‖g_i‖‖g_j‖/(‖g_i‖² + ‖g_j‖²) over ordered pairs i ≠ j."""
    return _off_diagonal_mean(magnitude_similarity_matrix(jacobian))


def conflict_fraction(jacobian: Tensor, threshold: float = 0.0) -> float:
    """The fraction of task pairs (i < j) whose cosine is below ``threshold`` (0: conflicting)."""
    cosine = cosine_matrix(jacobian)
    pairs = pair_indices(cosine.shape[0])
    if not pairs:
        raise ShapeError("conflict between tasks needs at least two tasks.")
    return sum(float(cosine[i, j]) < threshold for i, j in pairs) / len(pairs)


def drmgf_conflict_value(g_i: Tensor, g_j: Tensor, eps: float = 1e-30) -> float:
    """DR-MGF Eq. (2) / (C.13): C = Σ_d max(0, −g_{i,d} g_{j,d} / ‖g_i‖²), the conflict of g_j with g_i."""
    g_i, g_j = g_i.detach().to(torch.float64).reshape(-1), g_j.detach().to(torch.float64).reshape(-1)
    return float(torch.clamp(-(g_i * g_j) / max(float(g_i @ g_i), eps), min=0).sum())


def drmgf_convergence_gain(g_i: Tensor, g_j: Tensor, eps: float = 1e-30) -> float:
    """DR-MGF Eq. (3) to first order (C.10–C.12): G = (Δf_i^{g_i+g_j} − Δf_i^{g_i}) / Δf_i^{g_i}
    ≈ g_i·g_j / ‖g_i‖² — how much task j's gradient adds to task i's first-order loss decrease
    (negative: j slows i down)."""
    g_i, g_j = g_i.detach().to(torch.float64).reshape(-1), g_j.detach().to(torch.float64).reshape(-1)
    return float((g_i @ g_j) / max(float(g_i @ g_i), eps))


def feature_disentanglement_entropy(representation_jacobian: Tensor, eps: float = 1e-12) -> float:
    """Feature disentanglement, robust-MTL Eq. (8)–(9): for every feature j of the shared
    representation, p_ij = |∂L_i/∂Z_j| / Σ_k |∂L_k/∂Z_j| and E_j = −Σ_i p_ij log p_ij; returns the mean
    of E_j over the features that receive a gradient. 0: each feature serves one task; log T: all
    tasks alike."""
    magnitude = _check(representation_jacobian).abs()
    total = magnitude.sum(0)
    used = total > eps
    if not used.any():
        raise ShapeError("no feature of the representation receives a gradient: the entropy is undefined.")
    p = magnitude[:, used] / total[used]
    entropy = -(p * torch.log(p.clamp_min(eps))).sum(0)
    return float(entropy.mean())
