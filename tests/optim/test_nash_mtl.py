"""Nash-MTL (Navon et al. 2022, Eq. 2 / Claim 3.1): weights solving GᵀGα = 1/α."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deconflict import optim
from deconflict.errors import SolverError, SolverWarning
from deconflict.optim.nash_mtl import solve_bargaining_ccp, solve_bargaining_newton
from tests.optim._inputs import J_BASE, random_jacobian

FULL_RANK = [(2, 3), (2, 10), (3, 7), (5, 20), (8, 30), (40, 60)]


@pytest.mark.parametrize("shape", FULL_RANK, ids=[f"{t}x{d}" for t, d in FULL_RANK])
@pytest.mark.parametrize("seed", range(3))
def test_weights_solve_the_bargaining_equation(shape, seed):
    jac = random_jacobian(*shape, seed=seed)
    nash = optim.get("nash_mtl")
    direction = nash(jac)
    alpha = nash.last_weights
    assert torch.all(alpha > 0)
    gram = jac @ jac.T
    torch.testing.assert_close(gram @ alpha, 1 / alpha, rtol=1e-8, atol=0)
    # equivalently: every task's directional improvement times its weight is 1
    torch.testing.assert_close(alpha * (jac @ direction), torch.ones_like(alpha), rtol=1e-8, atol=0)


def test_direction_is_invariant_to_scaling_the_gradients():
    jac = random_jacobian(3, 8, seed=5)
    torch.testing.assert_close(optim.get("nash_mtl")(jac), optim.get("nash_mtl")(1000.0 * jac))


def test_paper_ccp_variant_agrees_with_the_exact_solution():
    jac = random_jacobian(4, 10, seed=2)
    gram = (jac @ jac.T).numpy()
    exact = solve_bargaining_newton(gram)
    ccp = solve_bargaining_ccp(gram, start=np.ones(4), optim_niter=50)
    np.testing.assert_allclose(ccp, exact, rtol=2e-2)
    direction = optim.get("nash_mtl", solver="ccp", optim_niter=50)(jac)
    torch.testing.assert_close(direction, optim.get("nash_mtl")(jac), rtol=2e-2, atol=1e-3)


def test_no_solution_raises_or_warns_loudly():
    opposite = torch.tensor([[1.0, 2.0, 0.0], [-1.0, -2.0, 0.0]], dtype=torch.float64)
    with pytest.raises(SolverError, match=r"nash_mtl at step 1: .*no positive solution"):
        optim.get("nash_mtl", on_failure="raise")(opposite)
    # warn at the first step: the official code's initial weights α = 1 (there is no previous α)
    with pytest.warns(SolverWarning, match=r"nash_mtl at step 1: .* initial weights α = 1"):
        first = optim.get("nash_mtl")(opposite)
    torch.testing.assert_close(first, opposite.sum(0))
    nash = optim.get("nash_mtl")
    nash(random_jacobian(2, 3, seed=0))
    previous = nash.last_weights.clone()
    with pytest.warns(SolverWarning, match=r"nash_mtl at step 2: .* Reusing the previous step's weights"):
        nash(opposite)
    assert nash.failures == 1
    torch.testing.assert_close(nash.last_weights, previous)


@pytest.mark.parametrize("solver", ["newton", "ccp"])
def test_a_failed_first_step_keeps_the_initial_weights_or_raises(solver):
    """The official code starts from α = 1 and keeps it when its first sub-problem fails."""
    opposite = torch.tensor([[1.0, 2.0, 0.0], [-1.0, -2.0, 0.0]], dtype=torch.float64)
    nash = optim.get("nash_mtl", solver=solver)
    with pytest.warns(SolverWarning, match="nash_mtl at step 1"):
        nash(opposite)
    assert nash.failures == 1 and nash.alpha.tolist() == [1.0, 1.0]
    later = random_jacobian(2, 3, seed=0)  # the next solvable step solves afresh
    torch.testing.assert_close(nash(later), optim.get("nash_mtl", solver=solver)(later), rtol=2e-2, atol=1e-3)
    with pytest.raises(SolverError, match="nash_mtl at step 1"):
        optim.get("nash_mtl", solver=solver, on_failure="raise")(opposite)


def test_loss_weights_are_alpha_before_clipping():
    jac = 10 * random_jacobian(3, 6, seed=3)
    clipped = optim.get("nash_mtl", max_norm=1.0)
    clipped(jac)
    unclipped = optim.get("nash_mtl")
    unclipped(jac)
    torch.testing.assert_close(clipped.loss_weights, unclipped.last_weights)
    assert clipped.last_weights.sum() < clipped.loss_weights.sum()


def test_zero_gradient_task_is_named():
    jac = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    with pytest.raises(SolverError, match=r"tasks \[1\] have zero gradients"):
        optim.get("nash_mtl", on_failure="raise")(jac)


def test_update_frequency_reuses_weights_and_reset_forgets():
    nash = optim.get("nash_mtl", update_weights_every=3)
    jacs = [random_jacobian(3, 6, seed=s) for s in range(4)]
    nash(jacs[0])
    first = nash.last_weights.clone()
    nash(jacs[1])
    nash(jacs[2])
    assert torch.equal(nash.last_weights, first)  # steps 2 and 3 reuse step 1's α
    nash(jacs[3])
    assert not torch.equal(nash.last_weights, first)  # step 4 recomputes
    state = nash.state_dict()
    nash.reset()
    assert nash.alpha is None and nash.calls == 0
    nash.load_state_dict(state)
    assert nash.calls == 4 and nash.alpha is not None


def test_max_norm_clips_the_update_as_the_official_code():
    jac = 10 * random_jacobian(3, 6, seed=3)
    assert optim.get("nash_mtl")(jac).norm() > 1.0
    torch.testing.assert_close(optim.get("nash_mtl", max_norm=1.0)(jac).norm(), torch.tensor(1.0, dtype=torch.float64))


def test_reference_value_on_torchjd_base_jacobian():
    # Hard-coded output (equal to TorchJD 0.18.0's NashMTL(max_norm=0) to 4 decimals).
    torch.testing.assert_close(
        optim.get("nash_mtl")(J_BASE), torch.tensor([0.0766, 0.9985, 0.9985], dtype=torch.float64), atol=1e-4, rtol=0
    )
