"""GradVac (Wang et al. 2021): adaptive cosine targets with an EMA."""

from __future__ import annotations

import pytest
import torch

from deconflict import optim
from deconflict.optim import StepContext
from tests.optim._inputs import J_BASE, random_jacobian


def test_first_step_equals_pcgrad_because_targets_start_at_zero():
    for seed in range(5):
        jac = random_jacobian(2, 6, seed)
        torch.testing.assert_close(optim.get("gradvac")(jac), optim.get("pcgrad")(jac))


@pytest.mark.parametrize("seed", range(8))
def test_correction_reaches_the_target_cosine(seed):
    """Eq. (3): a pair below its target is corrected so that cos(g_i', g_j) equals the target."""
    jac = random_jacobian(2, 5, seed)
    gram = jac @ jac.T
    phi = torch.nn.functional.cosine_similarity(jac[0], jac[1], dim=0).item()
    targets = torch.full((2, 2), 0.3, dtype=torch.float64)
    corrected = optim.get("gradvac", eps=0.0).corrections(gram, targets) @ jac  # eps = 0: the exact formula
    for i, j in ((0, 1), (1, 0)):
        cosine = torch.nn.functional.cosine_similarity(corrected[i], jac[j], dim=0).item()
        if phi < 0.3:
            assert cosine == pytest.approx(0.3, abs=1e-9)
        else:
            assert cosine == pytest.approx(phi, abs=1e-12)  # above the target: untouched


def test_targets_follow_the_ema_of_observed_cosines():
    jac = random_jacobian(2, 5, 3)
    phi = torch.nn.functional.cosine_similarity(jac[0], jac[1], dim=0).item()
    method = optim.get("gradvac", beta=0.25)
    method(jac)
    # pair (0, 1): observed φ(g0, g1) before any correction → target 0.25 φ
    assert method.targets[0, 0, 1].item() == pytest.approx(0.25 * phi, rel=1e-7)


def test_groups_keep_their_own_targets():
    """all_matrix: each parameter block is vaccinated on its own (two tasks: step 1 = PCGrad per block)."""
    layout = (("layer1.weight", 6), ("layer1.bias", 2), ("layer2.weight", 4))
    blocks = (slice(0, 6), slice(6, 8), slice(8, 12))
    jac = random_jacobian(2, 12, 4)
    context = StepContext(losses=torch.ones(2), shared_layout=layout)
    for grouping, groups in (("whole_model", 1), ("all_layer", 2), ("all_matrix", 3)):
        method = optim.get("gradvac", grouping=grouping, beta=0.5)
        direction = method(jac, context)
        assert method.targets.shape == (groups, 2, 2)
        if grouping == "all_matrix":
            for index, block in enumerate(blocks):
                part = jac[:, block]
                torch.testing.assert_close(direction[block], optim.get("pcgrad")(part))
                phi = torch.nn.functional.cosine_similarity(part[0], part[1], dim=0).item()
                assert method.targets[index, 0, 1].item() == pytest.approx(0.5 * phi)


def test_seeded_reset_and_state():
    jac = random_jacobian(4, 8, 5)
    method = optim.get("gradvac", seed=1)
    first = method(jac)
    method(jac)
    state = method.state_dict()
    expected_next = method(jac)
    clone = optim.get("gradvac", seed=1)
    clone.load_state_dict(state)
    assert torch.equal(clone(jac), expected_next)
    method.reset()
    assert method.targets is None and torch.equal(method(jac), first)


def test_reference_value_on_torchjd_base_jacobian():
    # TorchJD 0.18.0, same seed: first call = PCGrad [0.5848, 3.8012, 3.8012]; then [1.00654, 3.2644, 3.2644].
    method = optim.get("gradvac")
    torch.testing.assert_close(
        method(J_BASE), torch.tensor([0.5848, 3.8012, 3.8012], dtype=torch.float64), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(
        method(J_BASE), torch.tensor([1.00654, 3.26440, 3.26440], dtype=torch.float64), atol=1e-4, rtol=0
    )
