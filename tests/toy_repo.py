"""A user's repository for the tests: a plugin module that registers a task, a dataset, a model, a
method and a family from outside deconflict, the pipeline's params for them, and a paper with a table."""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

from deconflict.experiments.reference import REFERENCE_COLUMNS

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


def write_user_repo(root: Path, pipelines: dict | None = None) -> Path:
    """The plugin, root params (profile smoke, the plugin listed) and pipelines/params.yaml under ``root``."""
    (root / ".dvc").mkdir(parents=True, exist_ok=True)
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
    (root / "pipelines").mkdir(exist_ok=True)
    (root / "pipelines" / "params.yaml").write_text(yaml.safe_dump(pipelines or PIPELINE_PARAMS))
    return root
