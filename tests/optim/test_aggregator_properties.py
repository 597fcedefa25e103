"""Properties shared by several aggregators, checked on every method that claims them (``Method.claims``)."""

from __future__ import annotations

import pytest
import torch

from deconflict import optim
from deconflict.errors import SolverError, SolverWarning
from deconflict.optim import StepContext
from tests.optim._inputs import J_BASE, random_jacobian

AGGREGATORS = optim.available("aggregator")


def claiming(claim: str) -> list[str]:
    """The aggregators whose class declares ``claim`` (a new method is checked as soon as it declares it)."""
    return [name for name in AGGREGATORS if claim in optim.method_class(name).claims]


# d(sJ) = s·d(J) for s > 0 (same random draws for the random ones)
HOMOGENEOUS = claiming("homogeneous")
# the row order of J does not matter (deterministic methods)
PERMUTATION_INVARIANT = claiming("permutation_invariant")
SEEDED = [name for name in AGGREGATORS if "seed" in optim.method_class(name).hyperparameters()]


def call(name: str, jac: torch.Tensor, seed: int = 0, **hparams) -> torch.Tensor:
    """One fresh call, with a context the feature-level-only methods need."""
    torch.manual_seed(seed)
    if "seed" in optim.method_class(name).hyperparameters():
        hparams["seed"] = seed
    method = optim.get(name, **hparams)
    if "parameter" in method.levels:
        return method(jac, StepContext(losses=torch.ones(jac.shape[0])))
    context = StepContext(
        losses=torch.ones(jac.shape[0]),
        level="feature",
        representation=torch.ones(jac.shape[1], 1, dtype=jac.dtype),
        learning_rate=1e-3,
    )
    return method(jac, context)


@pytest.mark.parametrize("name", HOMOGENEOUS)
@pytest.mark.parametrize("scale", [1e-3, 7.0])
def test_positively_homogeneous(name, scale):
    jac = random_jacobian(4, 9, 3)
    hparams = {"eps": 0.0} if name == "gradvac" else {}  # its eps guard is not scale-free (the formula is)
    torch.testing.assert_close(
        call(name, scale * jac, **hparams), scale * call(name, jac, **hparams), rtol=1e-6, atol=1e-10
    )


@pytest.mark.parametrize("name", claiming("scale_invariant"))
def test_scale_invariant(name):
    jac = random_jacobian(4, 9, 3)
    torch.testing.assert_close(call(name, 7.0 * jac), call(name, jac))


@pytest.mark.parametrize("name", claiming("non_conflicting"))
@pytest.mark.parametrize("seed", range(5))
def test_non_conflicting(name, seed):
    jac = random_jacobian(4, 9, seed)
    assert torch.all(jac @ call(name, jac) >= -1e-9 * jac.norm(dim=1).max() ** 2)


def test_claims_are_known_and_cover_the_papers_properties():
    known = {"homogeneous", "scale_invariant", "permutation_invariant", "non_conflicting"}
    for name in optim.available():
        assert optim.method_class(name).claims <= known, name
    assert {"cagrad", "mgda", "pcgrad", "imtl_g"} <= set(HOMOGENEOUS) and "nash_mtl" in PERMUTATION_INVARIANT


@pytest.mark.parametrize("name", PERMUTATION_INVARIANT)
def test_permutation_invariant(name):
    jac = random_jacobian(5, 11, 6)
    permutation = torch.tensor([3, 0, 4, 2, 1])
    torch.testing.assert_close(call(name, jac[permutation]), call(name, jac), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", AGGREGATORS)
def test_zero_jacobian(name):
    zero = torch.zeros(3, 6, dtype=torch.float64)
    if name == "nash_mtl":  # its bargaining equation has no solution: said loudly
        with pytest.raises(SolverError, match="zero gradients"):
            call(name, zero, on_failure="raise")
        with pytest.warns(SolverWarning, match="zero gradients"):
            direction = call(name, zero)
    else:
        direction = call(name, zero)
    assert torch.equal(direction, torch.zeros(6, dtype=torch.float64))


@pytest.mark.parametrize("name", AGGREGATORS)
def test_rank_deficient_jacobian_gives_a_finite_direction(name):
    jac = random_jacobian(5, 12, 2, rank=2)
    if name == "nash_mtl":
        try:
            direction = call(name, jac, on_failure="raise")
        except SolverError as error:  # no positive solution for this Gramian: a clear error, never NaN
            assert "nash_mtl at step 1" in str(error)
            return
    else:
        direction = call(name, jac)
    assert torch.isfinite(direction).all() and direction.abs().sum() > 0


@pytest.mark.parametrize("name", SEEDED)
def test_random_methods_are_seeded(name):
    jac = random_jacobian(4, 9, 1)
    assert torch.equal(call(name, jac, seed=5), call(name, jac, seed=5))


def test_reference_values_of_the_remaining_aggregators():
    """Hard-coded outputs on TorchJD's J_base (the others are in each method's own test file)."""
    torch.testing.assert_close(
        call("rgw", J_BASE, seed=0), torch.tensor([-2.6229, 1.0, 1.0], dtype=torch.float64), atol=1e-4, rtol=0
    )  # softmax of N(0, I) from a generator seeded with 0
    rotograd = optim.get("rotograd", init="identity")
    context = StepContext(
        losses=torch.ones(2), level="feature", representation=torch.ones(1, 3, dtype=torch.float64), learning_rate=1e-3
    )
    # first step: C = mean ‖g‖ = (√18 + √38)/2, d = C (g1/‖g1‖ + g2/‖g2‖)
    torch.testing.assert_close(
        rotograd(J_BASE, context), torch.tensor([0.1588, 2.0706, 2.0706], dtype=torch.float64), atol=1e-4, rtol=0
    )
