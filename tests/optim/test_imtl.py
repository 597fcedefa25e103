"""IMTL (Liu et al. 2021): IMTL-G's equal projections, IMTL-L's scales, and the two together."""

from __future__ import annotations

import pytest
import torch

from deconflict import optim
from deconflict.train import TrainConfig, Trainer, seed_everything
from tests.architectures import MLPMultiTask, regression_losses
from tests.optim._inputs import J_BASE, random_jacobian

FULL_RANK = [(2, 4), (3, 7), (5, 11), (8, 20)]


def paper_closed_form(jac: torch.Tensor) -> torch.Tensor:
    """Sec. 3.2 as printed: D rows g_1 − g_t, U rows u_1 − u_t, α_{2:T} = g_1 Uᵀ (D Uᵀ)⁻¹."""
    units = jac / jac.norm(dim=1, keepdim=True)
    d = jac[0] - jac[1:]
    u = units[0] - units[1:]
    rest = jac[0] @ u.T @ torch.linalg.inv(d @ u.T)
    return torch.cat([1 - rest.sum().reshape(1), rest])


@pytest.mark.parametrize("shape", FULL_RANK, ids=[f"{t}x{d}" for t, d in FULL_RANK])
@pytest.mark.parametrize("seed", range(3))
def test_imtl_g_projections_are_equal_and_weights_sum_to_one(shape, seed):
    jac = random_jacobian(*shape, seed)
    method = optim.get("imtl_g")
    direction = method(jac)
    projections = (jac / jac.norm(dim=1, keepdim=True)) @ direction
    torch.testing.assert_close(projections, projections[0].expand_as(projections), rtol=1e-9, atol=1e-12)
    assert method.last_weights.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(method.last_weights, paper_closed_form(jac), rtol=1e-8, atol=1e-10)


def test_imtl_g_degenerate_cases():
    zero_row = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(optim.get("imtl_g")(zero_row), torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64))
    opposite = torch.tensor([[1.0, 2.0], [-1.0, -2.0]], dtype=torch.float64)
    assert torch.equal(optim.get("imtl_g")(opposite), torch.zeros(2, dtype=torch.float64))
    assert torch.equal(optim.get("imtl_g")(torch.zeros(2, 3, dtype=torch.float64)), torch.zeros(3, dtype=torch.float64))


def test_imtl_g_is_permutation_invariant():
    jac = random_jacobian(4, 9, 2)
    torch.testing.assert_close(optim.get("imtl_g")(jac), optim.get("imtl_g")(jac[torch.tensor([2, 0, 3, 1])]))


def test_imtl_g_reference_value():
    # TorchJD tests/unit/aggregation/test_values.py: IMTLG on J_base → [0.0767, 1, 1].
    torch.testing.assert_close(
        optim.get("imtl_g")(J_BASE), torch.tensor([0.0767, 1.0, 1.0], dtype=torch.float64), atol=1e-4, rtol=0
    )


def test_imtl_l_weights_penalty_and_optimum():
    method = optim.get("imtl_l")
    losses = torch.tensor([2.0, 0.5])
    torch.testing.assert_close(method(losses), torch.ones(2))  # s = 0
    assert method.penalty().item() == 0.0
    # d/ds (e^s L − s) = e^s L − 1 = 0 at s = −log L: the scaled losses all equal 1
    with torch.no_grad():
        method.log_scale.copy_(-torch.log(losses))
    objective = (method(losses) * losses).sum() + method.penalty()
    (gradient,) = torch.autograd.grad(objective, method.log_scale)
    torch.testing.assert_close(gradient, torch.zeros(2), atol=1e-6, rtol=0)


def test_imtl_trains_scales_and_shared_part_together():
    seed_everything(0)
    model = MLPMultiTask(3)
    imtl = optim.get("imtl")
    trainer = Trainer(
        model,
        regression_losses,
        torch.optim.SGD(model.parameters(), lr=0.05),
        imtl,
        config=TrainConfig(epochs=2, progress=False),
    )
    assert trainer.weighting is imtl.weighting and trainer.aggregator is imtl.aggregator
    from tests.test_train import synthetic_batches

    trainer.fit(synthetic_batches())
    assert not torch.equal(imtl.weighting.log_scale.detach(), torch.zeros(3))  # s learned
    assert imtl.aggregator.last_weights.sum().item() == pytest.approx(1.0)
