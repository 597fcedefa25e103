"""Aligned-MTL (Senushkin et al. 2023): aligned gradients with condition number one."""

from __future__ import annotations

import pytest
import torch

from deconflict import optim
from deconflict.optim.aligned_mtl import alignment_matrix
from tests.optim._inputs import J_BASE, random_jacobian


@pytest.mark.parametrize("shape", [(2, 5), (3, 8), (5, 12), (10, 30)])
def test_aligned_gradients_have_condition_number_one(shape):
    jac = random_jacobian(*shape, seed=shape[0])
    gram = jac @ jac.T
    aligned = alignment_matrix(gram, "min") @ jac  # rows: the aligned task gradients B J
    singular = torch.linalg.svdvals(aligned)
    assert (singular.max() / singular.min()).item() == pytest.approx(1.0, abs=1e-8)
    smallest = torch.linalg.eigvalsh(gram).min()
    torch.testing.assert_close(
        aligned @ aligned.T, smallest * torch.eye(shape[0], dtype=torch.float64), rtol=1e-8, atol=1e-8
    )


def test_rank_deficient_and_zero_jacobians():
    jac = random_jacobian(4, 10, 3, rank=2)
    direction = optim.get("aligned_mtl")(jac)
    assert torch.isfinite(direction).all()
    aligned = alignment_matrix(jac @ jac.T) @ jac
    singular = torch.linalg.svdvals(aligned)
    kept = singular[singular > 1e-6 * singular.max()]
    assert len(kept) == 2 and (kept.max() / kept.min()).item() == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(
        optim.get("aligned_mtl")(torch.zeros(3, 4, dtype=torch.float64)), torch.zeros(4, dtype=torch.float64)
    )


def test_scale_modes_and_reduction():
    jac = random_jacobian(3, 7, 1)
    eigenvalues = torch.linalg.eigvalsh(jac @ jac.T)
    for mode, scale in (
        ("min", eigenvalues.min()),
        ("median", eigenvalues.sort().values[1]),
        ("rmse", eigenvalues.mean()),
    ):
        aligned = alignment_matrix(jac @ jac.T, mode) @ jac
        torch.testing.assert_close(aligned.norm(dim=1), scale.sqrt().expand(3))
    torch.testing.assert_close(optim.get("aligned_mtl", reduction="mean")(jac), optim.get("aligned_mtl")(jac) / 3)


def test_reference_values():
    # Official code / LibMTL convention (sum over tasks), and TorchJD's (mean; its test_values.py:
    # [0.2133, 0.9673, 0.9673]).
    torch.testing.assert_close(
        optim.get("aligned_mtl")(J_BASE), torch.tensor([0.4266, 1.9347, 1.9347], dtype=torch.float64), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        optim.get("aligned_mtl", reduction="mean")(J_BASE),
        torch.tensor([0.2133, 0.9673, 0.9673], dtype=torch.float64),
        atol=1e-4,
        rtol=0,
    )
