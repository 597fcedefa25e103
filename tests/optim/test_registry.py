"""deconflict.optim's public API: names, construction, clear errors."""

from __future__ import annotations

import pytest
import torch

from deconflict import optim
from deconflict.errors import InvalidHyperparameterError, NonFiniteError, ShapeError, UnknownMethodError

FIRST_METHODS = {"equal", "mgda", "pcgrad", "cagrad", "nash_mtl"}
# every method any of the five papers compares (issue: the optimizer zoo)
ZOO = FIRST_METHODS | {
    "fixed",
    "uw",
    "dwa",
    "rlw",
    "gradnorm",
    "imtl_l",
    "famo",
    "graddrop",
    "imtl_g",
    "imtl",
    "gradvac",
    "rgw",
    "aligned_mtl",
    "cosreg",
    "rotograd",
    "go4align",
}


def build(name):
    return optim.get(name, **optim.method_class(name).example_hparams(2))


def test_available_lists_every_method_of_the_papers():
    assert set(optim.available()) >= ZOO
    assert set(optim.available("aggregator")) >= {"mgda", "pcgrad", "cagrad", "nash_mtl"}
    assert "equal" in optim.available("weighting")
    assert optim.available() == sorted(optim.available())


@pytest.mark.parametrize("name", optim.available())
def test_every_method_builds_with_defaults_and_has_paper_and_equation(name):
    method = build(name)
    assert method.name == name
    assert method.paper and method.equation
    assert method.category in ("aggregator", "weighting", "regularizer", "combined")
    doc = type(method).__doc__
    assert (doc and any(mark in doc for mark in ("Eq.", "Algorithm", "Sec."))) or name in ("equal", "fixed")
    assert repr(method).startswith(type(method).__name__ + "(")
    assert set(method.levels) <= {"parameter", "feature"} and method.levels


@pytest.mark.parametrize(
    "alias, name",
    [("Nash-MTL", "nash_mtl"), ("PCGrad", "pcgrad"), ("ew", "equal"), ("joint", "equal"), ("mgda-ub", "mgda")],
)
def test_aliases_and_spelling(alias, name):
    assert optim.canonical_name(alias) == name
    assert optim.get(alias).name == name


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(UnknownMethodError) as error:
        optim.get("pcgard")
    message = str(error.value)
    assert "pcgard" in message
    for name in FIRST_METHODS:
        assert name in message


def test_unknown_hyperparameter_lists_the_accepted_ones():
    with pytest.raises(
        InvalidHyperparameterError, match=r"cagrad: unknown hyperparameter\(s\) alpha; accepted .*c=0.5"
    ):
        optim.get("cagrad", alpha=0.4)


@pytest.mark.parametrize(
    "name, hparams, match",
    [
        ("cagrad", {"c": -0.1}, "c must be a finite number ≥ 0"),
        ("cagrad", {"rescale": 3}, "rescale must be 0, 1 or 2"),
        ("pcgrad", {"reduction": "max"}, "reduction must be"),
        ("mgda", {"solver": "qp"}, "solver must be"),
        ("nash_mtl", {"update_weights_every": 0}, "update_weights_every must be"),
        ("nash_mtl", {"on_failure": "ignore"}, "on_failure must be"),
        ("equal", {"reduction": "median"}, "reduction must be"),
        ("fixed", {"weights": [1.0, -1.0]}, "weights must be"),
        ("uw", {"n_tasks": 0}, "n_tasks must be"),
        ("dwa", {"temperature": 0}, "temperature must be > 0"),
        ("rlw", {"distribution": "cauchy"}, "distribution must be one of"),
        ("rgw", {"scale": "max"}, "scale must be"),
        ("gradnorm", {"alpha": -1}, "alpha must be ≥ 0"),
        ("famo", {"lr": 0}, "lr must be > 0"),
        ("famo", {"gamma": -1e-3}, "gamma must be ≥ 0"),
        ("go4align", {"num_groups": 0}, "num_groups must be"),
        ("graddrop", {"leak": 1.5}, "leak must be in"),
        ("gradvac", {"beta": 2.0}, "beta must be in"),
        ("gradvac", {"grouping": "per_neuron"}, "grouping must be one of"),
        ("aligned_mtl", {"scale_mode": "max"}, "scale_mode must be"),
        ("cosreg", {"weight": -1.0}, "weight must be ≥ 0"),
        ("rotograd", {"lr": 0.0}, "lr must be > 0"),
        ("rotograd", {"init": "zeros"}, "init must be"),
        ("mgda", {"normalization": "max"}, "normalization must be"),
    ],
)
def test_invalid_hyperparameters_name_the_method_and_the_fix(name, hparams, match):
    with pytest.raises(InvalidHyperparameterError, match=f"{name}: {match}"):
        optim.get(name, **hparams)


@pytest.mark.parametrize("name", sorted(optim.available("aggregator")))
def test_aggregators_reject_bad_jacobians(name):
    aggregator = optim.get(name)
    with pytest.raises(ShapeError, match=f"{name}: expected a T×D Jacobian"):
        aggregator(torch.ones(4))
    with pytest.raises(ShapeError):
        aggregator(torch.ones(0, 3))
    with pytest.raises(NonFiniteError, match=rf"{name} at step 1: the gradients of tasks \[1\]"):
        aggregator(torch.tensor([[1.0, 0.0], [float("nan"), 1.0]]))


@pytest.mark.parametrize("name", sorted(optim.available("weighting")))
def test_weightings_reject_bad_losses(name):
    weighting = build(name)
    with pytest.raises(ShapeError):
        weighting(torch.ones(2, 2))
    with pytest.raises(NonFiniteError, match=f"{name} at step 1"):
        weighting(torch.tensor([1.0, float("inf")]))


def test_regularizer_rejects_bad_jacobians():
    with pytest.raises(ShapeError, match="cosreg: expected a T×D Jacobian"):
        optim.get("cosreg")(torch.ones(3))
    with pytest.raises(NonFiniteError, match="cosreg at step 1"):
        optim.get("cosreg")(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))


def test_hyperparameters_are_introspectable():
    assert optim.method_class("cagrad").hyperparameters() == {"c": 0.5, "rescale": 0, "reduction": "mean"}
    assert optim.get("cagrad", c=0.4).hparams()["c"] == 0.4


def test_equal_weighting():
    losses = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(optim.get("equal")(losses), torch.ones(3))
    torch.testing.assert_close(optim.get("equal", reduction="mean")(losses), torch.full((3,), 1 / 3))


def test_catalogue_in_the_readme_is_generated_from_the_registry(repo_root):
    from deconflict.optim.catalogue import catalogue_markdown, catalogue_rows, main

    assert main(["--check", str(repo_root / "README.md")]) == 0, (
        "run python -m deconflict.optim.catalogue --write README.md"
    )
    rows = catalogue_rows()
    assert {row["method"].split("`")[1] for row in rows} == set(optim.available())
    for row in rows:
        assert all(value for value in row.values()), row
    assert catalogue_markdown().count("\n") == len(rows) + 2
