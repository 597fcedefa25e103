"""Instruments on task gradients: cosines, magnitudes, conflict, disentanglement.

All functions take a T×D matrix whose rows are task gradients (of the shared parameters, of one
layer, or of the shared representation) and return plain floats or small tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from deconflict.errors import ShapeError

__all__ = [
    "conflict_fraction",
    "cosine_matrix",
    "drmgf_conflict_value",
    "drmgf_convergence_gain",
    "feature_disentanglement_entropy",
    "filter_index",
    "filter_inner_products",
    "gradient_direction_similarity",
    "gradient_magnitude_similarity",
    "magnitude_similarity_matrix",
    "pair_indices",
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


def filter_index(shapes: Sequence[tuple[str, Sequence[int]]]) -> Tensor:
    """The filter each entry of a flattened list of parameters belongs to (DR-MGF's "shared filters").

    ``shapes``: (name, shape) of each parameter, in the order they are flattened. A filter is one
    output channel of a module: row k of every parameter of the module whose first dimension is the
    module's output size (a conv's ``weight[k]`` and ``bias[k]``, a BatchNorm's ``weight[k]`` and
    ``bias[k]``); any other parameter's rows are filters of their own. Returns a LongTensor of
    filter indices, one per entry.
    """
    ids, bases, next_id = [], {}, 0
    for name, shape in shapes:
        module = name.rpartition(".")[0] or name
        rows = int(shape[0]) if len(shape) else 1
        per_row = int(math.prod(shape[1:])) if len(shape) > 1 else 1
        key = (module, rows)
        if key not in bases:
            bases[key] = next_id
            next_id += rows
        ids.append((bases[key] + torch.arange(rows)).repeat_interleave(per_row))
    return torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long)


def filter_inner_products(g_i: Tensor, g_j: Tensor, filters: Tensor | None = None) -> Tensor:
    """⟨g_i,f, g_j,f⟩ for every filter f (``filters``: :func:`filter_index`; None: every entry its own filter)."""
    products = g_i * g_j
    if filters is None:
        return products
    out = torch.zeros(int(filters.max()) + 1 if filters.numel() else 0, dtype=products.dtype, device=products.device)
    return out.index_add_(0, filters.to(products.device), products)


def drmgf_conflict_value(g_i: Tensor, g_j: Tensor, filters: Tensor | None = None, eps: float = 1e-30) -> float:
    """DR-MGF Eq. (2) / (C.13): C = Σ_f max(0, −g_{i,f}ᵀ g_{j,f} / ‖g_i‖²), the conflict of g_j with g_i,
    summed over the N shared filters f (``filters``: each entry's filter, :func:`filter_index`).

    Without ``filters`` every entry counts as a filter of its own (C = Σ_d max(0, −g_{i,d} g_{j,d}) /
    ‖g_i‖², the per-coordinate form, an upper bound of the per-filter value).
    """
    g_i, g_j = g_i.detach().to(torch.float64).reshape(-1), g_j.detach().to(torch.float64).reshape(-1)
    per_filter = filter_inner_products(g_i, g_j, filters)
    return float(torch.clamp(-per_filter / max(float(g_i @ g_i), eps), min=0).sum())


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
