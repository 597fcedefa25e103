"""PCGrad (Yu et al. 2020, Alg. 1): project each gradient off the ones it conflicts with."""

from __future__ import annotations

import pytest
import torch

from deconflict import optim
from tests.optim._inputs import J_BASE, random_jacobian


def literal_pcgrad(jac: torch.Tensor, orders: list[list[int]]) -> torch.Tensor:
    """Algorithm 1 written directly on the D-dimensional vectors (independent of the Gramian code)."""
    projected = []
    for i, order in enumerate(orders):
        g = jac[i].clone()
        for j in order:
            inner = g @ jac[j]
            if inner < 0:
                g = g - inner / (jac[j] @ jac[j]) * jac[j]
        projected.append(g)
    return torch.stack(projected).sum(dim=0)


@pytest.mark.parametrize("seed", range(20))
def test_two_tasks_update_conflicts_with_neither_gradient(seed):
    jac = random_jacobian(2, 6, seed=seed)
    direction = optim.get("pcgrad")(jac)
    assert torch.all(jac @ direction >= -1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_two_tasks_projected_gradients_do_not_conflict(seed):
    jac = random_jacobian(2, 6, seed=seed)
    projected = optim.get("pcgrad").projections(jac @ jac.T) @ jac
    assert projected[0] @ jac[1] >= -1e-12 and projected[1] @ jac[0] >= -1e-12
    if jac[0] @ jac[1] < 0:  # a conflicting pair ends up exactly orthogonal
        assert abs(projected[0] @ jac[1]) < 1e-12 and abs(projected[1] @ jac[0]) < 1e-12


def test_without_conflict_it_is_the_sum():
    jac = torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.1, 0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(optim.get("pcgrad")(jac), jac.sum(0))
    torch.testing.assert_close(optim.get("pcgrad", reduction="mean")(jac), jac.mean(0))


@pytest.mark.parametrize("n_tasks", [3, 5, 8])
def test_matches_the_literal_algorithm_in_index_order(n_tasks):
    jac = random_jacobian(n_tasks, 12, seed=n_tasks)
    orders = [[j for j in range(n_tasks) if j != i] for i in range(n_tasks)]
    torch.testing.assert_close(optim.get("pcgrad", shuffle=False)(jac), literal_pcgrad(jac, orders))


def test_random_order_is_seeded_and_reset_restores_the_first_step():
    jac = random_jacobian(6, 10, seed=1)
    first, second = optim.get("pcgrad", seed=3), optim.get("pcgrad", seed=3)
    steps_a = [first(jac) for _ in range(4)]
    steps_b = [second(jac) for _ in range(4)]
    for a, b in zip(steps_a, steps_b):
        assert torch.equal(a, b)
    assert not all(torch.equal(steps_a[0], s) for s in steps_a[1:])  # the order really is random
    first.reset()
    assert torch.equal(first(jac), steps_a[0])


def test_state_dict_resumes_the_random_sequence():
    jac = random_jacobian(6, 10, seed=2)
    method = optim.get("pcgrad", seed=5)
    method(jac)
    state = method.state_dict()
    expected = method(jac)
    clone = optim.get("pcgrad", seed=5)
    clone.load_state_dict(state)
    assert torch.equal(clone(jac), expected)


def test_reference_value_on_torchjd_base_jacobian():
    # TorchJD's tests/unit/aggregation/test_values.py: PCGrad → [0.5848, 3.8012, 3.8012].
    torch.testing.assert_close(
        optim.get("pcgrad")(J_BASE), torch.tensor([0.5848, 3.8012, 3.8012], dtype=torch.float64), atol=1e-4, rtol=0
    )
    # exact: g1' = g1 + 22/38 g2, g2' = g2 + 22/18 g1
    torch.testing.assert_close(
        optim.get("pcgrad").weights(J_BASE @ J_BASE.T), torch.tensor([1 + 22 / 18, 1 + 22 / 38], dtype=torch.float64)
    )
