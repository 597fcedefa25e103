"""RotoGrad (Javaloy & Valera 2022): orthogonal per-task rotations and gradient-magnitude homogenization."""

from __future__ import annotations

import pytest
import torch

from deconflict import optim
from deconflict.errors import ConfigError
from deconflict.optim import StepContext
from deconflict.optim.rotograd import rotate
from deconflict.train import TrainConfig, Trainer
from tests.architectures import MLPMultiTask, regression_losses


def context_for(representation):
    return StepContext(losses=torch.ones(3), level="feature", representation=representation)


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
        Trainer(model, regression_losses, torch.optim.SGD(model.parameters(), lr=0.1), "rotograd",
                config=TrainConfig(level="parameter"))
