"""MGDA (Sener & Koltun 2018, Eq. 3): the min-norm point of the convex hull of the task gradients."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

from deconflict import optim
from tests.optim._inputs import IDS, J_BASE, MATRICES, random_jacobian


def qp_min_norm(jac: torch.Tensor) -> float:
    """Independent reference: the minimum of ‖Jᵀα‖ over the simplex, by a convex solver."""
    alpha = cp.Variable(jac.shape[0], nonneg=True)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(jac.numpy().T @ alpha)), [cp.sum(alpha) == 1])
    problem.solve(solver=cp.CLARABEL)
    return float(np.sqrt(max(problem.value, 0.0)))


@pytest.mark.parametrize("jac", MATRICES, ids=IDS)
def test_direction_is_in_the_convex_hull_and_has_minimum_norm(jac):
    mgda = optim.get("mgda")
    direction = mgda(jac)
    weights = mgda.last_weights
    assert torch.all(weights >= 0) and torch.isclose(weights.sum(), torch.tensor(1.0, dtype=weights.dtype))
    torch.testing.assert_close(direction, weights @ jac)
    # optimality (KKT) of the min-norm point d: ⟨d, g_j − d⟩ ≥ 0 for every vertex g_j
    scale = jac.norm(dim=1).max() ** 2
    assert torch.all(jac @ direction - direction @ direction >= -1e-9 * scale)
    # and the norm equals an independent QP solver's minimum
    assert direction.norm().item() == pytest.approx(qp_min_norm(jac), abs=1e-6 * scale.sqrt().item())


@pytest.mark.parametrize("jac", MATRICES, ids=IDS)
def test_direction_conflicts_with_no_task(jac):
    direction = optim.get("mgda")(jac)
    assert torch.all(jac @ direction >= -1e-9 * jac.norm(dim=1).max() ** 2)


def test_permuting_tasks_does_not_change_the_direction():
    jac = random_jacobian(5, 9, seed=4)
    permutation = torch.randperm(5)
    torch.testing.assert_close(optim.get("mgda")(jac), optim.get("mgda")(jac[permutation]))


def test_single_task_and_zero_jacobian():
    gradient = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(optim.get("mgda")(gradient), gradient[0])
    assert torch.equal(optim.get("mgda")(torch.zeros(3, 4, dtype=torch.float64)), torch.zeros(4, dtype=torch.float64))


def test_pareto_stationary_point_gives_zero():
    jac = torch.tensor([[1.0, 2.0], [-2.0, -4.0]], dtype=torch.float64)  # opposite gradients
    assert optim.get("mgda")(jac).abs().max() < 1e-12


def test_reference_value_on_torchjd_base_jacobian():
    # TorchJD's tests/unit/aggregation/test_values.py: MGDA on [[-4,1,1],[6,1,1]] → [0, 1, 1].
    torch.testing.assert_close(
        optim.get("mgda")(J_BASE), torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(
        optim.get("mgda").weights(J_BASE @ J_BASE.T), torch.tensor([0.6, 0.4], dtype=torch.float64), atol=1e-12, rtol=0
    )


@pytest.mark.parametrize("jac", MATRICES[:12], ids=IDS[:12])
def test_frank_wolfe_variant_approaches_the_exact_solution(jac):
    exact = optim.get("mgda")(jac).norm()
    approximate = optim.get("mgda", solver="frank_wolfe", max_iter=5000, tol=1e-12)(jac).norm()
    assert approximate >= exact - 1e-12  # never below the minimum
    assert approximate.item() == pytest.approx(exact.item(), rel=1e-3, abs=1e-6)
