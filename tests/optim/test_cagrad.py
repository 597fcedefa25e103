"""CAGrad (Liu et al. 2021, Eq. 4 / Alg. 1): best worst-case improvement within a ball around g0."""

from __future__ import annotations

import pytest
import torch

from deconflict import optim
from tests.optim._inputs import IDS, J_BASE, MATRICES, random_jacobian


@pytest.mark.parametrize("c", [0.1, 0.4, 0.5, 1.0])
@pytest.mark.parametrize("jac", MATRICES, ids=IDS)
def test_direction_satisfies_the_ball_constraint(jac, c):
    direction = optim.get("cagrad", c=c)(jac)
    g0 = jac.mean(dim=0)
    assert (direction - g0).norm() <= c * g0.norm() * (1 + 1e-9) + 1e-12


@pytest.mark.parametrize("c", [0.2, 0.5, 0.9])
@pytest.mark.parametrize("seed", range(6))
def test_direction_maximises_the_worst_task_improvement(seed, c):
    jac = random_jacobian(4, 6, seed=seed)
    direction = optim.get("cagrad", c=c)(jac)
    g0 = jac.mean(dim=0)
    best = (jac @ direction).min()
    # every other point of the ball does no better (sampled on the sphere, where the optimum lies)
    generator = torch.Generator().manual_seed(seed)
    samples = torch.randn(4000, jac.shape[1], generator=generator, dtype=torch.float64)
    samples = g0 + c * g0.norm() * samples / samples.norm(dim=1, keepdim=True)
    assert (samples @ jac.T).min(dim=1).values.max() <= best + 1e-7 * jac.norm() ** 2


def test_c_zero_is_the_mean_gradient_and_rescales():
    jac = random_jacobian(3, 5, seed=1)
    torch.testing.assert_close(optim.get("cagrad", c=0.0)(jac), jac.mean(0))
    plain = optim.get("cagrad", c=0.4)(jac)
    torch.testing.assert_close(optim.get("cagrad", c=0.4, rescale=1)(jac), plain / (1 + 0.4**2))
    torch.testing.assert_close(optim.get("cagrad", c=0.4, rescale=2)(jac), plain / 1.4)
    torch.testing.assert_close(optim.get("cagrad", c=0.4, reduction="sum")(jac), plain * 3)


def test_without_conflict_it_moves_towards_the_worst_task():
    jac = torch.tensor([[1.0, 0.0], [0.0, 0.2]], dtype=torch.float64)
    direction = optim.get("cagrad", c=0.5)(jac)
    assert (jac @ direction).min() > (jac @ jac.mean(0)).min()


def test_reference_value_on_torchjd_base_jacobian():
    # Hard-coded output for c = 0.5 (equal to TorchJD 0.18.0's CAGrad(c=0.5) to 4 decimals).
    torch.testing.assert_close(
        optim.get("cagrad", c=0.5)(J_BASE),
        torch.tensor([0.1835, 1.2041, 1.2041], dtype=torch.float64),
        atol=1e-4,
        rtol=0,
    )
