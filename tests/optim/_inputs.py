"""Jacobians the optimizer tests run on (float64, seeded)."""

from __future__ import annotations

import torch

# TorchJD's reference Jacobian (tests/unit/aggregation/test_values.py): two conflicting tasks.
J_BASE = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=torch.float64)

SHAPES = [(1, 1), (2, 3), (2, 10), (3, 7), (5, 20), (9, 11), (12, 8), (40, 50)]


def random_jacobian(n_tasks: int, dim: int, seed: int = 0, rank: int | None = None) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if rank is None:
        return torch.randn(n_tasks, dim, generator=generator, dtype=torch.float64)
    left = torch.randn(n_tasks, rank, generator=generator, dtype=torch.float64)
    right = torch.randn(rank, dim, generator=generator, dtype=torch.float64)
    return left @ right


def jacobians(seeds=(0, 1, 2)):
    """(id, J) pairs over shapes and seeds, full rank and rank-deficient."""
    cases = []
    for n_tasks, dim in SHAPES:
        for seed in seeds:
            cases.append((f"{n_tasks}x{dim}-s{seed}", random_jacobian(n_tasks, dim, seed)))
        if n_tasks > 2:
            cases.append((f"{n_tasks}x{dim}-rank2", random_jacobian(n_tasks, dim, 7, rank=2)))
    return cases


JACOBIANS = jacobians()
IDS = [case[0] for case in JACOBIANS]
MATRICES = [case[1] for case in JACOBIANS]


# -- Jacobians at and near Pareto-stationary points --------------------------------------------------
# The kinds of matrix TorchJD's property suite samples (its tests/unit/aggregation/_matrix_samplers.py),
# written here from their definitions. A T×D matrix J is *strongly stationary* when vᵀJ = 0 for some
# v > 0 (0 is in the relative interior of the convex hull of the rows), *weakly stationary* when vᵀJ = 0
# for some v ≥ 0, v ≠ 0 (0 is in the hull), *strictly weakly* when weakly but not strongly stationary.


def _orthonormal_columns(basis: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random orthonormal columns orthogonal to the orthonormal columns of ``basis``."""
    dim = basis.shape[0]
    draw = torch.randn(dim, count, generator=generator, dtype=torch.float64)
    draw = draw - basis @ (basis.T @ draw)
    q, r = torch.linalg.qr(draw)
    return q * torch.sign(torch.diagonal(r))  # a unique, sign-fixed basis


def _with_left_basis(left: torch.Tensor, dim: int, rank: int, generator: torch.Generator) -> torch.Tensor:
    """U S Vᵀ with the given left singular vectors U (T×rank), random singular values and V."""
    right = _orthonormal_columns(torch.zeros(dim, 0, dtype=torch.float64), rank, generator)
    singular = torch.rand(rank, generator=generator, dtype=torch.float64) * 2 + 0.1
    return left @ torch.diag(singular) @ right.T


def strongly_stationary(n_tasks: int, dim: int, rank: int, seed: int = 0) -> torch.Tensor:
    """vᵀJ = 0 for a random v > 0: rows orthogonal (in task space) to a positive vector."""
    assert 0 < rank <= min(n_tasks - 1, dim)
    generator = torch.Generator().manual_seed(seed)
    v = torch.rand(n_tasks, generator=generator, dtype=torch.float64) + 0.05
    v = (v / v.norm()).unsqueeze(1)
    return _with_left_basis(_orthonormal_columns(v, rank, generator), dim, rank, generator)


def strictly_weakly_stationary(n_tasks: int, dim: int, rank: int, seed: int = 0) -> torch.Tensor:
    """vᵀJ = 0 for a v ≥ 0 with zeros, and a left singular vector v' ≥ 0 of J with disjoint support
    (so no w > 0 has wᵀJ = 0: 0 = wᵀ J Jᵀ v' = s wᵀv' > 0 would be a contradiction)."""
    assert n_tasks > 1 and 0 < rank <= min(n_tasks - 1, dim)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_tasks, generator=generator)
    split = int(torch.randint(1, n_tasks, (1,), generator=generator))
    magnitudes = torch.rand(n_tasks, generator=generator, dtype=torch.float64) + 0.05
    v, v_prime = torch.zeros(n_tasks, dtype=torch.float64), torch.zeros(n_tasks, dtype=torch.float64)
    v[order[:split]] = magnitudes[order[:split]]
    v_prime[order[split:]] = magnitudes[order[split:]]
    pair = torch.stack([v / v.norm(), v_prime / v_prime.norm()], dim=1)
    left = torch.cat([pair[:, 1:], _orthonormal_columns(pair, rank - 1, generator)], dim=1)
    return _with_left_basis(left, dim, rank, generator)


def non_stationary(n_tasks: int, dim: int, rank: int, seed: int = 0) -> torch.Tensor:
    """A J with a positive left singular vector u (so vᵀJ ≠ 0 for every v ≥ 0, v ≠ 0)."""
    assert 0 < rank <= min(n_tasks, dim)
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(n_tasks, generator=generator, dtype=torch.float64) + 0.05
    u = (u / u.norm()).unsqueeze(1)
    left = torch.cat([u, _orthonormal_columns(u, rank - 1, generator)], dim=1)
    return _with_left_basis(left, dim, rank, generator)


def stationary_cases(seeds=(0, 1, 2)):
    """(id, J) over kinds, shapes, ranks (full and deficient) and seeds."""
    cases = []
    for n_tasks, dim in [(2, 5), (3, 3), (3, 8), (4, 9), (6, 6), (6, 20)]:
        for rank in sorted({1, n_tasks - 1, min(n_tasks - 1, dim)}):
            for seed in seeds:
                cases.append((f"strong-{n_tasks}x{dim}r{rank}-s{seed}", strongly_stationary(n_tasks, dim, rank, seed)))
                cases.append(
                    (f"weak-{n_tasks}x{dim}r{rank}-s{seed}", strictly_weakly_stationary(n_tasks, dim, rank, seed))
                )
        for rank in sorted({1, min(n_tasks, dim) - 1, min(n_tasks, dim)} - {0}):
            for seed in seeds:
                cases.append((f"nonstat-{n_tasks}x{dim}r{rank}-s{seed}", non_stationary(n_tasks, dim, rank, seed)))
    return cases


STATIONARY_CASES = stationary_cases()
STATIONARY_IDS = [case[0] for case in STATIONARY_CASES]
STATIONARY_MATRICES = [case[1] for case in STATIONARY_CASES]
