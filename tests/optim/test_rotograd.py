"""RotoGrad (Javaloy & Valera 2022): orthogonal per-task rotations and gradient-magnitude homogenization."""

from __future__ import annotations

import pytest
import torch

from deconflict import optim
from deconflict.errors import ConfigError, ShapeError
from deconflict.optim import StepContext
from deconflict.optim.rotograd import rotate
from deconflict.train import Callback, TrainConfig, Trainer, seed_everything
from tests.architectures import MLPMultiTask, regression_losses


def context_for(representation):
    return StepContext(losses=torch.ones(3), level="feature", representation=representation, learning_rate=1e-3)


def test_rotations_are_orthogonal_and_start_random_or_at_identity():
    method = optim.get("rotograd", seed=1)
    method.setup(3, torch.device("cpu"), channels=5)
    rotations = method.rotations().detach()
    torch.testing.assert_close(rotations @ rotations.transpose(1, 2), torch.eye(5).expand(3, 5, 5), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rotations), torch.ones(3), atol=1e-5, rtol=0)
    assert not torch.allclose(rotations[0], torch.eye(5))
    identity = optim.get("rotograd", init="identity")
    z = torch.randn(4, 5)
    views = identity.task_views(z, 3)
    assert all(torch.allclose(view, z) for view in views)


def test_rotate_acts_on_channels_at_every_position_and_only_the_leading_block():
    rotation = torch.linalg.qr(torch.randn(3, 3))[0]
    z = torch.randn(2, 5, 4, 4)
    rotated = rotate(z, rotation)
    torch.testing.assert_close(rotated[:, :3], torch.einsum("ij,bjhw->bihw", rotation, z[:, :3]))
    assert torch.equal(rotated[:, 3:], z[:, 3:])


def test_direction_scales_every_task_to_the_common_magnitude():
    torch.manual_seed(0)
    representation = torch.randn(4, 6, dtype=torch.float64)
    jac = torch.randn(3, 24, dtype=torch.float64) * torch.tensor([[1.0], [5.0], [0.1]], dtype=torch.float64)
    method = optim.get("rotograd", seed=0)
    direction = method(jac, context_for(representation))
    norms = jac.norm(dim=1)
    # first step: ratios 1, α uniform, C = mean norm; d = C Σ_k g_k/‖g_k‖
    expected = norms.mean() * (jac / norms[:, None]).sum(0)
    torch.testing.assert_close(direction, expected)
    rotate_only = optim.get("rotograd", scale_magnitudes=False, seed=0)
    torch.testing.assert_close(rotate_only(jac, context_for(representation)), jac.sum(0))


def test_rotation_training_aligns_the_rotated_back_gradients():
    """With the heads' gradients ĝ_k (w.r.t. R_k z) held fixed, g_k = R_kᵀ ĝ_k; training the rotations
    must bring the tasks' gradients w.r.t. z into alignment (the paper's goal)."""
    torch.manual_seed(0)
    representation = torch.randn(8, 4, dtype=torch.float64)
    head_grads = torch.randn(2, 8, 4, dtype=torch.float64)
    method = optim.get("rotograd", lr=0.05, seed=0)
    method.setup(2, torch.device("cpu"), channels=4)
    cosines, losses = [], []
    for _ in range(150):
        rotations = method.rotations().detach().to(torch.float64)
        grads = torch.stack([rotate(head_grads[k], rotations[k].T) for k in range(2)]).reshape(2, -1)
        cosines.append(torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0).item())
        method(grads, context_for(representation))
        losses.append(method.last_rotation_loss)
    assert losses[-1] < 0.5 * losses[0]
    assert cosines[-1] > cosines[0] + 0.2


def test_state_round_trip_and_reset():
    representation = torch.randn(4, 3, dtype=torch.float64)
    jac = torch.randn(2, 12, dtype=torch.float64)
    method = optim.get("rotograd", seed=0)
    method(jac, context_for(representation))
    state = method.state_dict()
    clone = optim.get("rotograd", seed=0)
    clone.load_state_dict(state)
    torch.testing.assert_close(clone.rotations(), method.rotations())
    torch.testing.assert_close(clone(jac, context_for(representation)), method(jac, context_for(representation)))
    method.reset()
    assert method.generators is None


def test_rotograd_runs_at_feature_level_only():
    model = MLPMultiTask(3)
    with pytest.raises(ConfigError, match="rotograd runs at feature level only"):
        Trainer(
            model,
            regression_losses,
            torch.optim.SGD(model.parameters(), lr=0.1),
            "rotograd",
            config=TrainConfig(level="parameter"),
        )


def test_rotation_learning_rate_follows_the_networks_schedule():
    """Recon App. B.2: the rotations learn at a tenth of the network's learning rate, decayed with it."""
    seed_everything(0)
    model = MLPMultiTask(3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    method = optim.get("rotograd", lr_factor=0.1)
    trainer = Trainer(
        model,
        regression_losses,
        optimizer,
        method,
        scheduler=scheduler,
        config=TrainConfig(epochs=2, level="feature", progress=False),
    )
    seen = []
    trainer.callbacks.append(
        type(
            "Record",
            (Callback,),
            {"on_step_end": lambda self, t, out: seen.append(method._optimizer.param_groups[0]["lr"])},
        )()
    )
    inputs = torch.randn(8, 5)
    trainer.fit([(inputs, torch.tanh(inputs[:, :3]))] * 2)
    assert seen == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4])
    fixed = optim.get("rotograd", lr=0.05)
    assert fixed.rotation_lr(None) == 0.05
    with pytest.raises(ShapeError, match="needs learning rate from the training engine"):
        optim.get("rotograd").rotation_lr(StepContext(losses=torch.ones(2)))
