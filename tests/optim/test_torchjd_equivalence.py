"""Our aggregators against TorchJD's, an independent implementation (test-only dependency).

Semantics match for these four (TorchJD's PCGrad sums the projected gradients; its CAGrad is
Algorithm 1 without rescaling, g0 the mean; its MGDA and Nash-MTL return the same weighted sums),
so the directions are compared directly. Where TorchJD's solver is approximate (Frank-Wolfe for
MGDA, a 20-step convex-concave procedure for Nash-MTL) the tolerance says how close it gets.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from deconflict import optim
from tests.optim._inputs import random_jacobian

torchjd_aggregation = pytest.importorskip("torchjd.aggregation")

CASES = [(2, 3, 0), (2, 8, 1), (3, 10, 2), (4, 12, 3), (5, 30, 4), (7, 25, 5)]
IDS = [f"{t}x{d}-s{s}" for t, d, s in CASES]


@pytest.mark.parametrize("n_tasks, dim, seed", CASES, ids=IDS)
def test_mgda_matches_torchjd(n_tasks, dim, seed):
    jac = random_jacobian(n_tasks, dim, seed)
    theirs = torchjd_aggregation.MGDA(epsilon=1e-10, max_iters=100_000)(jac)
    ours = optim.get("mgda")(jac)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5 * jac.norm().item())


@pytest.mark.parametrize("seed", range(8))
def test_pcgrad_matches_torchjd_for_two_tasks(seed):
    # With two tasks the random order cannot matter; with more, both draw random orders.
    jac = random_jacobian(2, 6, seed)
    torch.testing.assert_close(optim.get("pcgrad")(jac), torchjd_aggregation.PCGrad()(jac))


@pytest.mark.parametrize("c", [0.2, 0.5])
@pytest.mark.parametrize("n_tasks, dim, seed", CASES, ids=IDS)
def test_cagrad_matches_torchjd(n_tasks, dim, seed, c):
    """Same direction up to TorchJD's solver accuracy (its Clarabel solve on a normalised Gramian stops
    earlier: seen 1.6e-3 relative on single entries); ours is never the less optimal of the two."""
    jac = random_jacobian(n_tasks, dim, seed)
    theirs = torchjd_aggregation.CAGrad(c=c)(jac)
    ours = optim.get("cagrad", c=c)(jac)
    torch.testing.assert_close(ours, theirs, rtol=5e-3, atol=1e-5 * jac.norm().item())
    assert (jac @ ours).min() >= (jac @ theirs).min() - 1e-9 * jac.norm() ** 2


@pytest.mark.parametrize("n_tasks, dim, seed", CASES, ids=IDS)
def test_nash_mtl_matches_torchjd_up_to_its_solver_tolerance(n_tasks, dim, seed):
    jac = random_jacobian(n_tasks, dim, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cvxpy's DPP notice inside TorchJD
        theirs = torchjd_aggregation.NashMTL(n_tasks=n_tasks, max_norm=0.0, update_weights_every=1, optim_niter=20)(jac)
    ours = optim.get("nash_mtl")(jac)
    torch.testing.assert_close(ours, theirs, rtol=2e-2, atol=2e-2 * ours.norm().item())


# -- aggregators added by the optimizer zoo -------------------------------------------------------
@pytest.mark.parametrize("n_tasks, dim, seed", CASES, ids=IDS)
def test_imtl_g_matches_torchjd(n_tasks, dim, seed):
    jac = random_jacobian(n_tasks, dim, seed)
    torch.testing.assert_close(optim.get("imtl_g")(jac), torchjd_aggregation.IMTLG()(jac))


@pytest.mark.parametrize("n_tasks, dim, seed", CASES, ids=IDS)
def test_aligned_mtl_matches_torchjd_up_to_its_mean_convention(n_tasks, dim, seed):
    """TorchJD averages the aligned gradients (w = 1/T); the paper's code sums them (our default)."""
    jac = random_jacobian(n_tasks, dim, seed)
    theirs = torchjd_aggregation.AlignedMTL()(jac)
    torch.testing.assert_close(optim.get("aligned_mtl", reduction="mean")(jac), theirs)
    torch.testing.assert_close(optim.get("aligned_mtl")(jac), n_tasks * theirs)


@pytest.mark.parametrize("n_tasks, dim, seed", CASES, ids=IDS)
def test_graddrop_matches_torchjd_under_the_same_seed(n_tasks, dim, seed):
    jac = random_jacobian(n_tasks, dim, seed)
    torch.manual_seed(seed)
    ours = optim.get("graddrop", epsilon=0.0)(jac)
    torch.manual_seed(seed)
    torch.testing.assert_close(ours, torchjd_aggregation.GradDrop()(jac))


@pytest.mark.parametrize("n_tasks, dim, seed", CASES, ids=IDS)
def test_gradvac_matches_torchjd_over_several_steps(n_tasks, dim, seed):
    ours, theirs = optim.get("gradvac"), torchjd_aggregation.GradVac()
    for step in range(4):
        jac = random_jacobian(n_tasks, dim, seed + 100 * step)
        torch.manual_seed(step)
        mine = ours(jac)
        torch.manual_seed(step)
        torch.testing.assert_close(mine, theirs(jac))


@pytest.mark.parametrize("n_tasks, dim, seed", CASES, ids=IDS)
def test_rgw_matches_torchjd_random_under_the_same_seed(n_tasks, dim, seed):
    jac = random_jacobian(n_tasks, dim, seed)
    torch.manual_seed(seed)
    ours = optim.get("rgw")(jac)
    torch.manual_seed(seed)
    torch.testing.assert_close(ours, torchjd_aggregation.Random()(jac))


# -- loss weightings against TorchJD's scalarizers ------------------------------------------------
torchjd_scalarization = pytest.importorskip("torchjd.scalarization")


def _objective(method, losses):
    weights = method(losses)
    penalty = method.penalty()
    return (weights * losses).sum() + (penalty if penalty is not None else 0.0)


def _losses(step: int, n_tasks: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(step)
    return (torch.rand(n_tasks, generator=generator, dtype=torch.float64) + 0.1).requires_grad_()


@pytest.mark.parametrize("name, theirs", [("uw", "UW"), ("imtl_l", "IMTLL")])
def test_learned_scales_match_torchjd(name, theirs):
    ours = optim.get(name)
    ours.setup(3, torch.device("cpu"))
    reference = getattr(torchjd_scalarization, theirs)(3).double()
    for step in range(3):
        with torch.no_grad():  # same parameter values, moved by an arbitrary amount each step
            ours.parameters()[0].copy_(torch.linspace(-0.5, 0.5, 3) * step)
            next(reference.parameters()).copy_(torch.linspace(-0.5, 0.5, 3) * step)
        losses = _losses(step)
        mine = _objective(ours, losses)
        expected = reference(losses)
        torch.testing.assert_close(mine, expected.to(mine.dtype))
        grads_mine = torch.autograd.grad(mine, [losses, ours.parameters()[0]])
        grads_theirs = torch.autograd.grad(expected, [losses, next(reference.parameters())])
        for a, b in zip(grads_mine, grads_theirs):
            torch.testing.assert_close(a.double(), b.double())


def test_dwa_matches_torchjd_over_epochs():
    ours, reference = optim.get("dwa"), torchjd_scalarization.DWA()
    for epoch in range(4):
        for batch in range(3):
            losses = _losses(10 * epoch + batch)
            mine = torch.autograd.grad(_objective(ours, losses), losses)[0]
            theirs = torch.autograd.grad(reference(losses), losses)[0]
            torch.testing.assert_close(mine, theirs)
        ours.end_epoch()
        reference.step()


def test_famo_matches_torchjd_over_steps_with_updates():
    ours, reference = optim.get("famo"), torchjd_scalarization.FAMO(3).double()
    for step in range(5):
        losses = _losses(step)
        after = (losses.detach() * 0.9 ** (1 + torch.arange(3))).double()
        mine = torch.autograd.grad(_objective(ours, losses), losses)[0]
        # TorchJD's objective is c Σ z log L; its gradient w.r.t. L is our weight vector
        theirs = torch.autograd.grad(reference(losses), losses)[0]
        torch.testing.assert_close(mine, theirs)
        ours.update(after)
        reference.update(after)
    torch.testing.assert_close(ours.task_weights, torch.softmax(reference._w.detach(), dim=0))
