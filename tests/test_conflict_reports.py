"""The conflict tables of Recon (Tables 8–9, Figs. 5, 6, 8, 9) and sparse training (Tabs. 6, 13, Figs. 8, 9,
12, 13) read the runs' conflict tables: checked on runs whose cosines are known."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from deconflict.analysis import WHOLE_SHARED
from deconflict.config import paper_tables
from deconflict.errors import ConfigError
from deconflict.experiments.tables import load_run_table
from deconflict.reporting import open_report
from deconflict.reporting.conflict_tables import ConflictDistributionReport, ConflictIncidenceReport

PAPERS = Path(__file__).resolve().parents[1] / "papers"


def report(cls, paper: str, table_id: str, runs: Path):
    params = PAPERS / paper / "params.yaml"
    section = {**paper_tables(params)[table_id], "input": str(runs)}
    return cls(params, table_id, section, profile="smoke")


def write_pairs(runs: Path, name: str, cosines: list[float], layer_noise: float = -0.9) -> None:
    rows = [
        {
            "step": s + 1,
            "epoch": 0,
            "level": "parameter",
            "layer": WHOLE_SHARED,
            "task_i": "a",
            "task_j": "b",
            "cosine": c,
        }
        for s, c in enumerate(cosines)
    ]
    # per-layer and feature-level rows must not count: give them a cosine that would change every share
    rows += [{**row, "layer": "backbone.x"} for row in rows[:2]] + [{**rows[0], "level": "feature", "layer": "z"}]
    for row in rows[-3:]:
        row["cosine"] = layer_noise
    (runs / name).mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(runs / name / "conflict_pairs.csv", index=False)


def test_recons_distribution_table_puts_the_runs_shares_beside_the_paper(tmp_path):
    spec = load_run_table(
        PAPERS / "recon" / "params.yaml",
        "table8_cityscapes",
        {k: v for k, v in paper_tables(PAPERS / "recon" / "params.yaml")["table8_cityscapes"].items() if k != "bins"},
        {},
    )
    one_per_bin = [0.5, -0.01, -0.03, -0.05, -0.07, -0.5]  # one cosine in each of Table 8's six bins
    for row in spec.rows:
        for run in row.runs:
            write_pairs(tmp_path, run.name, [0.5] * 6 if row.label == "Joint-train w/ Recon" else one_per_bin)
    table8 = report(ConflictDistributionReport, "recon", "table8_cityscapes", tmp_path)
    shares = table8.distributions()
    assert shares.loc["Joint-train", "[1.0, 0)"] == pytest.approx(100 / 6)
    assert shares.loc["Joint-train", "(-0.08, -1.0]"] == pytest.approx(100 / 6)
    assert shares.loc["Joint-train w/ Recon", "[1.0, 0)"] == pytest.approx(100.0)
    assert shares.loc["Joint-train w/ Recon", "Reduction (%)"] == pytest.approx(100.0)  # no conflict left in the tail
    assert shares.loc["MGDA", "Reduction (%)"] == pytest.approx(0.0)
    assert pd.isna(shares.loc["Joint-train", "Reduction (%)"])
    shown = table8.table()
    paper = shown[(shown["row"] == "Joint-train") & (shown["source"] == "paper")].iloc[0]
    assert paper["[1.0, 0)"] == "59.55"  # the printed share, beside ours
    ours = shown[(shown["row"] == "Joint-train w/ Recon") & (shown["source"] == "reproduced")].iloc[0]
    assert ours["[1.0, 0)"] == "100.00" and ours["Reduction (%)"] == "100.00"
    assert table8.dvc["Joint-train"]["conflicting_percent"] == pytest.approx(5 * 100 / 6)
    table8.figure()


def write_summary(runs: Path, name: str, per_epoch: list[float]) -> None:
    rows = [
        {"step": 4 * e + k + 1, "epoch": e, "level": "parameter", "layer": WHOLE_SHARED, "conflict_fraction": f}
        for e, f in enumerate(per_epoch)
        for k in range(2)
    ]
    rows += [{**rows[0], "layer": "backbone.x", "conflict_fraction": 1.0}]  # a layer's row: not counted
    (runs / name).mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(runs / name / "conflict_summary.csv", index=False)


def test_sparse_trainings_incidence_table_over_all_and_the_last_half_of_the_epochs(tmp_path):
    params = PAPERS / "sparse_training" / "params.yaml"
    section = {k: v for k, v in paper_tables(params)["table6_nyuv2_incidence"].items()}
    spec = load_run_table(params, "table6_nyuv2_incidence", section, {})
    for row in spec.rows:
        for run in row.runs:
            write_summary(tmp_path, run.name, [0, 0, 0.5, 0.5] if row.label.endswith("w/ ST") else [0.5, 0.5, 1, 1])
    table6 = report(ConflictIncidenceReport, "sparse_training", "table6_nyuv2_incidence", tmp_path)
    incidence = table6.incidence()
    assert incidence.loc["Joint Train", "All epochs"] == pytest.approx(75.0)
    assert incidence.loc["Joint Train", "Last 50% epochs"] == pytest.approx(100.0)
    assert incidence.loc["Joint Train w/ ST", "All epochs improvement"] == pytest.approx(50.0)
    assert incidence.loc["PCGrad w/ ST", "Last 50% epochs improvement"] == pytest.approx(50.0)
    assert pd.isna(incidence.loc["PCGrad", "All epochs improvement"])
    per_epoch = table6.per_epoch()
    assert per_epoch[per_epoch["row"] == "Joint Train"]["value"].tolist() == [50.0, 50.0, 100.0, 100.0]
    shown = table6.table()
    assert shown[(shown["row"] == "Joint Train") & (shown["source"] == "paper")].iloc[0]["All epochs"] == "36.01"
    table6.figure()


def test_a_run_without_conflict_tables_says_how_to_get_them(tmp_path):
    table6 = report(ConflictIncidenceReport, "sparse_training", "table6_nyuv2_incidence", tmp_path)
    with pytest.raises(ConfigError, match="dvc repro"):
        table6.incidence()
    with pytest.raises(ConfigError, match="bins must be one of"):
        params = PAPERS / "recon" / "params.yaml"
        ConflictDistributionReport(
            params, "table8_cityscapes", {**paper_tables(params)["table8_cityscapes"], "bins": "x"}, profile="smoke"
        )


def test_the_conflict_kinds_are_registered_for_the_papers_params():
    assert open_report(PAPERS / "recon" / "params.yaml", "fig5_cityscapes").kind == "conflict_distribution"
    assert (
        open_report(PAPERS / "sparse_training" / "params.yaml", "table13_cityscapes_incidence").kind
        == "conflict_incidence"
    )
