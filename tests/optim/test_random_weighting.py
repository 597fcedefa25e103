"""RLW and RGW (Lin et al. 2022): random weights on the simplex, redrawn every step."""

from __future__ import annotations

import pytest
import torch

from deconflict import optim
from deconflict.optim.random_weighting import DISTRIBUTIONS
from tests.optim._inputs import random_jacobian


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_rlw_weights_for_every_distribution(distribution):
    method = optim.get("rlw", distribution=distribution, seed=0)
    draws = torch.stack([method(torch.ones(4)) for _ in range(2000)])
    assert torch.all(draws >= 0)
    if distribution in ("normal", "uniform", "dirichlet"):
        torch.testing.assert_close(draws.sum(1), torch.ones(2000))
    if distribution == "constrained_bernoulli":
        assert torch.all(draws.sum(1) == 1) and torch.all((draws == 0) | (draws == 1))
    if distribution == "bernoulli":
        assert torch.all(draws.sum(1) >= 1)
    assert len({tuple(d.tolist()) for d in draws}) > 1  # really random
    # uniform-ish on average: every task gets the same expected weight
    assert draws.mean(0).std() < 0.1 * draws.mean()


def test_rlw_is_seeded_and_scalable():
    a, b = optim.get("rlw", seed=3), optim.get("rlw", seed=3)
    assert torch.equal(a(torch.ones(5)), b(torch.ones(5)))
    assert optim.get("rlw", scale="sum", seed=1)(torch.ones(5)).sum().item() == pytest.approx(5.0)


def test_rgw_direction_is_a_random_convex_combination():
    jac = random_jacobian(3, 6, 2)
    method = optim.get("rgw", seed=4)
    direction = method(jac)
    weights = method.last_weights
    assert torch.all(weights > 0) and weights.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(direction, weights @ jac)
    assert not torch.equal(method(jac), direction)
