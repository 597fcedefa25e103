"""The task-priority paper's Figs. 3 and 4 from connection-strength runs: the loss-trend correlation by hand,
the priority shares of the committed runs, and a clear error for a run that recorded neither."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deconflict.errors import ConfigError
from deconflict.reporting import open_report
from deconflict.reporting.priority_figures import STRENGTH_HINT, loss_trends
from deconflict.reporting.run_tables import read_procedure

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "papers" / "task_priority" / "params.yaml"


def test_loss_trends_correlate_each_task_pair_over_the_last_window_steps():
    steps = pd.DataFrame(
        {
            "seed": 0,
            "epoch": [0, 0, 1, 1, 2, 2],
            "step": [1, 2, 3, 4, 5, 6],
            "a": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            "b": [2.0, 1.0, 4.0, 3.0, 6.0, 5.0],
        }
    )
    trends = loss_trends(steps, ["a", "b"], window=4)
    assert trends["x"].tolist() == [1, 2, 3] and np.isnan(trends["value"].iloc[0])  # 2 steps < window
    assert trends["value"].iloc[1] == pytest.approx(np.corrcoef([1, 2, 3, 4], [2, 1, 4, 3])[0, 1])
    assert trends["value"].iloc[2] == pytest.approx(np.corrcoef([3, 4, 5, 6], [4, 3, 6, 5])[0, 1])
    with pytest.raises(ConfigError, match="at least 3"):
        loss_trends(steps, ["a", "b"], window=2)


def test_a_run_without_connection_strength_has_no_priorities_to_draw():
    with pytest.raises(ConfigError, match="not a connection-strength run"):
        read_procedure(REPO / "pipelines" / "runs", "cityscapes-split-equal-lr5e-05", "priorities", STRENGTH_HINT)


def test_figs_3_and_4_read_every_epoch_of_the_phase_runs():
    report = open_report(PARAMS, "fig3_fig4_priority")
    shares = report.priorities()
    totals = shares.groupby(["row", "x"])["value"].sum()
    assert np.allclose(totals, 100.0)  # every output channel has one top-priority task
    assert set(shares["row"]) == {"Phase 1", "Phase 2", "Mixing (Ours)"}
    trends = report.trends()
    assert trends["value"].dropna().between(-1, 1).all() and trends["value"].notna().any()
    report.close()
