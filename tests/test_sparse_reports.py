"""Sparse training's tables about the mask (Tab. 4, Fig. 6, Fig. 5(b)): the share of trainable parameters
against the paper's printed numbers, the spread of each selection rule over the blocks, and Δm against
the share."""

from __future__ import annotations

from pathlib import Path

import pytest

from deconflict.experiments import RunSpec
from deconflict.experiments.tables import reproduce_table
from deconflict.methods import sparse
from deconflict.reporting import open_report
from deconflict.reporting.sparse_tables import block_shares, trainable_percent

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "papers" / "sparse_training" / "params.yaml"


def mtan(dataset: str, **sparse_options) -> RunSpec:
    return RunSpec.from_dict({"dataset": dataset, "model": "mtan", "sparse": sparse_options})


@pytest.mark.parametrize(
    "dataset, k, printed",
    [("nyuv2", 2000, 62.19), ("cityscapes", 3000, 76.02), ("cityscapes", 3500, 83.48)],  # Tab. 4, MTAN columns
)
def test_the_share_of_k_connections_per_neuron_is_the_papers_printed_share(dataset, k, printed):
    assert round(trainable_percent(mtan(dataset, k=k)), 2) == printed


@pytest.mark.parametrize("rule", ["psn", "reverse", "global", "random"])
def test_the_share_from_shapes_is_the_share_of_the_mask_every_rule_selects(rule):
    run = mtan("nyuv2", k=40, rule=rule)
    model = run.build_model(width=1 / 8)
    masks = sparse.select(model, k=40, rule=rule)
    assert trainable_percent(run, {"width": 1 / 8}) == pytest.approx(sparse.trainable_fraction(model, masks), abs=1e-9)


def test_random_keeps_the_same_share_of_every_block_and_k_per_neuron_does_not():
    run = mtan("nyuv2", k=40)
    rules = {"Ours": "psn", "Random": "random", "Global": "global"}
    shares = block_shares(run, rules, r"(encoder|decoder)_\w+\.(\d)\.", model_options={"width": 1 / 8})
    table = shares.pivot(index="block", columns="row", values="value")
    assert len(table) == 10  # MTAN: five encoder and five decoder stages
    assert table["Random"].max() - table["Random"].min() < 5
    assert table["Ours"].max() - table["Ours"].min() > 40  # K per neuron: uneven when the fan-in grows with depth


def test_table4_flags_exactly_the_cells_no_k_reproduces():
    report = open_report(PARAMS, "table4_trainable_share")
    differences = report.differences()
    # MGDA / IMTL-G w/ ST on CityScapes print NYU-v2's 62.19 %; the runs keep K = 2000 (59.41 %)
    assert sorted(differences["row"]) == ["IMTL-G w/ ST", "MGDA w/ ST"]
    assert set(differences["column"]) == {"CityScapes"} and set(differences["printed"]) == {62.19}
    shown = report.table()
    assert (shown[(shown["row"] == "Joint Train w/ ST") & (shown["source"] == "computed")]["NYU-v2"] == "62.19").all()
    report.close()


def test_fig5b_draws_each_rows_delta_m_at_its_share_of_trainable_parameters():
    report = open_report(PARAMS, "fig5b_trainable_sweep")
    points = report.points().set_index("row")
    assert points.at["Joint Train", "x"] == 100.0  # no mask: every parameter trains
    shares = points.drop("Joint Train")["x"]
    assert shares.is_monotonic_increasing and round(shares["K = 2000"], 2) == 62.19  # more K, more trainable
    headlines = report._headlines(
        reproduce_table(report.spec, report.runs_dir, report.profile, report.reference)
    )  # the Δm the table shows
    assert all(points.at[row, "value"] == headlines[row]["Δm"] for row in points.index)
    report.close()
