"""deconflict.optim's public API: names, construction, clear errors."""

from __future__ import annotations

import pytest
import torch

from deconflict import optim
from deconflict.errors import InvalidHyperparameterError, NonFiniteError, ShapeError, UnknownMethodError

FIRST_METHODS = {"equal", "mgda", "pcgrad", "cagrad", "nash_mtl"}


def test_available_lists_the_first_methods_by_category():
    assert FIRST_METHODS <= set(optim.available())
    assert set(optim.available("aggregator")) >= {"mgda", "pcgrad", "cagrad", "nash_mtl"}
    assert "equal" in optim.available("weighting")
    assert optim.available() == sorted(optim.available())


@pytest.mark.parametrize("name", sorted(FIRST_METHODS))
def test_every_method_builds_with_defaults_and_has_paper_and_equation(name):
    method = optim.get(name)
    assert method.name == name
    assert method.paper and method.equation
    assert method.category in ("aggregator", "weighting")
    assert type(method).__doc__ and ("Eq." in type(method).__doc__ or "Algorithm" in type(method).__doc__
                                     or "equal" in type(method).__doc__.lower())
    assert repr(method).startswith(type(method).__name__ + "(")


@pytest.mark.parametrize("alias, name", [("Nash-MTL", "nash_mtl"), ("PCGrad", "pcgrad"), ("ew", "equal"),
                                         ("joint", "equal"), ("mgda-ub", "mgda")])
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
    with pytest.raises(InvalidHyperparameterError, match=r"cagrad: unknown hyperparameter\(s\) alpha; accepted .*c=0.5"):
        optim.get("cagrad", alpha=0.4)


@pytest.mark.parametrize("name, hparams, match", [
    ("cagrad", {"c": -0.1}, "c must be a finite number ≥ 0"),
    ("cagrad", {"rescale": 3}, "rescale must be 0, 1 or 2"),
    ("pcgrad", {"reduction": "max"}, "reduction must be"),
    ("mgda", {"solver": "qp"}, "solver must be"),
    ("nash_mtl", {"update_weights_every": 0}, "update_weights_every must be"),
    ("nash_mtl", {"on_failure": "ignore"}, "on_failure must be"),
    ("equal", {"reduction": "median"}, "reduction must be"),
])
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


def test_weightings_reject_bad_losses():
    weighting = optim.get("equal")
    with pytest.raises(ShapeError):
        weighting(torch.ones(2, 2))
    with pytest.raises(NonFiniteError, match="equal at step 1"):
        weighting(torch.tensor([1.0, float("inf")]))


def test_hyperparameters_are_introspectable():
    assert optim.method_class("cagrad").hyperparameters() == {"c": 0.5, "rescale": 0, "reduction": "mean"}
    assert optim.get("cagrad", c=0.4).hparams()["c"] == 0.4


def test_equal_weighting():
    losses = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(optim.get("equal")(losses), torch.ones(3))
    torch.testing.assert_close(optim.get("equal", reduction="mean")(losses), torch.full((3,), 1 / 3))
