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
