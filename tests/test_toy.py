"""DR-MGF's toy network (Appendix A) and the Fig. 3 experiment."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from deconflict.errors import ConfigError, InvalidHyperparameterError, ShapeError, UnknownMethodError
from deconflict.experiments.drmgf_toy import (
    ToyMethod,
    ToySettings,
    run_toy,
    sample_inits,
    summarise,
    summary_vs_paper,
)
from deconflict.models import DRMGFToy, toy_objective, toy_task_optima

F_STAR = 8 * math.sqrt(2)


def settings(**overrides):
    base = dict(methods=(ToyMethod("equal", "Joint"),), steps=200, n_inits=2, lr=0.01)
    return ToySettings(**{**base, **overrides})


def test_equation_a1_task_parameters():
    init = {
        "w1": [1.0, 2.0],
        "w2": [3.0, -1.0],
        "a1": [2.0, -1.0],
        "b1": [0.5, 0.0],
        "a2": [-1.0, 1.0],
        "b2": [1.0, 2.0],
    }
    outputs = DRMGFToy(init)(None)
    torch.testing.assert_close(outputs["task1"], torch.tensor([2 + 1.5, -2 + 0.0], dtype=torch.float64))
    torch.testing.assert_close(outputs["task2"], torch.tensor([-1 + 3, 2 - 2], dtype=torch.float64))
    model = DRMGFToy(init)
    assert [p.shape for p in model.shared_parameters()] == [(2,), (2,)]
    assert [[p.shape for p in group] for group in model.task_parameters()] == [[(2,), (2,)]] * 2


def test_sign_abs_has_the_gradient_of_the_identity():
    model = DRMGFToy({"a1": [-2.0, 3.0]})
    model(None)["task1"].sum().backward()
    torch.testing.assert_close(model.a1.grad, model.w1.detach())


def test_equation_a2_objective():
    optimum1, optimum2 = toy_task_optima(8.0)
    torch.testing.assert_close(optimum1, torch.tensor([-8.0, -8.0], dtype=torch.float64))
    losses = toy_objective({"task1": optimum1, "task2": optimum2})
    torch.testing.assert_close(losses, torch.full((2,), F_STAR, dtype=torch.float64))  # both at their minimum
    inside = toy_objective({"task1": optimum1 + torch.tensor([1.0, 1.0], dtype=torch.float64), "task2": optimum2})
    assert inside[0].item() == pytest.approx(F_STAR + 0.4 * 2)  # r² = 2 < c1√2: only the c2 term
    outside = toy_objective({"task1": torch.zeros(2, dtype=torch.float64), "task2": optimum2})
    assert outside[0].item() == pytest.approx(128 * 1.4)  # r² = 128 > c1√2
    with pytest.raises(InvalidHyperparameterError):
        toy_objective({"task1": optimum1, "task2": optimum2}, c2=0.0)


def test_bad_toy_weights():
    with pytest.raises(InvalidHyperparameterError, match="unknown toy weights"):
        DRMGFToy({"c1": [1.0, 1.0]})
    with pytest.raises(ShapeError, match="2 entries"):
        DRMGFToy({"w1": [1.0]})


def test_inits_are_seeded_and_in_range():
    first, again, other = sample_inits(3, 0), sample_inits(3, 0), sample_inits(3, 1)
    assert first == again and first != other
    values = torch.tensor([v for init in first for v in init.values()])
    assert values.min() >= -1 and values.max() < 1


def test_joint_training_reaches_both_optima():
    frame, fallbacks = run_toy(ToyMethod("equal", "Joint"), sample_inits(1, 0)[0], settings())
    assert len(frame) == 201 and fallbacks == 0
    final = frame.iloc[-1]
    assert final["f1"] == pytest.approx(F_STAR, abs=1e-6) and final["f2"] == pytest.approx(F_STAR, abs=1e-6)
    assert frame.iloc[0]["f1"] > 100  # it really started far away


def test_a_killed_toy_run_resumes_to_the_same_trajectory(tmp_path, monkeypatch):
    init = sample_inits(1, 3)[0]
    method = ToyMethod("pcgrad", "PCGrad")
    uninterrupted, _ = run_toy(method, init, settings())
    from deconflict.train import Trainer

    original = Trainer.train_step
    calls = {"n": 0}

    def dying_step(self, batch):
        calls["n"] += 1
        if calls["n"] == 150:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        run_toy(method, init, settings(), run_dir=tmp_path)
    monkeypatch.setattr(Trainer, "train_step", original)
    resumed, _ = run_toy(method, init, settings(), run_dir=tmp_path)
    pd.testing.assert_frame_equal(resumed, uninterrupted)


def test_settings_from_params_check_names_and_keys():
    good = {"methods": [{"name": "PCGrad"}], "steps": 10, "n_inits": 1, "lr": 0.1}
    assert ToySettings.from_params(good, seed=0).methods[0].name == "pcgrad"
    with pytest.raises(UnknownMethodError, match="unknown method 'pcgard'; valid names"):
        ToySettings.from_params({**good, "methods": [{"name": "pcgard"}]}, seed=0)
    with pytest.raises(InvalidHyperparameterError, match="cagrad: c must be"):
        ToySettings.from_params({**good, "methods": [{"name": "cagrad", "hparams": {"c": -1}}]}, seed=0)
    with pytest.raises(ConfigError, match="unknown toy parameter"):
        ToySettings.from_params({**good, "learning_rate": 0.1}, seed=0)
    with pytest.raises(ConfigError, match="missing"):
        ToySettings.from_params({"methods": []}, seed=0)


def test_summary_and_paper_table():
    toy = settings(methods=(ToyMethod("equal", "Joint"), ToyMethod("nash_mtl", "Nash-MTL")), steps=100, n_inits=1)
    frames, fallbacks = [], {}
    for method in toy.methods:
        frame, count = run_toy(method, sample_inits(1, 0)[0], toy)
        frames.append(frame)
        fallbacks[method.label] = count
    summary = summarise(pd.concat(frames), fallbacks, toy, ["Joint", "Nash-MTL"])
    assert list(summary["method"]) == ["Joint", "Nash-MTL"]
    assert bool(summary.loc[0, "reaches_both_optima"])
    reference = pd.DataFrame(
        {"row": ["Nash-MTL", "DR-MGF"], "column": "reaches both optima", "kind": "claim", "value": ["False", "True"]}
    )
    table = summary_vs_paper(summary, reference, F_STAR)
    assert list(table["Method"]) == ["Joint", "Nash-MTL", "DR-MGF"]
    assert table.loc[0, "Paper: reaches both optima"] == "not stated"
    assert table.loc[1, "Paper: reaches both optima"] == "no"
    assert table.loc[2, "Reproduced: reaches both optima"] == "not run in this comparison"


def test_drmgf_runs_on_the_toy_and_reaches_both_optima_given_the_steps():
    """DR-MGF's claim of Fig. 3, on our reading of the toy: from one start, 1,000 steps (the full profile's)."""
    drmgf = ToyMethod.from_params(
        {
            "name": "drmgf",
            "label": "DR-MGF",
            "hparams": {"epoch_steps": 10, "nu_optimizer": {"name": "sgd", "lr": 1e-2}},
        }
    )
    toy = settings(methods=(drmgf,), steps=1000, n_inits=1)
    frame, fallbacks = run_toy(drmgf, sample_inits(1, 0)[0], toy)
    assert list(frame["step"][:3]) == [0, 10, 20]  # recorded after every epoch (10 fusion steps)
    summary = summarise(frame, {"DR-MGF": fallbacks}, toy, ["DR-MGF"])
    assert bool(summary.loc[0, "reaches_both_optima"])
    with pytest.raises(ConfigError, match="epoch_steps"):
        ToyMethod.from_params({"name": "drmgf", "label": "DR-MGF"})
