"""UW, DWA, GradNorm, FAMO and GO4Align: formulas on hand-computable inputs, state and reset."""

from __future__ import annotations

import math

import pytest
import torch

from deconflict import optim
from deconflict.errors import ShapeError
from deconflict.optim import StepContext


# -- Uncertainty weighting --------------------------------------------------------------------
def test_uw_form_and_its_optimum():
    method = optim.get("uw")
    losses = torch.tensor([2.0, 0.5, 1.0])
    torch.testing.assert_close(method(losses), torch.full((3,), 0.5))  # s = 0: ½ e^0
    assert method.penalty().item() == 0.0
    # d/ds (½ e^{−s} L + ½ s) = 0 at e^{s} = L (σ² = L): the optimum of Eq. (7)
    with torch.no_grad():
        method.log_variance.copy_(torch.log(losses))
    objective = (method(losses) * losses).sum() + method.penalty()
    (gradient,) = torch.autograd.grad(objective, method.log_variance)
    torch.testing.assert_close(gradient, torch.zeros(3), atol=1e-6, rtol=0)
    method.reset()
    assert torch.equal(method.log_variance.detach(), torch.zeros(3))


# -- DWA ---------------------------------------------------------------------------------------
def test_dwa_first_two_epochs_are_equal_then_follow_eq_7():
    method = optim.get("dwa", temperature=2.0)
    epochs = [[1.0, 2.0], [0.5, 1.9], [0.2, 1.8]]
    for epoch, mean_losses in enumerate(epochs):
        weights = method(torch.tensor(mean_losses))
        weights_again = method(torch.tensor(mean_losses))  # the weights are constant within an epoch
        assert torch.equal(weights, weights_again)
        if epoch < 2:
            torch.testing.assert_close(weights, torch.ones(2))
        else:
            r = torch.tensor([0.5 / 1.0, 1.9 / 2.0])
            expected = 2 * torch.exp(r / 2) / torch.exp(r / 2).sum()
            torch.testing.assert_close(weights, expected)
            assert weights.sum().item() == pytest.approx(2.0)
            assert weights[1] > weights[0]  # the task whose loss fell less gets more weight
        method.end_epoch()
    state = method.state_dict()
    clone = optim.get("dwa")
    clone.load_state_dict(state)
    torch.testing.assert_close(clone(torch.ones(2)), method(torch.ones(2)))
    method.reset()
    torch.testing.assert_close(method(torch.ones(2)), torch.ones(2))


# -- GradNorm ----------------------------------------------------------------------------------
def test_gradnorm_needs_task_gradients():
    with pytest.raises(ShapeError, match="gradnorm needs task gradients"):
        optim.get("gradnorm")(torch.ones(2))


def test_gradnorm_gradient_and_renormalisation():
    method = optim.get("gradnorm", alpha=1.0)
    method.setup(2, torch.device("cpu"))
    gradients = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # ‖∇_W L‖ = 5 and 1
    context = StepContext(losses=torch.tensor([1.0, 1.0]), task_gradients=lambda: gradients)
    weights = method(torch.tensor([1.0, 1.0]), context)
    torch.testing.assert_close(weights, torch.ones(2))
    # G = (5, 1), Ḡ = 3, r = (1, 1): target 3 → ∂L_grad/∂w = sign(G − 3)·‖∇L‖ = (+5, −1)
    torch.testing.assert_close(method.task_weights.grad, torch.tensor([5.0, -1.0]))
    with torch.no_grad():
        method.task_weights.sub_(0.1 * method.task_weights.grad)
    method.after_step(context)
    assert method.task_weights.sum().item() == pytest.approx(2.0)
    assert method.task_weights[1] > method.task_weights[0]  # the task with the smaller gradient gains weight
    # second step: the loss ratios enter through r^α
    context2 = StepContext(losses=torch.tensor([0.5, 1.0]), task_gradients=lambda: gradients)
    method(torch.tensor([0.5, 1.0]), context2)
    assert method.initial_losses.tolist() == [1.0, 1.0]


# -- FAMO --------------------------------------------------------------------------------------
def test_famo_weights_are_the_gradient_of_its_log_objective():
    method = optim.get("famo")
    losses = torch.tensor([2.0, 0.5, 1.0], requires_grad=True)
    weights = method(losses)
    assert weights.sum().item() == pytest.approx(1.0)
    z = torch.full((3,), 1 / 3, dtype=torch.float64)
    c = 1 / (z / losses.detach().double()).sum()
    objective = (c * z * torch.log(losses.double())).sum()  # c Σ z_i log L_i (b = 0)
    (expected,) = torch.autograd.grad(objective, losses)
    torch.testing.assert_close(weights, expected.float(), rtol=1e-6, atol=1e-7)


def test_famo_update_moves_weight_to_the_task_that_improved_less():
    method = optim.get("famo", lr=0.1, gamma=0.0)
    before = torch.tensor([1.0, 1.0])
    context = StepContext(losses=before, losses_after_step=lambda: torch.tensor([0.5, 0.99]))
    method(before, context)
    method.after_step(context)
    z = method.task_weights
    assert z[1] > z[0]  # task 0 improved more, so task 1 gains weight
    state = method.state_dict()
    clone = optim.get("famo", lr=0.1, gamma=0.0)
    clone.load_state_dict(state)
    torch.testing.assert_close(clone.task_weights, z)
    with pytest.raises(ShapeError, match="losses after step"):
        method.after_step(StepContext(losses=before))
    method.reset()
    assert method.task_weights is None


# -- GO4Align ----------------------------------------------------------------------------------
def test_go4align_indicators_and_groups():
    losses = torch.tensor([1.8, 0.6, 0.3], dtype=torch.float64)
    # first step: p ≈ uniform, s = Σℓ/ℓ = (1.5, 4.5, 9): γ = s p ≈ (0.5, 1.5, 3.0)
    one = optim.get("go4align", num_groups=1, step_size=0.0)(losses)
    torch.testing.assert_close(one, torch.full((3,), 5 / 3, dtype=torch.float64))
    three = optim.get("go4align", num_groups=3, step_size=0.0, seed=0)(losses)
    torch.testing.assert_close(three, torch.tensor([0.5, 1.5, 3.0], dtype=torch.float64))
    two = optim.get("go4align", num_groups=2, step_size=0.0, seed=0)(losses)
    torch.testing.assert_close(two, torch.tensor([1.0, 1.0, 3.0], dtype=torch.float64))


def test_go4align_risk_history_is_a_softmax_of_cumulative_losses():
    method = optim.get("go4align", num_groups=1, step_size=0.1)
    history = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.5])]
    for losses in history:
        method(losses)
    cumulative = torch.stack(history).double().sum(0)
    torch.testing.assert_close(method.risk, torch.softmax(-0.1 * cumulative, dim=0))
    with pytest.raises(Exception, match="needs positive losses"):
        method(torch.tensor([1.0, 0.0]))


def test_reference_values_of_the_loss_weightings():
    """Hard-coded outputs on fixed losses (seeded where random)."""
    losses = torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(optim.get("equal")(losses), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(
        optim.get("fixed", weights=[1.0, 10.0, 2.0])(losses), torch.tensor([1.0, 10.0, 2.0], dtype=torch.float64)
    )
    torch.testing.assert_close(optim.get("uw")(losses), torch.full((3,), 0.5, dtype=torch.float64))
    torch.testing.assert_close(optim.get("imtl_l")(losses), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(optim.get("famo")(losses), torch.tensor([1 / 7, 4 / 7, 2 / 7], dtype=torch.float64))
    torch.testing.assert_close(optim.get("dwa")(losses), torch.ones(3, dtype=torch.float64))
    # softmax of torch.randn(3) from a generator seeded with 0 (CPU, float64)
    torch.testing.assert_close(
        optim.get("rlw", seed=0)(losses),
        torch.tensor([0.844634, 0.134893, 0.020473], dtype=torch.float64),
        atol=1e-6,
        rtol=0,
    )
    # γ = (Σℓ/ℓ)·p with p = softmax(−η ℓ) after one step; K = 1: every task gets mean γ ≈ (1.75 + 7 + 3.5)/9
    torch.testing.assert_close(
        optim.get("go4align", num_groups=1)(losses), torch.full((3,), 1.3611532, dtype=torch.float64), atol=1e-6, rtol=0
    )
    assert math.isclose(
        float(optim.get("go4align", num_groups=1, step_size=0.0)(losses)[0]), (3.5 / 2 + 3.5 / 0.5 + 3.5) / 9
    )


def test_gradnorm_state_and_reset():
    method = optim.get("gradnorm")
    method.setup(2, torch.device("cpu"))
    context = StepContext(losses=torch.ones(2), task_gradients=lambda: torch.tensor([[1.0, 0.0], [0.0, 3.0]]))
    method(torch.tensor([2.0, 1.0]), context)
    with torch.no_grad():
        method.task_weights.sub_(0.1 * method.task_weights.grad)
    method.after_step(context)
    state = method.state_dict()
    clone = optim.get("gradnorm")
    clone.load_state_dict(state)
    assert torch.equal(clone.task_weights.detach(), method.task_weights.detach())
    assert torch.equal(clone.initial_losses, torch.tensor([2.0, 1.0], dtype=torch.float64))
    method.reset()
    assert torch.equal(method.task_weights.detach(), torch.ones(2)) and method.initial_losses is None
