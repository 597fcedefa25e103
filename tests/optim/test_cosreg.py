"""CosReg (Suteu & Guo 2019, robust-MTL Eq. 3): a second-order penalty on squared task-gradient cosines."""

from __future__ import annotations

import pytest
import torch

from deconflict import optim
from deconflict.grad import jacobian
from deconflict.optim.cosreg import CosReg


def test_penalty_on_hand_computable_gradients():
    orthogonal = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    identical = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    opposite = torch.tensor([[1.0, 0.0], [-3.0, 0.0]])
    method = optim.get("cosreg", weight=2.0)
    assert method(orthogonal).item() == pytest.approx(0.0)
    assert method(identical).item() == pytest.approx(2.0)
    assert method(opposite).item() == pytest.approx(2.0)
    three = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # cos² = 0, ½, ½ → mean ⅓
    assert CosReg.mean_squared_cosine(three).item() == pytest.approx(1 / 3)


def _penalty_of(weight: torch.Tensor, inputs: torch.Tensor, method: CosReg) -> torch.Tensor:
    hidden = torch.tanh(inputs @ weight)
    losses = torch.stack([hidden[:, 0].pow(2).mean(), (hidden[:, 1] - hidden[:, 0]).pow(2).mean()])
    return method(jacobian(losses, [weight], create_graph=True))


def test_penalty_gradient_is_second_order_and_matches_finite_differences():
    torch.manual_seed(0)
    inputs = torch.randn(8, 3, dtype=torch.float64)
    weight = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    method = optim.get("cosreg", weight=1.0)
    (gradient,) = torch.autograd.grad(_penalty_of(weight, inputs, method), weight)
    assert gradient.abs().sum() > 0
    numeric = torch.zeros_like(weight)
    for index in range(weight.numel()):
        step = torch.zeros_like(weight).view(-1)
        step[index] = 1e-6
        step = step.view_as(weight)
        up = _penalty_of((weight + step).detach().requires_grad_(), inputs, method)
        down = _penalty_of((weight - step).detach().requires_grad_(), inputs, method)
        numeric.view(-1)[index] = (up - down).item() / 2e-6
    torch.testing.assert_close(gradient, numeric, rtol=1e-5, atol=1e-8)


def test_detach_reproduces_the_no_op_of_the_pylon_lineage():
    torch.manual_seed(0)
    inputs = torch.randn(8, 3, dtype=torch.float64)
    weight = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    penalty = _penalty_of(weight, inputs, optim.get("cosreg", detach=True))
    assert not penalty.requires_grad
