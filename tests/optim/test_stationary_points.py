"""Every aggregator at and near Pareto-stationary points (0 in the convex hull of the task gradients),
on rank-deficient and on non-stationary Jacobians: the properties each method's paper claims.

The matrices come from the samplers in ``tests/optim/_inputs.py`` (the kinds TorchJD's property suite
uses: strongly, strictly weakly and non-stationary, full rank and rank-deficient).
"""

from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch

from deconflict import optim
from deconflict.errors import SolverError, SolverWarning
from deconflict.optim import StepContext
from deconflict.optim.cagrad import STATIONARY_TOL
from tests.optim._inputs import STATIONARY_IDS, STATIONARY_MATRICES

CASES = list(zip(STATIONARY_IDS, STATIONARY_MATRICES))
# Nash-MTL claims it too, but has no solution at a stationary point (checked below)
PERMUTATION_INVARIANT = [
    n
    for n in optim.available("aggregator")
    if "permutation_invariant" in optim.method_class(n).claims and n != "nash_mtl"
]


def is_stationary(case_id: str) -> bool:
    return not case_id.startswith("nonstat")


def call(name: str, jac: torch.Tensor, **hparams) -> torch.Tensor:
    torch.manual_seed(0)
    if "seed" in optim.method_class(name).hyperparameters():
        hparams.setdefault("seed", 0)
    method = optim.get(name, **hparams)
    context = StepContext(
        losses=torch.ones(jac.shape[0]),
        level="feature" if name == "rotograd" else "parameter",
        representation=torch.ones(jac.shape[1], 1, dtype=jac.dtype),
        learning_rate=1e-3,
    )
    return method(jac, context)


def eq4_optimum(jac: torch.Tensor, c: float) -> float:
    """Independent reference: Eq. (4)'s primal, max_d min_i ⟨g_i, d⟩ s.t. ‖d − g0‖ ≤ c‖g0‖, by a cone solver."""
    matrix = jac.numpy()
    g0 = matrix.mean(axis=0)
    d, t = cp.Variable(matrix.shape[1]), cp.Variable()
    problem = cp.Problem(cp.Maximize(t), [matrix @ d >= t, cp.norm(d - g0) <= c * np.linalg.norm(g0)])
    problem.solve(solver=cp.CLARABEL)
    return float(problem.value)


# -- every aggregator: a finite direction, or a clear, named failure --------------------------------------
@pytest.mark.parametrize("name", optim.available("aggregator"))
@pytest.mark.parametrize("case_id,jac", CASES[::3], ids=STATIONARY_IDS[::3])
def test_every_aggregator_gives_a_finite_direction_or_a_clear_error(name, case_id, jac):
    if name == "nash_mtl":  # no positive solution of Gα = 1/α at a stationary point: said loudly
        try:
            direction = call(name, jac, on_failure="raise")
        except SolverError as error:
            assert "nash_mtl at step 1" in str(error)
            return
    else:
        direction = call(name, jac)
    assert direction.shape == (jac.shape[1],) and torch.isfinite(direction).all()


@pytest.mark.parametrize("name", PERMUTATION_INVARIANT)
@pytest.mark.parametrize("case_id,jac", CASES, ids=STATIONARY_IDS)
def test_permutation_invariant_at_every_kind_of_point(name, case_id, jac):
    permutation = torch.roll(torch.arange(jac.shape[0]), 1)
    scale = jac.norm(dim=1).max()
    torch.testing.assert_close(call(name, jac[permutation]), call(name, jac), rtol=1e-5, atol=1e-6 * scale)


# -- CAGrad: Eq. (4)'s optimum, within the ball, non-conflicting for c ≥ 1 --------------------------------
@pytest.mark.parametrize("c", [0.4, 1.0, 2.0])
@pytest.mark.parametrize("case_id,jac", CASES, ids=STATIONARY_IDS)
def test_cagrad_solves_eq4(case_id, jac, c):
    method = optim.get("cagrad", c=c)
    direction = method(jac)
    g0 = jac.mean(0)
    scale = float(jac.norm(dim=1).max())
    # inside the ball (Algorithm 1 lands on its boundary; the stationary case inside)
    assert float((direction - g0).norm()) <= c * float(g0.norm()) * (1 + 1e-6) + 1e-12 * scale
    # the worst task's improvement is Eq. (4)'s optimum (an independent primal solve)
    worst = float((jac @ direction).min())
    assert worst >= eq4_optimum(jac, c) - (1 + c) * 2 * STATIONARY_TOL * float(g0.norm()) * scale - 1e-7 * scale**2
    if c >= 1:  # d = 0 is feasible, so the optimum conflicts with no task
        assert worst >= -1e-9 * scale**2
    if is_stationary(case_id) and c >= 1:
        assert method.last_case == "stationary"


def test_cagrad_stationary_step_is_the_projection_of_g0_onto_the_non_conflicting_cone():
    # g1 = −g2 (0 in the hull) plus a shared component: the cone {d: ⟨g_i, d⟩ ≥ 0} is g1's orthogonal
    # complement, so the answer is g0 with its component along g1 removed (here: g0 itself).
    jac = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    method = optim.get("cagrad", c=1.0)
    direction = method(jac)
    assert method.last_case == "stationary"
    torch.testing.assert_close(direction, jac.mean(0))
    # with the shared component pointing against task 3's own gradient the projection removes it
    jac = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [0.0, -3.0]], dtype=torch.float64)  # 0 ∈ hull, g0 = (0, −1/3)
    direction = optim.get("cagrad", c=1.0)(jac)
    torch.testing.assert_close(direction, torch.zeros(2, dtype=torch.float64), atol=1e-9, rtol=0)


def test_cagrad_c_below_one_at_a_stationary_point_keeps_algorithm_1_where_the_kink_is_not_optimal():
    # 0 ∈ hull, but the ball is too small to reach the non-conflicting cone: the dual optimum is not at
    # the kink, Algorithm 1 applies, and the direction is on the ball's boundary
    jac = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, -3.0], [0.0, 3.5]], dtype=torch.float64)
    method = optim.get("cagrad", c=0.1)
    direction = method(jac)
    assert method.last_case == "algorithm1"
    g0 = jac.mean(0)
    assert float((direction - g0).norm()) == pytest.approx(0.1 * float(g0.norm()), rel=1e-6)


def test_cagrad_float32_jacobians_use_a_float64_gramian():
    jac = STATIONARY_MATRICES[STATIONARY_IDS.index("strong-4x9r3-s0")]
    method = optim.get("cagrad", c=2.0)
    direction = method(jac.float())
    assert method.last_case == "stationary"
    assert float((jac.float() @ direction).min()) >= -1e-5


# -- MGDA: the min-norm point, 0 at every stationary point ------------------------------------------------
@pytest.mark.parametrize("case_id,jac", CASES, ids=STATIONARY_IDS)
def test_mgda_vanishes_exactly_at_stationary_points(case_id, jac):
    direction = call("mgda", jac)
    scale = float(jac.norm(dim=1).max())
    if is_stationary(case_id):
        assert float(direction.norm()) <= 1e-7 * scale
    else:
        assert float(direction.norm()) > 1e-7 * scale
        assert float((jac @ direction).min()) >= -1e-9 * scale**2


# -- PCGrad: with two tasks, the update conflicts with neither ---------------------------------------------
@pytest.mark.parametrize(
    "case_id,jac", [c for c in CASES if c[1].shape[0] == 2], ids=lambda v: v if isinstance(v, str) else ""
)
def test_pcgrad_two_tasks_conflict_with_neither(case_id, jac):
    direction = call("pcgrad", jac)
    assert torch.all(jac @ direction >= -1e-9 * jac.norm(dim=1).max() ** 2)


# -- IMTL-G: equal projections on every unit gradient when the weights exist ------------------------------
@pytest.mark.parametrize("case_id,jac", CASES, ids=STATIONARY_IDS)
def test_imtl_g_equal_projections_or_zero(case_id, jac):
    method = optim.get("imtl_g")
    direction = method(jac)
    units = jac / jac.norm(dim=1, keepdim=True)
    projections = units @ direction
    scale = float(jac.norm(dim=1).max())
    if float(direction.norm()) > 1e-9 * scale and torch.linalg.matrix_rank(jac) == jac.shape[0]:
        torch.testing.assert_close(projections, projections[0].expand_as(projections), rtol=1e-6, atol=1e-9 * scale)
    assert torch.isclose(method.last_weights.sum(), torch.tensor(1.0, dtype=jac.dtype)) or float(direction.norm()) == 0


# -- Nash-MTL: no bargaining solution at a stationary point; the fallback is the documented one -----------
@pytest.mark.parametrize(
    "case_id,jac", [c for c in CASES if c[0].startswith("strong")][:6], ids=lambda v: v if isinstance(v, str) else ""
)
def test_nash_mtl_at_strongly_stationary_points(case_id, jac):
    with pytest.raises(SolverError, match="nash_mtl at step 1"):
        call("nash_mtl", jac, on_failure="raise")
    with pytest.warns(SolverWarning, match="initial weights α = 1"):
        direction = call("nash_mtl", jac)
    torch.testing.assert_close(direction, jac.sum(0))


@pytest.mark.parametrize(
    "case_id,jac",
    [c for c in CASES if c[0].startswith("nonstat") and torch.linalg.matrix_rank(c[1]) == c[1].shape[0]],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_nash_mtl_solves_its_bargaining_equation_where_it_has_a_solution(case_id, jac):
    method = optim.get("nash_mtl", on_failure="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        direction = method(jac)
    alpha = method.last_weights
    torch.testing.assert_close(alpha * (jac @ direction), torch.ones_like(alpha), rtol=1e-6, atol=1e-6)


# -- GradDrop: a single task's gradient always passes, at every scale -------------------------------------
@pytest.mark.parametrize("scale", [1e-30, 1e-12, 1e-8, 1e-6, 1.0, 1e6])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_graddrop_keeps_a_single_tasks_gradient(scale, dtype):
    method = optim.get("graddrop", seed=0)
    for _ in range(20):
        jac = (torch.randn(1, 64, dtype=torch.float64) * scale).to(dtype)
        assert torch.equal(method(jac), jac[0])


def test_graddrop_code_epsilon_drops_tiny_agreeing_gradients():
    """The lingvo / LibMTL ε = 1e-7 pulls the sign purity to ½ at gradient scale 1e-8: documented option."""
    jac = torch.full((1, 1000), 1e-8, dtype=torch.float64)
    kept = optim.get("graddrop", epsilon=1e-7, seed=0)(jac)
    assert 0.2 < float((kept != 0).double().mean()) < 0.8


def test_graddrop_a_uniform_draw_of_zero_keeps_negative_agreement(monkeypatch):
    jac = -torch.ones(2, 5, dtype=torch.float64)
    monkeypatch.setattr(torch, "rand", lambda *args, **kwargs: torch.zeros(args[0], dtype=kwargs.get("dtype")))
    torch.testing.assert_close(optim.get("graddrop")(jac), jac.sum(0))
