"""Conflict instruments on hand-computable gradients, their histories, and the training monitor."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from deconflict.analysis import (
    conflict_fraction,
    cosine_matrix,
    drmgf_conflict_value,
    drmgf_convergence_gain,
    feature_disentanglement_entropy,
    filter_index,
    gradient_direction_similarity,
    gradient_magnitude_similarity,
)
from deconflict.analysis.histories import (
    RECON_BINS,
    bin_labels,
    cosine_distribution,
    incidence_of_conflict,
    loss_trend_correlation,
    ranking_distance,
    ranking_similarity,
    s_conflict_ranking,
    s_conflict_scores,
    tail_reduction,
)
from deconflict.errors import ConfigError, ShapeError
from deconflict.train import Callback, GradientMonitor, TrainConfig, Trainer, seed_everything
from tests.architectures import ConvBNMultiTask, regression_losses
from tests.optim.test_every_method_trains import image_batches

ORTHOGONAL = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
IDENTICAL = torch.tensor([[1.0, 2.0], [2.0, 4.0]])
OPPOSITE = torch.tensor([[1.0, 2.0], [-1.0, -2.0]])


def test_cosines_of_orthogonal_identical_opposite_and_zero_gradients():
    assert cosine_matrix(ORTHOGONAL)[0, 1] == pytest.approx(0.0)
    assert cosine_matrix(IDENTICAL)[0, 1] == pytest.approx(1.0)
    assert cosine_matrix(OPPOSITE)[0, 1] == pytest.approx(-1.0)
    assert cosine_matrix(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))[0, 1] == 0.0


def test_gds_gms_and_conflict_fraction():
    assert gradient_direction_similarity(OPPOSITE) == pytest.approx(-1.0)
    assert gradient_magnitude_similarity(OPPOSITE) == pytest.approx(1.0)  # equal norms
    assert gradient_magnitude_similarity(IDENTICAL) == pytest.approx(2 * 1 * 2 / (1 + 4))  # norms √5, 2√5
    three = torch.tensor([[1.0, 0.0], [-1.0, 0.1], [0.0, 1.0]])
    assert conflict_fraction(three) == pytest.approx(1 / 3)
    with pytest.raises(ShapeError, match="at least two tasks"):
        gradient_direction_similarity(torch.ones(1, 3))


def test_drmgf_conflict_value_and_gain():
    g1, g2 = torch.tensor([1.0, 2.0, -1.0]), torch.tensor([-1.0, 1.0, 1.0])
    # per filter −g1 g2 / ‖g1‖² = (1, −2, 1)/6 → C = 2/6; G = g1·g2/‖g1‖² = (−1 + 2 − 1)/6 = 0
    assert drmgf_conflict_value(g1, g2) == pytest.approx(2 / 6)
    assert drmgf_convergence_gain(g1, g2) == pytest.approx(0.0)
    assert drmgf_conflict_value(g1, g1) == 0.0 and drmgf_convergence_gain(g1, g1) == pytest.approx(1.0)
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):  # C ≥ −G always (Σ max(0, −x) ≥ −Σ x)
        a, b = torch.randn(7, generator=generator), torch.randn(7, generator=generator)
        assert drmgf_conflict_value(a, b) >= -drmgf_convergence_gain(a, b) - 1e-12


def test_drmgf_conflict_value_sums_over_filters_as_printed():
    """Eq. (2): C = Σ_f max(0, −g_{1,f}ᵀ g_{2,f}) / ‖g_1‖² over filters, not over single entries."""
    # two filters of two entries: filter 0 has entry products (−1, +2) → inner +1 (no conflict),
    # filter 1 has (−3, 0) → inner −3 (conflict 3); ‖g1‖² = 1 + 4 + 9 + 0 = 14
    g1, g2 = torch.tensor([1.0, 2.0, 3.0, 0.0]), torch.tensor([-1.0, 1.0, -1.0, 5.0])
    filters = torch.tensor([0, 0, 1, 1])
    assert drmgf_conflict_value(g1, g2, filters) == pytest.approx(3 / 14)
    assert drmgf_conflict_value(g1, g2) == pytest.approx((1 + 3) / 14)  # per coordinate: the upper bound
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        a, b = torch.randn(12, generator=generator), torch.randn(12, generator=generator)
        ids = torch.randint(0, 4, (12,), generator=generator)
        assert drmgf_conflict_value(a, b, ids) <= drmgf_conflict_value(a, b) + 1e-12


def test_filter_index_groups_each_output_channel_of_a_module():
    shapes = [
        ("conv.weight", (2, 3, 1, 1)),
        ("conv.bias", (2,)),
        ("bn.weight", (2,)),
        ("bn.bias", (2,)),
        ("units.0", (3, 3)),
    ]
    ids = filter_index(shapes)
    assert ids.tolist() == [0, 0, 0, 1, 1, 1, 0, 1, 2, 3, 2, 3, 4, 4, 4, 5, 5, 5, 6, 6, 6]


def test_the_monitor_measures_eq2_per_filter():
    from deconflict.train import GradientMonitor, TrainConfig, Trainer
    from tests.architectures import ConvBNMultiTask, regression_losses

    torch.manual_seed(0)
    images, targets = torch.randn(4, 3, 6, 6), torch.randn(4, 2)
    values = {}
    for form in ("filter", "coordinate"):
        torch.manual_seed(0)
        model = ConvBNMultiTask(2)
        monitor = GradientMonitor(every=1, conflict_value=form, per_layer=False)
        trainer = Trainer(
            model,
            regression_losses,
            torch.optim.SGD(model.parameters(), lr=0.0),
            callbacks=[monitor],
            config=TrainConfig(epochs=1, progress=False),
        )
        trainer.fit([(images, targets)])
        values[form] = float(monitor.pairs()["conflict_value_ij"].iloc[0])
        jac = torch.stack(
            [
                torch.cat(
                    [g.flatten() for g in torch.autograd.grad(loss, model.shared_parameters(), retain_graph=True)]
                )
                for loss in regression_losses(model(images), targets)
            ]
        )
        names = {id(p): n for n, p in model.named_parameters()}
        ids = (
            filter_index([(names[id(p)], tuple(p.shape)) for p in model.shared_parameters()])
            if form == "filter"
            else None
        )
        assert values[form] == pytest.approx(drmgf_conflict_value(jac[0], jac[1], ids), rel=1e-9)
    assert values["filter"] <= values["coordinate"]
    with pytest.raises(Exception, match="conflict_value must be"):
        GradientMonitor(conflict_value="layer")


def test_first_order_gain_matches_the_measured_loss_change():
    """Eq. (3) measured with a small step on two quadratic tasks agrees with g1·g2/‖g1‖²."""
    w0 = torch.tensor([0.3, -0.2], dtype=torch.float64)
    f1 = lambda w: ((w - torch.tensor([1.0, 0.0], dtype=torch.float64)) ** 2).sum()  # noqa: E731
    f2 = lambda w: ((w - torch.tensor([-1.0, 0.5], dtype=torch.float64)) ** 2).sum()  # noqa: E731
    g1 = torch.func.grad(f1)(w0)
    g2 = torch.func.grad(f2)(w0)
    eps = 1e-6
    measured = ((f1(w0 - eps * (g1 + g2)) - f1(w0)) - (f1(w0 - eps * g1) - f1(w0))) / (f1(w0 - eps * g1) - f1(w0))
    assert drmgf_convergence_gain(g1, g2) == pytest.approx(float(measured), rel=1e-4)


def test_feature_disentanglement_entropy():
    disjoint = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]])
    assert feature_disentanglement_entropy(disjoint) == pytest.approx(0.0)
    shared = torch.tensor([[1.0, -2.0], [1.0, 2.0], [-1.0, 2.0]])
    assert feature_disentanglement_entropy(shared) == pytest.approx(math.log(3))
    with pytest.raises(ShapeError, match="no feature"):
        feature_disentanglement_entropy(torch.zeros(2, 3))


def test_recon_bins_distribution_and_reduction():
    edges = RECON_BINS["table6"]["edges"]
    assert bin_labels(edges) == ["[1.0, 0)", "(0, -0.01]", "(-0.01, -0.02]", "(-0.02, -0.03]", "(-0.03, -1.0]"]
    cosines = [0.5, 0.0, -0.005, -0.01, -0.015, -0.5, 1.0, -1.0]
    distribution = cosine_distribution(cosines, edges)
    # 0.5 and 1.0 → first bin; 0.0 → no bin; −0.005 and −0.01 → (0, −0.01]; −0.015 → next; −0.5, −1 → last
    assert distribution.tolist() == pytest.approx([25.0, 25.0, 12.5, 0.0, 25.0])
    baseline = pd.Series([50, 10, 20, 10, 10], index=bin_labels(edges), dtype=float)
    method = pd.Series([60, 20, 10, 5, 5], index=bin_labels(edges), dtype=float)
    # tail below −0.01: the last three bins, 40 → 20
    assert tail_reduction(baseline, method, edges, RECON_BINS["table6"]["tail"]) == pytest.approx(50.0)
    untouched = pd.Series([90, 10, 0, 0, 0], index=bin_labels(edges), dtype=float)  # no baseline cosine below −0.01
    with pytest.raises(ShapeError, match="no mass in the tail"):
        tail_reduction(untouched, method, edges, RECON_BINS["table6"]["tail"])


def test_s_conflict_scores_rankings_and_distance():
    pairs = pd.DataFrame({"layer": ["a", "a", "b", "b", "c", "c"], "cosine": [-0.2, 0.1, -0.05, -0.3, -0.5, -0.4]})
    scores = s_conflict_scores(pairs, threshold=-0.1)
    assert scores.to_dict() == {"a": 1, "b": 1, "c": 2}
    assert s_conflict_ranking(scores) == ["c", "a", "b"]
    assert ranking_distance(["c", "a", "b"], ["a", "b", "c"]) == pytest.approx((2 + 1 + 1) / 3)
    with pytest.raises(ShapeError):
        s_conflict_scores(pairs, threshold=0.2)


def test_incidence_of_conflict_over_all_and_last_half():
    summary = pd.DataFrame({"epoch": [0, 0, 1, 1], "conflict_fraction": [0.0, 1 / 3, 2 / 3, 1.0]})
    assert incidence_of_conflict(summary) == pytest.approx(50.0)
    assert incidence_of_conflict(summary, last_fraction=0.5) == pytest.approx(100 * 5 / 6)


def test_ranking_similarity():
    assert ranking_similarity([1, 2, 3], [10, 20, 30]) == 1.0
    assert ranking_similarity([1, 2, 3], [30, 20, 10], fold=False) == 0.0
    assert ranking_similarity([1, 2, 3], [30, 20, 10]) == 1.0  # folded: the negated indicator predicts as well
    assert ranking_similarity([1, 2, 3, 4], [1, 3, 2, 4], fold=False) == pytest.approx(10 / 12)


def test_loss_trend_correlation():
    losses = pd.DataFrame({"a": [4.0, 3.0, 2.0, 1.0], "b": [8.0, 6.0, 4.0, 2.0], "c": [1.0, 2.0, 3.0, 4.0]})
    correlation = loss_trend_correlation(losses)
    assert correlation.loc["a", "b"] == pytest.approx(1.0) and correlation.loc["a", "c"] == pytest.approx(-1.0)


# -- the monitor ---------------------------------------------------------------------------------
def train(callbacks=(), aggregator=None, epochs=2):
    seed_everything(0)
    model = ConvBNMultiTask(3, channels=5)
    trainer = Trainer(
        model,
        regression_losses,
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        aggregator,
        config=TrainConfig(epochs=epochs, progress=False),
        callbacks=list(callbacks),
    )
    trainer.fit(image_batches())
    return trainer


@pytest.mark.parametrize("aggregator", [None, "pcgrad"])
def test_monitoring_does_not_change_training(aggregator):
    plain = train(aggregator=aggregator)
    monitored = train([GradientMonitor(every=1, levels=("parameter", "feature"))], aggregator=aggregator)
    for (name, a), (_, b) in zip(plain.model.state_dict().items(), monitored.model.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("levels", [("parameter",), ("parameter", "feature")])
def test_the_monitor_reads_the_aggregators_jacobian_as_if_it_had_measured_it(levels, monkeypatch):
    """PCGrad with unit weights takes the monitor's gradients itself: the monitor reads them after the
    step (no second set of backward passes) and its tables are the ones it gets measuring alone."""
    from deconflict.train.update import AggregatedUpdate

    calls = []
    original = GradientMonitor.before_backward

    def counting(self, trainer, losses, representation):
        calls.append(trainer.rule.gives_task_jacobian(trainer))
        original(self, trainer, losses, representation)

    monkeypatch.setattr(GradientMonitor, "before_backward", counting)
    reading = GradientMonitor(every=2, levels=levels)
    train([reading], aggregator="pcgrad")
    assert calls and all(calls)
    monkeypatch.setattr(AggregatedUpdate, "gives_task_jacobian", lambda self, trainer: False)
    measuring = GradientMonitor(every=2, levels=levels)
    train([measuring], aggregator="pcgrad")
    assert len(reading.pairs()) == len(measuring.pairs()) > 0
    pd.testing.assert_frame_equal(reading.pairs(), measuring.pairs(), rtol=1e-12, atol=1e-15)
    pd.testing.assert_frame_equal(reading.summary(), measuring.summary(), rtol=1e-12, atol=1e-15)


def test_only_unit_weights_at_parameter_level_hand_the_jacobian_over():
    joint = train(epochs=1)
    assert not joint.rule.gives_task_jacobian(joint)  # joint training takes no Jacobian
    pcgrad = train(aggregator="pcgrad", epochs=1)
    assert pcgrad.rule.gives_task_jacobian(pcgrad)
    pcgrad.config.level = "feature"
    assert not pcgrad.rule.gives_task_jacobian(pcgrad)


def test_monitor_tables():
    monitor = GradientMonitor(every=4, levels=("parameter", "feature"))
    trainer = train([monitor], epochs=1)
    summary, pairs = monitor.summary(), monitor.pairs()
    # the whole shared part + every module of the trunk owning parameters (conv, BN, conv, BN)
    shared_modules = {
        name.rpartition(".")[0] for name, _ in trainer.model.named_parameters() if name.startswith("trunk")
    }
    layers = 1 + len(shared_modules)
    steps = 8 // 4
    assert len(summary) == steps * (layers + 1)  # + the representation at feature level
    assert len(pairs) == steps * (layers + 1) * 3  # three task pairs
    assert set(summary["level"]) == {"parameter", "feature"}
    assert summary["entropy"].notna().sum() == steps
    whole = pairs[pairs["layer"] == "(all shared)"]
    assert whole["cosine"].between(-1, 1).all() and (whole["norm_i"] > 0).all()


def test_monitor_costs_nothing_when_off_and_survives_resume(tmp_path):
    class Plain(Callback):
        pass

    trainer = train([Plain()], epochs=1)
    assert trainer._watchers == []
    monitor = GradientMonitor(every=2)
    seed_everything(0)
    model = ConvBNMultiTask(3, channels=5)
    first = Trainer(
        model,
        regression_losses,
        torch.optim.SGD(model.parameters(), lr=0.05),
        config=TrainConfig(epochs=1, progress=False),
        run_dir=tmp_path,
        callbacks=[monitor],
    )
    first.fit(image_batches())
    again = GradientMonitor(every=2)
    seed_everything(0)
    model = ConvBNMultiTask(3, channels=5)
    Trainer(
        model,
        regression_losses,
        torch.optim.SGD(model.parameters(), lr=0.05),
        config=TrainConfig(epochs=1, progress=False),
        run_dir=tmp_path,
        callbacks=[again],
    ).fit(image_batches())
    pd.testing.assert_frame_equal(again.summary(), monitor.summary())
    monitor.save(tmp_path / "tables")
    assert pd.read_csv(tmp_path / "tables" / "gradient_summary.csv").shape == monitor.summary().shape


def test_monitor_bad_configuration():
    with pytest.raises(ConfigError, match="every must be"):
        GradientMonitor(every=0)
    with pytest.raises(ConfigError, match="levels must be"):
        GradientMonitor(levels=("layer",))


def test_histogram_of_monitored_cosines_is_a_distribution():
    monitor = GradientMonitor(every=1, per_layer=False)
    train([monitor], epochs=1)
    cosines = monitor.pairs()["cosine"]
    distribution = cosine_distribution(cosines, RECON_BINS["table8"]["edges"])
    assert distribution.sum() == pytest.approx(100.0 * float((cosines != 0).mean()))
    assert np.all(distribution >= 0)


def test_monitor_pair_values_match_the_instrument_functions():
    monitor = GradientMonitor(every=3, per_layer=False)
    trainer = train([monitor], epochs=1)
    row = monitor.pairs().iloc[0]
    # recompute from the same step's gradients: rerun the model to step 3 is costly; instead check
    # the identities that tie the columns together
    assert row["conflict_value_ij"] >= -row["convergence_gain_ij"] - 1e-12
    assert row["conflict_value_ij"] * row["norm_i"] ** 2 == pytest.approx(row["conflict_value_ji"] * row["norm_j"] ** 2)
    assert row["convergence_gain_ij"] * row["norm_i"] ** 2 == pytest.approx(
        row["cosine"] * row["norm_i"] * row["norm_j"]
    )
    del trainer


def test_s_conflict_scores_from_the_monitor_table_use_each_layer():
    monitor = GradientMonitor(every=1)
    trainer = train([monitor], epochs=1)
    scores = s_conflict_scores(monitor.pairs(), threshold=0.0)
    modules = {name.rpartition(".")[0] for name, _ in trainer.model.named_parameters() if name.startswith("trunk")}
    assert set(scores.index) == modules
    assert scores.max() <= 8 * 3  # steps × pairs


def test_conflict_value_and_gain_are_anti_correlated_over_training():
    from deconflict.analysis.histories import conflict_gain_correlation

    monitor = GradientMonitor(every=1, per_layer=False)
    train([monitor], epochs=2)
    pairs = monitor.pairs()
    r = conflict_gain_correlation(pairs)
    c = np.concatenate([pairs["conflict_value_ij"], pairs["conflict_value_ji"]])
    g = np.concatenate([pairs["convergence_gain_ij"], pairs["convergence_gain_ji"]])
    assert r == pytest.approx(float(np.corrcoef(c, g)[0, 1]))
    assert r < 0  # more conflict, less gain (DR-MGF Fig. 5's finding, as C ≥ −G implies)
