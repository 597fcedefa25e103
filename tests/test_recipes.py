"""CONTRIBUTING.md's recipes are true: a method, a task, a dataset, a model, a family and a table
registered from outside the library (a plugin module named in the root params) run through the
pipeline's own stages — the run plan, the synthetic data, training, the table's notebook, the index."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from deconflict.experiments.reference import REFERENCE_COLUMNS

REPO = Path(__file__).resolve().parents[1]

PLUGIN = textwrap.dedent('''
    """A user's own components, registered from outside deconflict."""
    from pathlib import Path

    import numpy as np
    import torch
    from torch import nn

    from deconflict import data, models, optim, tasks
    from deconflict.experiments.families import Family, register_family


    class MeanSquaredError:
        """The accumulating metric of the scalar task (update per batch, compute once)."""

        def __init__(self):
            self.total, self.count = 0.0, 0

        def update(self, prediction, target):
            self.total += float(((prediction - target) ** 2).sum())
            self.count += target.numel()

        def compute(self):
            return {"mse": self.total / self.count}


    class Scalar(tasks.Task):
        """Regression of one number: a new kind of task."""

        kind = "toy_scalar"
        metrics = (tasks.MetricColumn("mse", False),)
        reductions = ("global",)
        target_channels = 1

        def loss(self, prediction, target):
            return ((prediction - target) ** 2).mean()

        def metric(self, reduction="global"):
            return MeanSquaredError()


    tasks.TASKS.add(Scalar.kind, Scalar)


    @data.register
    class ToyRegression(data.MultiTaskDataset):
        """x.npy (N×4) and y.npy (N×2) per split: two linear tasks of the same inputs."""

        name = "toyreg"

        @classmethod
        def tasks(cls):
            return Scalar(name="a"), Scalar(name="b")

        def __init__(self, root, split, augment=False, seed=None):
            folder = Path(root) / split
            if not (folder / "x.npy").is_file():
                raise data.DatasetError(f"toyreg: {folder}/x.npy is missing")
            self.x = torch.from_numpy(np.load(folder / "x.npy")).float()
            self.y = torch.from_numpy(np.load(folder / "y.npy")).float()

        def __len__(self):
            return len(self.x)

        def __getitem__(self, index):
            return self.x[index], {"a": self.y[index, :1], "b": self.y[index, 1:]}

        @classmethod
        def write_synthetic(cls, root, seed=0, train=64, val=32):
            rng = np.random.default_rng(seed)
            mixing = rng.normal(size=(4, 2))
            for split, count in (("train", train), ("val", val)):
                x = rng.normal(size=(count, 4))
                (Path(root) / split).mkdir(parents=True, exist_ok=True)
                np.save(Path(root) / split / "x.npy", x)
                np.save(Path(root) / split / "y.npy", np.tanh(x @ mixing))
            return Path(root)


    @models.register("toy_mlp")
    class ToyMLP(models.MultiTaskModel):
        def __init__(self, tasks, hidden=8):
            super().__init__()
            self.set_tasks(tasks)
            self.trunk = nn.Sequential(nn.Linear(4, hidden), nn.Tanh())
            self.heads = nn.ModuleDict({t.name: nn.Linear(hidden, t.channels) for t in self.tasks})

        def encode(self, inputs):
            return self.trunk(inputs)

        def decode(self, representation):
            return {t.name: t.output(self.heads[t.name](representation)) for t in self.tasks}

        def shared_parameters(self):
            return list(self.trunk.parameters())

        def task_parameters(self):
            return [list(self.heads[t.name].parameters()) for t in self.tasks]


    @optim.register()
    class ToyMean(optim.Aggregator):
        """The mean of the task gradients (a toy, registered from outside: Eq. none)."""

        name = "toy_mean"
        paper = "nobody"
        equation = "d = mean_t g_t"

        def aggregate(self, jacobian, context):
            return jacobian.mean(0)


    register_family(Family(name="toy", datasets=("toyreg",), models=("toy_mlp",), default_lr=0.05))
''')

PIPELINE_PARAMS = {
    "synthetic": {"seed": 0, "datasets": {"toyreg": {"train": 64, "val": 32}}},
    "training": {
        "toy": {
            "batch_size": {"toyreg": 16},
            "optimizer": {"name": "sgd"},
            "augment": False,
            "smoke": {"data_dir": "data/synthetic", "epochs": 3, "last_k": 1},
        }
    },
}

PAPER_PARAMS = {
    "evaluation": {},
    "tables": {
        "table1_toy": {
            "kind": "run_table",
            "title": "Toy table",
            "reference": "reference/table1_toy.csv",
            "input": "../../pipelines/runs",
            "dataset": "toyreg",
            "run": {"model": "toy_mlp"},
            "baseline": "Joint",
            "delta_m": {"convention": "flat", "printed": "degradation"},
            "last_k": 1,
            "columns": {"MSE a": {"task": "a", "metric": "mse"}, "MSE b": {"task": "b", "metric": "mse"}},
            "rows": {"Joint": {}, "Toy mean": {"method": "toy_mean"}, "Ours": {"later": "not written yet"}},
        }
    },
}

REFERENCE = (
    ",".join(REFERENCE_COLUMNS)
    + """
Table 1,Joint,Joint,MSE a,a,0.50,2,,False,,metric,1,
Table 1,Joint,Joint,MSE b,b,0.40,2,,False,,metric,1,
Table 1,Toy mean,Toy mean,MSE a,a,0.45,2,,False,,metric,2,
Table 1,Toy mean,Toy mean,MSE b,b,0.40,2,,False,,metric,2,
Table 1,Toy mean,Toy mean,Δm% ↓,all,-5.00,2,,True,,derived,2,
Table 1,Ours,Ours,MSE a,a,0.30,2,,False,,metric,3,
Table 1,Ours,Ours,MSE b,b,0.30,2,,False,,metric,3,
"""
)


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
    root = tmp_path_factory.mktemp("user_repo")
    (root / ".dvc").mkdir()
    (root / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "profile": "smoke",
                "device": "cpu",
                "data_root": "data",
                "seeds": {"smoke": [0], "full": [0]},
                "plugins": ["toyplugin"],
            }
        )
    )
    (root / "toyplugin.py").write_text(PLUGIN)
    (root / "pipelines").mkdir()
    (root / "pipelines" / "params.yaml").write_text(yaml.safe_dump(PIPELINE_PARAMS))
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
