"""DR-MGF's figures from the runs: Fig. 14(a)'s relative degradation by hand, Fig. 5's Pearson r of C and G,
Fig. 13(b)'s loss curves and Fig. 1(b)'s scatter of Table 6's rows (``like:``), and rows the paper does not
print (``extra:``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from deconflict.config import paper_tables
from deconflict.errors import ConfigError
from deconflict.experiments.tables import load_run_table
from deconflict.reporting import open_report
from deconflict.reporting.drmgf_figures import relative_degradation
from deconflict.tasks import resolve

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "papers" / "drmgf" / "params.yaml"


def test_relative_degradation_is_signed_by_each_metrics_direction():
    tasks = resolve({"segmentation": 13, "depth": 1})
    seg, depth = (task.headline.key for task in tasks)
    pruning = pd.DataFrame(
        {
            "pruned": ["segmentation", "segmentation", "depth", "depth"],
            "task": ["segmentation", "depth", "segmentation", "depth"],
            "metric": [seg, depth, seg, depth],
            "reduction": ["global"] * 4,
            "value": [0.30, 1.1, 0.38, 2.0],
            "unpruned": [0.40, 1.0, 0.40, 1.0],
        }
    )
    out = relative_degradation(pruning, tasks).set_index(["pruned", "task"])["value"]
    assert out[("segmentation", "segmentation")] == pytest.approx(25.0)  # mIoU 0.40 → 0.30: 25 % worse
    assert out[("segmentation", "depth")] == pytest.approx(10.0)  # error 1.0 → 1.1: 10 % worse
    assert out[("depth", "depth")] == pytest.approx(100.0)
    assert out[("depth", "segmentation")] == pytest.approx(5.0)


def test_a_like_table_takes_the_other_tables_fields_and_keeps_its_own():
    tables = paper_tables(PARAMS)
    scatter, table6 = tables["fig1b_scatter"], tables["table6_nyuv2"]
    assert scatter["kind"] == "run_scatter" and scatter["rows"] == table6["rows"]
    assert scatter["title"] != table6["title"]


def test_a_like_table_must_name_a_table_and_give_its_own_inputs(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"tables": {"a": {"kind": "run_table"}, "b": {"kind": "x", "like": "c"}}}))
    with pytest.raises(ConfigError, match="must name another table"):
        paper_tables(params)
    params.write_text(yaml.safe_dump({"tables": {"a": {"kind": "run_table"}, "b": {"kind": "x", "like": "a"}}}))
    with pytest.raises(ConfigError, match="gives its own"):
        paper_tables(params)


def test_an_extra_row_needs_no_printed_numbers_and_says_why():
    table = load_run_table(PARAMS, "table6_nyuv2", paper_tables(PARAMS)["table6_nyuv2"], {})
    row = table.row("DR-MGF (official code)")
    assert row.status == "reproduced" and "official NYUv2 code" in row.reason
    assert row.runs[0].drmgf is not None


def test_fig_5_correlates_conflict_value_and_gain_of_every_row():
    report = open_report(PARAMS, "fig5_dense_conflict_gain")
    shown = report.table()
    points = report.points()
    for row in shown.itertuples(index=False):
        part = points[points["row"] == row.row]
        assert row[1] == pytest.approx(np.corrcoef(part["x"], part["value"])[0, 1])
        assert row[4] == len(part)
    assert (shown["Pearson r (whole shared part)"] < 0).all()  # G = g_i·g_j/‖g_i‖² falls as C rises
    report.close()


def test_fig_13b_and_14a_read_the_procedure_runs():
    losses = open_report(PARAMS, "fig13b_losses")
    shown = losses.table()
    assert list(shown.index) == ["SGD", "Meta-GF", "DR-avgF", "DR-MGF"]
    assert set(shown.columns) == {"segmentation", "depth", "normal", "lowest on"}
    losses.close()
    pruning = open_report(PARAMS, "fig14a_pruning")
    table = pruning.table()
    assert set(table["pruned"]) == {"segmentation", "depth", "normal"}
    assert table["% connections"].between(0, 100).all()
    pruning.close()
