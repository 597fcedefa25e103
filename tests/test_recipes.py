"""CONTRIBUTING.md's recipes are true: a method, a task, a dataset, a model, a family and a table
registered from outside the library (a plugin module named in the root params) run through the
pipeline's own stages — the run plan, the synthetic data, training, the table's notebook, the index."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from tests.toy_repo import PAPER_PARAMS, PIPELINE_PARAMS, REFERENCE, write_user_repo

REPO = Path(__file__).resolve().parents[1]


def notebook() -> nbformat.NotebookNode:
    cells = [
        nbformat.v4.new_markdown_cell("# Toy table\n\nA user's table, rendered by the project's stage."),
        nbformat.v4.new_code_cell(
            'profile = "smoke"\nparams_file = "../params.yaml"\ntable_id = "table1_toy"\n'
            "out_dir = None\nmetrics_path = None\nplots_path = None"
        ),
        nbformat.v4.new_code_cell(
            "from deconflict.reporting import open_report\n\nreport = open_report(params_file, "
            "table_id, profile=profile, out_dir=out_dir,\n    metrics_path=metrics_path, "
            "plots_path=plots_path)"
        ),
        nbformat.v4.new_code_cell("report.rows()"),
        nbformat.v4.new_code_cell("report.table()"),
        nbformat.v4.new_code_cell("report.curves()"),
        nbformat.v4.new_code_cell("report.close()"),
    ]
    cells[1].metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "deconflict", "display_name": "deconflict", "language": "python"}
    return nb


def stage(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / script), *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{script}: {result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def user_repo(tmp_path_factory) -> Path:
    root = write_user_repo(tmp_path_factory.mktemp("user_repo"))
    paper = root / "papers" / "toypaper"
    for folder in ("reference", "notebooks"):
        (paper / folder).mkdir(parents=True)
    (paper / "params.yaml").write_text(yaml.safe_dump(PAPER_PARAMS, allow_unicode=True, sort_keys=False))
    (paper / "reference" / "table1_toy.csv").write_text(REFERENCE)
    nbformat.write(notebook(), paper / "notebooks" / "table1_toy.ipynb")
    return root


def test_a_users_method_model_dataset_family_and_table_run_through_the_pipeline(user_repo):
    root, paper = user_repo, user_repo / "papers" / "toypaper"
    runs_file = root / "pipelines" / "runs.yaml"
    stage("plan_runs.py", "--papers", str(root / "papers"), "--runs", str(runs_file), "--write", cwd=root)
    runs = yaml.safe_load(runs_file.read_text())["runs"]
    assert set(runs) == {"toyreg-toymlp-equal", "toyreg-toymlp-toymean"}
    assert runs["toyreg-toymlp-toymean"] == {
        "family": "toy",
        "scan": "none",  # no Recon: the stage depends on the placeholder scan folder
        "dataset": "toyreg",
        "model": "toy_mlp",
        "method": "toy_mean",
    }

    stage(
        "synthetic_data.py",
        "--params",
        str(root / "pipelines" / "params.yaml"),
        "--out",
        str(root / "data" / "synthetic"),
        cwd=root,
    )
    assert (root / "data" / "synthetic" / "toyreg" / "train" / "x.npy").is_file()

    for name in runs:
        stage(
            "train.py",
            "--run",
            name,
            "--runs",
            str(runs_file),
            "--params",
            str(root / "pipelines" / "params.yaml"),
            "--out",
            str(root / "pipelines" / "runs" / name),
            "--work",
            str(root / "pipelines" / "work" / name),
            "--no-progress",
            cwd=root,
        )
        summary = json.loads((root / "pipelines" / "runs" / name / "summary.json").read_text())
        assert summary["family"] == "toy" and summary["epochs"] == 3
    metrics = pd.read_csv(root / "pipelines" / "runs" / "toyreg-toymlp-toymean" / "metrics.csv")
    test_mse = metrics[(metrics["split"] == "test") & (metrics["metric"] == "mse")]
    first, last = test_mse[test_mse["epoch"] == 1]["value"].sum(), test_mse[test_mse["epoch"] == 3]["value"].sum()
    assert last < first  # the user's method really trained the user's model

    stage(
        "render_notebook.py",
        str(paper / "notebooks" / "table1_toy.ipynb"),
        "--params",
        str(paper / "params.yaml"),
        "--table",
        "table1_toy",
        "--out",
        str(paper / "outputs" / "table1_toy"),
        "--executed",
        str(paper / "outputs" / "executed" / "table1_toy.ipynb"),
        "--metrics",
        str(paper / "metrics" / "table1_toy.json"),
        "--plots",
        str(paper / "plots" / "table1_toy.csv"),
        cwd=root,
    )
    headline = json.loads((paper / "metrics" / "table1_toy.json").read_text())
    assert set(headline) == {"Joint", "Toy mean"}  # the "later" row has no numbers
    assert set(headline["Toy mean"]) == {"MSE a", "MSE b", "Δm"} and headline["Toy mean"]["MSE a"] > 0
    table = pd.read_csv(paper / "outputs" / "table1_toy" / "table1_toy.csv", keep_default_na=False)
    assert list(table["row"]) == ["Joint", "Joint", "Toy mean", "Toy mean", "Ours", "Ours"]
    plot = pd.read_csv(paper / "plots" / "table1_toy.csv")
    assert set(plot["row"]) == {"Joint", "Toy mean"} and list(plot.columns) == ["x", "row", "series", "value"]

    stage("report.py", "--papers", str(root / "papers"), "--out", str(root / "papers"), cwd=root)
    assert "Toy table" in (root / "papers" / "index.md").read_text()


def test_a_plugin_that_cannot_be_imported_is_named(tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"profile": "smoke", "plugins": ["not_there"]}))
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "params.yaml").write_text(yaml.safe_dump(PIPELINE_PARAMS))
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "pipelines" / "synthetic_data.py"),
            "--params",
            str(tmp_path / "pipelines" / "params.yaml"),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "plugin 'not_there'" in result.stderr and "Traceback" not in result.stderr
