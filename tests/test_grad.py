"""The gradient engine: batched and looped Jacobians agree to float64 round-off; write-back is right.

"Exact" here means equal up to a few units in the last place: the batched backward multiplies
through batched matmuls, whose summation order may differ from the looped one (seen: 1 ulp on
Linear layers, bit-identical on convolutions). ROUND_OFF is far below any algorithmic difference.
"""

from __future__ import annotations

import pytest
import torch

from deconflict.errors import NonFiniteError, ShapeError
from deconflict.grad import JacobianEngine, MultiTaskBackward, gramian, jacobian, split_like, write_grad
from tests.architectures import ARCHITECTURES, regression_losses

TASK_COUNTS = [1, 2, 3, 40]
ROUND_OFF = {"rtol": 1e-12, "atol": 1e-15}
# Summing 40 rows vs. backpropagating the sum rounds differently; a conv bias before BatchNorm has a
# true gradient of 0 and only round-off (~1e-15) in either, so absolute agreement is what is checked.
SUM_ROUND_OFF = {"rtol": 1e-12, "atol": 1e-13}


def build(name: str, n_tasks: int, batch: int = 4):
    cls, make_inputs = ARCHITECTURES[name]
    model = cls(n_tasks).double()
    inputs = make_inputs(batch).double()
    targets = torch.randn(batch, n_tasks, dtype=torch.float64)
    representation = model.encode(inputs)
    losses = regression_losses(model.decode(representation), targets)
    return model, losses, representation


def reference_jacobian(losses, params):
    """Independent reference: one full backward per task through .grad (no autograd.grad)."""
    rows = []
    for index in range(losses.shape[0]):
        for p in params:
            p.grad = None
        losses[index].backward(retain_graph=True)
        rows.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]))
    for p in params:
        p.grad = None
    return torch.stack(rows)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
@pytest.mark.parametrize("n_tasks", TASK_COUNTS)
def test_batched_and_looped_jacobians_agree_exactly(architecture, n_tasks):
    model, losses, _ = build(architecture, n_tasks)
    params = model.shared_parameters()
    batched = jacobian(losses, params, mode="batched")
    looped = jacobian(losses, params, mode="loop")
    assert batched.shape == (n_tasks, sum(p.numel() for p in params))
    assert batched.dtype == torch.float64
    torch.testing.assert_close(batched, looped, **ROUND_OFF)
    torch.testing.assert_close(looped, reference_jacobian(losses, params), **ROUND_OFF)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
@pytest.mark.parametrize("n_tasks", TASK_COUNTS)
def test_representation_jacobians_agree_exactly(architecture, n_tasks):
    model, losses, representation = build(architecture, n_tasks)
    batched = jacobian(losses, representation, mode="batched")
    looped = jacobian(losses, representation, mode="loop")
    assert batched.shape == (n_tasks, representation.numel())
    torch.testing.assert_close(batched, looped, **ROUND_OFF)


def test_unused_parameters_get_zero_rows():
    model, losses, _ = build("partly_unused", 3)
    jac = jacobian(losses, [model.only_task0, model.unused])
    width = model.only_task0.numel()
    assert jac[0, :width].abs().sum() > 0  # task 0 uses it
    assert torch.equal(jac[1:, :width], torch.zeros_like(jac[1:, :width]))
    assert torch.equal(jac[:, width:], torch.zeros_like(jac[:, width:]))  # nobody uses it


def test_auto_mode_remembers_its_choice_and_matches_both_backends():
    model, losses, _ = build("conv_bn", 3)
    engine = JacobianEngine("auto")
    assert engine.resolved is None
    result = engine(losses, model.shared_parameters())
    assert engine.resolved == "loop"  # on the CPU, by rule: never by timing (the backends round differently)
    torch.testing.assert_close(result, jacobian(losses, model.shared_parameters(), mode="batched"), **ROUND_OFF)
    batched = JacobianEngine("auto").batched_if_possible(losses, list(losses), model.shared_parameters())
    torch.testing.assert_close(batched, result, **ROUND_OFF)


def test_auto_mode_falls_back_to_the_loop_when_vmap_cannot_batch():
    class NoVmap(torch.autograd.Function):  # a custom op whose backward vmap cannot batch
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return torch.from_numpy(grad.numpy() * 2.0)  # .numpy() is impossible under vmap

    weight = torch.randn(3, requires_grad=True, dtype=torch.float64)
    losses = torch.stack([NoVmap.apply(weight).sum(), (NoVmap.apply(weight) ** 2).sum()])
    engine = JacobianEngine("auto")
    result = engine.batched_if_possible(losses, list(losses), [weight])  # what auto does on a GPU
    assert engine.resolved == "loop"
    expected = torch.stack([torch.full((3,), 2.0, dtype=torch.float64), 8 * weight.detach()])
    torch.testing.assert_close(result, expected)


def test_gramian_is_jjt():
    jac = torch.randn(3, 7, dtype=torch.float64)
    torch.testing.assert_close(gramian(jac), jac @ jac.T)


def test_write_grad_and_split_like_round_trip():
    params = [torch.zeros(2, 3, requires_grad=True), torch.zeros(4, requires_grad=True)]
    vector = torch.arange(10.0)
    write_grad(params, vector)
    assert torch.equal(params[0].grad, vector[:6].view(2, 3))
    assert torch.equal(params[1].grad, vector[6:])
    write_grad(params, vector, accumulate=True)
    assert torch.equal(params[1].grad, 2 * vector[6:])
    with pytest.raises(ShapeError, match="10 entries"):
        split_like(torch.zeros(9), params)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
@pytest.mark.parametrize("n_tasks", TASK_COUNTS)
@pytest.mark.parametrize("mode", ["batched", "loop"])
def test_aggregating_with_the_sum_reproduces_plain_backward(architecture, n_tasks, mode):
    """With d = Σ_t g_t, every parameter's .grad equals that of loss.sum().backward()."""
    torch.manual_seed(11)
    model, losses, _ = build(architecture, n_tasks)
    MultiTaskBackward(mode)(losses, model.shared_parameters(), model.task_parameters(), lambda jac: jac.sum(dim=0))
    torch.manual_seed(11)
    twin, twin_losses, _ = build(architecture, n_tasks)
    twin_losses.sum().backward()
    for (name, mine), (_, theirs) in zip(model.named_parameters(), twin.named_parameters()):
        expected = theirs.grad if theirs.grad is not None else torch.zeros_like(theirs)
        torch.testing.assert_close(mine.grad, expected, **SUM_ROUND_OFF, msg=lambda text: f"{name}: {text}")


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
@pytest.mark.parametrize("n_tasks", [1, 2, 3, 40])
def test_write_back_batched_equals_loop_and_heads_get_their_own_gradient(architecture, n_tasks):
    grads = {}
    for mode in ("batched", "loop"):
        torch.manual_seed(7)
        model, losses, _ = build(architecture, n_tasks)
        direction = torch.zeros(sum(p.numel() for p in model.shared_parameters()), dtype=torch.float64)

        def aggregate(jac):
            direction.copy_(jac.mean(dim=0) * 3.0)
            return direction

        MultiTaskBackward(mode)(losses, model.shared_parameters(), model.task_parameters(), aggregate)
        grads[mode] = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        flat = torch.cat([p.grad.reshape(-1) for p in model.shared_parameters()])
        assert torch.equal(flat, direction)
        # each head received its own task's gradient, not the aggregate
        torch.manual_seed(7)
        twin, twin_losses, _ = build(architecture, n_tasks)
        for task, head_params in enumerate(twin.task_parameters()):
            own = torch.autograd.grad(twin_losses[task], head_params, retain_graph=True)
            for mine, expected in zip(model.task_parameters()[task], own):
                torch.testing.assert_close(mine.grad, expected, **ROUND_OFF)
    assert grads["batched"].keys() == grads["loop"].keys()
    for name in grads["batched"]:
        torch.testing.assert_close(
            grads["batched"][name], grads["loop"][name], **ROUND_OFF, msg=lambda text: f"{name}: {text}"
        )


def test_feature_level_backward_is_the_chain_rule():
    """At feature level the encoder receives J_θ(z)ᵀ d_z, with d_z the aggregate over ∂L_t/∂z."""
    torch.manual_seed(3)
    model, losses, representation = build("mlp", 3)
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    result = MultiTaskBackward()(
        losses,
        model.shared_parameters(),
        model.task_parameters(),
        lambda jac: weights @ jac,
        representation=representation,
    )
    assert result.level == "feature"
    assert result.jacobian.shape == (3, representation.numel())
    encoder = [p.grad.clone() for p in model.shared_parameters()]
    torch.manual_seed(3)
    twin, twin_losses, _ = build("mlp", 3)
    expected = torch.autograd.grad((weights * twin_losses).sum(), twin.shared_parameters())
    for got, want in zip(encoder, expected):
        torch.testing.assert_close(got, want, **ROUND_OFF)


def test_non_finite_losses_and_gradients_are_named():
    weight = torch.tensor([1.0, 2.0], requires_grad=True)
    losses = torch.stack([weight.sum(), torch.sqrt(weight - 5).sum()])  # task b's loss is NaN
    with pytest.raises(NonFiniteError, match="loss of b is NaN"):
        MultiTaskBackward()(losses, [weight], None, lambda jac: jac.sum(0), task_names=["a", "b"])
    losses = torch.stack([weight.sum(), torch.sqrt(weight - weight.detach()).sum()])  # finite loss, infinite gradient
    with pytest.raises(NonFiniteError, match="contains NaN or Inf although the losses are finite"):
        MultiTaskBackward("loop")(losses, [weight], None, lambda jac: jac.sum(0), task_names=["a", "b"])


def test_bad_inputs_have_clear_errors():
    weight = torch.ones(2, requires_grad=True)
    with pytest.raises(ShapeError, match="1-D tensor of T task losses"):
        jacobian(torch.ones(2, 2, requires_grad=True), [weight])
    with pytest.raises(ShapeError, match="does not require grad"):
        jacobian(weight.sum().reshape(1), [torch.ones(2)])
    with pytest.raises(ShapeError, match="empty"):
        jacobian([], [weight])
    with pytest.raises(ValueError, match="unknown Jacobian mode"):
        JacobianEngine("fast")


def test_the_one_off_wrapper_passes_downstream_shared_parameters():
    """multitask_backward forwards every option: parameters applied after the representation get the
    sum of the task gradients, as in joint backprop (they were left at zero before)."""
    from deconflict.grad import multitask_backward

    torch.manual_seed(0)
    x = torch.randn(4, 3, dtype=torch.float64)
    weight = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    gate = torch.randn(3, dtype=torch.float64, requires_grad=True)  # shared, applied after the representation
    heads = torch.randn(2, 3, dtype=torch.float64)

    def losses():
        z = x @ weight
        return z, [((z * gate) @ heads[t]).pow(2).mean() for t in range(2)]

    z, rows = losses()
    torch.stack(rows).sum().backward()
    expected = weight.grad.clone(), gate.grad.clone()
    weight.grad = gate.grad = None
    z, rows = losses()
    multitask_backward(
        rows, [weight, gate], None, lambda jac: jac.sum(0), mode="loop", representation=z, downstream_shared=[gate]
    )
    torch.testing.assert_close(weight.grad, expected[0])
    torch.testing.assert_close(gate.grad, expected[1])
    assert gate.grad.abs().sum() > 0
