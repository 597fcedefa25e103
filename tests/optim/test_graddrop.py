"""GradDrop (Chen et al. 2020): keep, per element, the task gradients of one randomly chosen sign."""

from __future__ import annotations

import pytest
import torch

from deconflict import optim
from deconflict.optim import StepContext
from tests.optim._inputs import J_BASE, random_jacobian


@pytest.mark.parametrize("seed", range(5))
def test_each_element_keeps_one_sign_only(seed):
    jac = random_jacobian(4, 50, seed)
    direction = optim.get("graddrop", seed=seed)(jac)
    positive = jac.clamp(min=0).sum(0)
    negative = jac.clamp(max=0).sum(0)
    assert torch.all(torch.isclose(direction, positive) | torch.isclose(direction, negative))


def test_expected_value_follows_the_sign_purity():
    jac = torch.tensor([[3.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)  # column 0: P = ½(1 + 2/4) = 0.75
    method = optim.get("graddrop", seed=0)
    mean = torch.stack([method(jac) for _ in range(4000)]).mean(0)
    assert mean[0].item() == pytest.approx(0.75 * 3 + 0.25 * -1, abs=0.1)
    assert mean[1].item() == pytest.approx(-2.0)  # all negative: always kept


def test_leak_one_is_the_plain_sum_and_leaks_are_per_task():
    jac = random_jacobian(3, 20, 1)
    torch.testing.assert_close(optim.get("graddrop", leak=1.0)(jac), jac.sum(0))
    # a task with leak 1 always contributes its whole gradient
    partial = optim.get("graddrop", leak=[1.0, 0.0, 0.0], seed=2)(jac)
    others = partial - jac[0]
    positive, negative = jac[1:].clamp(min=0).sum(0), jac[1:].clamp(max=0).sum(0)
    assert torch.all(torch.isclose(others, positive) | torch.isclose(others, negative))
    with pytest.raises(Exception, match="leak values for 3 tasks"):
        optim.get("graddrop", leak=[0.0, 1.0])(jac)


def test_feature_level_masks_are_shared_across_the_batch_with_sign_correction():
    batch, features = 5, 6
    representation = torch.randn(batch, features, dtype=torch.float64)
    jac = random_jacobian(3, batch * features, 4)
    context = StepContext(losses=torch.ones(3), level="feature", representation=representation)
    direction = optim.get("graddrop", seed=0)(jac, context).view(batch, features)
    per_example = jac.view(3, batch, features)
    signals = (per_example * torch.sign(representation)).sum(1)  # [T, features]
    for f in range(features):  # each feature keeps the same set of tasks in every example
        kept_sets = []
        for subset in range(8):
            chosen = [t for t in range(3) if subset >> t & 1]
            expected = per_example[chosen, :, f].sum(0) if chosen else torch.zeros(batch, dtype=torch.float64)
            if torch.allclose(direction[:, f], expected):
                kept_sets.append(chosen)
        assert kept_sets, f"feature {f}: not a sum over one subset of tasks"
        chosen = kept_sets[0]
        signs = {bool(signals[t, f] > 0) for t in chosen}
        assert len(signs) <= 1  # the kept tasks agree in the sign of their batch-summed signal


def test_seeded_and_reset():
    jac = random_jacobian(3, 30, 5)
    a, b = optim.get("graddrop", seed=7), optim.get("graddrop", seed=7)
    first = [a(jac) for _ in range(3)]
    assert all(torch.equal(x, b(jac)) for x in first)
    a.reset()
    assert torch.equal(a(jac), first[0])


def test_reference_value_on_torchjd_base_jacobian():
    # P = (0.6, 1, 1); with torch.manual_seed(0) and float64, U[0] = 0.9701 > 0.6: keep the negative part.
    torch.manual_seed(0)
    torch.testing.assert_close(optim.get("graddrop")(J_BASE), torch.tensor([-4.0, 2.0, 2.0], dtype=torch.float64))
    torch.manual_seed(0)
    torch.testing.assert_close(
        optim.get("graddrop", leak=0.5)(J_BASE), torch.tensor([-1.0, 2.0, 2.0], dtype=torch.float64)
    )
