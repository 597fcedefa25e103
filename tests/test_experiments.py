"""The experiment core on the dense family: run definitions, the plan shared by the papers, training, resume,
learning, the tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from deconflict.data import NYUv2
from deconflict.errors import ConfigError, InvalidHyperparameterError, UnknownMethodError
from deconflict.experiments import RunSpec, TrainingSettings, load_reference, summarise_run, train_seed
from deconflict.experiments.tables import load_run_tables, paper_tables, parameter_count, plan_runs, reproduce_table
from deconflict.metrics import delta_m
from deconflict.train import Callback

REPO = Path(__file__).resolve().parents[1]
PAPER_PARAMS = sorted((REPO / "papers").glob("*/params.yaml"))


@pytest.fixture(scope="module")
def data_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("dense")
    NYUv2.write_synthetic(base / "nyuv2", seed=0, train=8, val=4, size=(32, 64))
    return base


def test_run_names_are_keys_of_what_defines_a_run():
    run = RunSpec.from_dict({"dataset": "nyuv2", "model": "mtan", "method": "cagrad", "hparams": {"c": 0.4}})
    assert run.name == "nyuv2-mtan-cagrad-c0p4"  # no dot: DVC params paths split on dots
    assert RunSpec.from_dict(run.to_dict()) == run
    assert (
        RunSpec.from_dict({"dataset": "cityscapes", "model": "split", "lr": 5e-5}).name
        == "cityscapes-split-equal-lr5e-05"
    )
    single = RunSpec.from_dict({"dataset": "nyuv2", "model": "single", "task": "depth"})
    assert single.name == "nyuv2-single-depth" and [(t.name, t.channels) for t in single.tasks] == [("depth", 1)]
    assert single.family.name == "dense" and single.learning_rate == 1e-4
    assert RunSpec.from_dict({"dataset": "nyuv2", "model": "mtan", "lr": 1e-4}) == RunSpec(
        "nyuv2", "mtan"
    )  # one spelling
    feature = RunSpec.from_dict({"dataset": "cityscapes", "model": "split", "method": "rotograd", "level": "feature"})
    assert feature.name == "cityscapes-split-rotograd-feature"
    lineage = RunSpec.from_dict(
        {
            "dataset": "nyuv2",
            "model": "mtan",
            "method": "nash_mtl",
            "shared": "all_but_heads",
            "head_gradients": "weighted",
        }
    )
    assert lineage.name == "nyuv2-mtan-nashmtl-allbutheads-headsweighted"


@pytest.mark.parametrize(
    "spec, error, message",
    [
        (
            {"dataset": "kitti", "model": "mtan"},
            ConfigError,
            "no experiment family trains on dataset 'kitti'.*cityscapes, nyuv2",
        ),
        ({"dataset": "nyuv2", "model": "unet"}, ConfigError, "single, split, mtan, cross_stitch"),
        ({"dataset": "nyuv2", "model": "single"}, ConfigError, "needs task"),
        ({"dataset": "cityscapes", "model": "single", "task": "normal"}, ConfigError, "no task 'normal'"),
        ({"dataset": "nyuv2", "model": "mtan", "method": "pcgrd"}, UnknownMethodError, "pcgrad"),
        (
            {"dataset": "nyuv2", "model": "mtan", "method": "cagrad", "hparams": {"c": -1}},
            InvalidHyperparameterError,
            "c must be",
        ),
        ({"dataset": "nyuv2", "model": "mtan", "lr": 2.0}, ConfigError, "lr"),
        ({"dataset": "nyuv2", "model": "split", "model_options": {"stitch": "matrix"}}, ConfigError, "no option"),
        ({"dataset": "nyuv2", "model": "split", "epochs": 3}, ConfigError, "unknown run setting"),
        (
            {"dataset": "nyuv2", "model": "mtan", "shared": "all"},
            ConfigError,
            "shared must be one of model, all_but_heads",
        ),
        (
            {"dataset": "nyuv2", "model": "mtan", "method": "graddrop", "head_gradients": "weighted"},
            ConfigError,
            "needs an aggregator that weights",
        ),
    ],
)
def test_bad_run_definitions_are_named(spec, error, message):
    with pytest.raises(error, match=message):
        RunSpec.from_dict(spec)


def test_every_paper_table_loads_and_matches_its_reference():
    tables = [table for path in PAPER_PARAMS for table in load_run_tables(path)]
    assert {(t.paper, t.table_id) for t in tables} >= {
        ("drmgf", "table6_nyuv2"),
        ("recon", "table3_cityscapes"),
        ("recon", "table5_nyuv2_mtan"),
        ("recon", "table15_nyuv2_segnet"),
        ("recon", "table16_cityscapes_mtan"),
        ("sparse_training", "table7_nyuv2"),
        ("sparse_training", "table12_cityscapes"),
        ("task_priority", "table3_cityscapes"),
    }
    kinds = {table_id: section["kind"] for path in PAPER_PARAMS for table_id, section in paper_tables(path).items()}
    for table in tables:
        reference = load_reference(table.reference)
        labels = [row.label for row in table.rows if not row.extra]  # extra: rows the paper does not print
        assert not {row.label for row in table.rows if row.extra} & set(reference["row"]), table.table_id
        if kinds[table.table_id] == "run_table":  # the paper's rows, in order, with their metric columns
            assert labels == list(dict.fromkeys(reference["row"])), table.table_id
            assert {c for c in reference["column"] if c in table.columns}, table.table_id
        elif "all" not in set(reference["row"]):  # a conflict table or figure: some of the printed rows
            assert set(labels) <= set(reference["row"]), table.table_id  # (a figure draws a subset)
        # else: the paper's claim is about every row (e.g. DR-MGF Fig. 5: r < 0 for all methods)
        assert table.row(table.baseline).runs


def test_the_run_plan_is_up_to_date_and_shares_runs_between_papers():
    check = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "plan_runs.py"), "--check"], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    users: dict[str, set[str]] = {}
    for path in PAPER_PARAMS:
        for table in load_run_tables(path):
            for run in table.runs:
                users.setdefault(run.name, set()).add(f"{table.paper}/{table.table_id}")
    plan = plan_runs(PAPER_PARAMS)
    assert set(plan) == set(users)
    # joint MTAN training on NYUv2 is one run for DR-MGF, Recon and sparse training
    assert users["nyuv2-mtan-equal"] == {
        "drmgf/table6_nyuv2",
        "drmgf/fig1b_scatter",  # the same rows as Table 6 (like: table6_nyuv2)
        "drmgf/fig5_dense_conflict_gain",  # the conflict it recorded: DR-MGF's C/G correlation
        "drmgf/fig13b_losses",  # SGD's loss curve
        "recon/table5_nyuv2_mtan",
        "recon/table9_nyuv2",  # the conflict it recorded: Recon's distribution (Table 9, Fig. 6)
        "recon/fig6_nyuv2",
        "sparse_training/table7_nyuv2",
        "sparse_training/table6_nyuv2_incidence",  # and sparse training's incidence
        "sparse_training/fig5b_trainable_sweep",  # and the run without sparse training of Fig. 5(b)
    }
    # task priority's Table 3 reuses Recon's CityScapes runs
    assert users["cityscapes-split-cagrad-c0p2-lr5e-05"] == {
        "recon/table3_cityscapes",
        "recon/table8_cityscapes",  # its conflict: Recon's Table 8 and Fig. 5
        "recon/fig5_cityscapes",
        "task_priority/table3_cityscapes",
    }
    rows = sum(len(t.runs) for path in PAPER_PARAMS for t in load_run_tables(path))
    assert len(plan) < rows


def test_parameter_counts_come_from_the_models():
    assert parameter_count(RunSpec("nyuv2", "mtan")) == 44_229_073
    assert parameter_count(RunSpec("cityscapes", "split")) == 25_017_672


def test_summarise_run_takes_the_last_k_epochs_then_seeds():
    rows = [
        {
            "seed": seed,
            "epoch": epoch,
            "split": "test",
            "task": "depth",
            "metric": "abs_err",
            "reduction": "global",
            "value": 10 * seed + epoch,
        }
        for seed in (0, 1)
        for epoch in range(1, 6)
    ]
    summary = summarise_run(pd.DataFrame(rows), last_k=2)
    row = summary.iloc[0]
    assert row["seed0"] == 4.5 and row["seed1"] == 14.5 and row["mean"] == 9.5
    assert row["std"] == pytest.approx(np.std([4.5, 14.5], ddof=1)) and row["seeds"] == 2


class _Stop(Callback):
    """Kills the run at the first step of epoch ``epoch`` (after the checkpoint of the one before)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_step_end(self, trainer, output) -> None:
        if output.epoch == self.epoch:
            raise KeyboardInterrupt


def test_a_killed_run_resumes_to_the_same_numbers(data_base, tmp_path):
    settings = TrainingSettings(
        model_options={"width": 1 / 16},
        epochs=3,
        batch_size={"nyuv2": 4},
        schedule={"name": "step", "step_size": 2, "gamma": 0.5},
        last_k=2,
    )
    run = RunSpec("nyuv2", "mtan", method="cagrad", hparams=(("c", 0.4),))
    lines, resumed_lines = [], []
    straight = train_seed(
        run, settings, 0, data_base=data_base, work_dir=tmp_path / "a", progress=False, report=lines.append
    )
    with pytest.raises(KeyboardInterrupt):
        train_seed(run, settings, 0, data_base=data_base, work_dir=tmp_path / "b", progress=False, callbacks=[_Stop(1)])
    assert (tmp_path / "b" / "checkpoint.pt").is_file()
    assert pd.read_csv(tmp_path / "b" / "metrics.csv")["epoch"].max() == 1
    resumed = train_seed(
        run, settings, 0, data_base=data_base, work_dir=tmp_path / "b", progress=False, report=resumed_lines.append
    )
    # a line per epoch: the test metric of every task, time elapsed and the run's ETA
    assert [line.split(":")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all(f"{task.name} " in line and "elapsed, ETA" in line for line in lines for task in run.tasks)
    assert lines[-1].endswith("ETA 0m00s")
    assert [line.split(":")[0] for line in resumed_lines] == ["epoch 2/3", "epoch 3/3"]
    pd.testing.assert_frame_equal(straight, resumed)
    assert set(straight["split"]) == {"train", "test"} and straight["epoch"].max() == 3
    assert set(straight["reduction"]) == {"global", "per_batch", "per_image"}


def test_regenerated_data_restarts_a_finished_run_and_unchanged_data_reuses_it(tmp_path):
    """A run's work folder is keyed by its data too: after the dataset is written anew, a finished run
    trains again on the new data instead of returning its old checkpoint's numbers."""
    from deconflict.experiments import train_run

    settings = TrainingSettings(model_options={"width": 1 / 16}, epochs=1, batch_size={"nyuv2": 4}, last_k=1)
    run = RunSpec("nyuv2", "split")
    base, work = tmp_path / "data", tmp_path / "work"
    NYUv2.write_synthetic(base / "nyuv2", seed=0, train=8, val=4, size=(32, 64))

    def train(out: str) -> tuple[dict, list[str]]:
        summary = train_run(
            run,
            settings,
            [0],
            out=tmp_path / out,
            work=work,
            data_base=base,
            profile="smoke",
            progress=False,
            log=lambda line: None,
        )
        return summary, sorted(path.name for path in work.iterdir())

    first, folders = train("a")
    again, same_folders = train("b")
    assert same_folders == folders and again["last_k_mean"] == first["last_k_mean"]  # resumed: nothing retrained
    NYUv2.write_synthetic(base / "nyuv2", seed=1, train=8, val=4, size=(32, 64))  # the data regenerated
    fresh, new_folders = train("c")
    assert len(new_folders) == 1 and new_folders != folders  # a new key; the stale folder is pruned
    assert fresh["last_k_mean"] != first["last_k_mean"]
    reference = train_seed(run, settings, 0, data_base=base, work_dir=None, progress=False)
    assert summarise_run(reference, 1)["mean"].tolist() == [row["mean"] for row in fresh["last_k_mean"]]


def test_inputs_fingerprint_follows_the_data_files_and_the_contents_of_small_inputs(tmp_path):
    from deconflict.experiments.runs import inputs_fingerprint

    data, scan = tmp_path / "data", tmp_path / "layers.json"
    (data / "train").mkdir(parents=True)
    (data / "train" / "0.npy").write_bytes(b"abc")
    scan.write_text('{"layers": ["a"]}')
    first = inputs_fingerprint(data, [scan])
    assert inputs_fingerprint(data, [scan]) == first
    assert inputs_fingerprint(tmp_path / "absent", [tmp_path / "none.json"]) == {
        "data": "missing",
        "none.json": "missing",
    }
    (data / "train" / "0.npy").write_bytes(b"abcd")  # another size
    assert inputs_fingerprint(data, [scan])["data"] != first["data"]
    scan.write_text('{"layers": ["b"]}')  # same size, other content
    assert inputs_fingerprint(data, [scan])["layers.json"] != first["layers.json"]


def test_seeded_runs_are_deterministic(data_base):
    settings = TrainingSettings(model_options={"width": 1 / 16}, epochs=1, batch_size={"nyuv2": 4}, last_k=1)
    run = RunSpec("nyuv2", "split", method="pcgrad")
    first = train_seed(run, settings, 5, data_base=data_base, work_dir=None, progress=False)
    second = train_seed(run, settings, 5, data_base=data_base, work_dir=None, progress=False)
    pd.testing.assert_frame_equal(first, second)


def _constant_baselines(root: Path) -> dict[str, float]:
    """Test-set errors of the best constant predictions learned from the training set."""
    train, test = NYUv2(root, "train"), NYUv2(root, "val")

    def gather(dataset, task):
        return torch.stack([dataset[i][1][task] for i in range(len(dataset))])

    labels, test_labels = gather(train, "segmentation"), gather(test, "segmentation")
    majority = torch.bincount(labels[labels >= 0]).argmax()
    valid = test_labels >= 0
    depth, test_depth = gather(train, "depth"), gather(test, "depth")
    normal = gather(train, "normal").permute(0, 2, 3, 1)
    mean_normal = torch.nn.functional.normalize(normal[normal.abs().sum(-1) > 0].mean(0), dim=0)
    test_normal = gather(test, "normal").permute(0, 2, 3, 1)
    cosine = (test_normal[test_normal.abs().sum(-1) > 0] @ mean_normal).clamp(-1, 1)
    return {
        "pixel_acc": float((test_labels[valid] == majority).float().mean()),
        "abs_err": float((test_depth[test_depth > 0] - depth[depth > 0].median()).abs().mean()),
        "mean": float(torch.rad2deg(torch.acos(cosine)).mean()),
    }


def test_training_on_synthetic_data_learns_every_task(tmp_path):
    """Real learning, not just running: after 144 steps the test metrics beat the best constant predictions."""
    root = NYUv2.write_synthetic(tmp_path / "nyuv2", seed=0, train=96, val=16, size=(32, 64))
    settings = TrainingSettings(
        model_options={"width": 0.25}, epochs=12, batch_size={"nyuv2": 8}, lr_multiplier=100, last_k=1, augment=False
    )
    metrics = train_seed(RunSpec("nyuv2", "split"), settings, 0, data_base=tmp_path, work_dir=None, progress=False)
    final = summarise_run(metrics, 1)
    final = final[final["reduction"] == "global"].set_index("metric")["mean"]
    chance = _constant_baselines(root)
    assert final["pixel_acc"] > chance["pixel_acc"] + 0.3
    assert final["abs_err"] < 0.8 * chance["abs_err"]
    assert final["mean"] < chance["mean"] - 3
    train_loss = metrics[(metrics["split"] == "train") & (metrics["metric"] == "loss")]
    by_epoch = train_loss.pivot_table(index="epoch", columns="task", values="value")
    assert (by_epoch.iloc[-1] < 0.8 * by_epoch.iloc[0]).all()


def _fake_run(runs_dir: Path, run: RunSpec, values: dict[tuple[str, str], float], profile="smoke") -> None:
    folder = runs_dir / run.name
    folder.mkdir(parents=True)
    rows = [
        {"seed": 0, "epoch": 1, "split": "test", "task": task, "metric": metric, "reduction": reduction, "value": value}
        for (task, metric), value in values.items()
        if task in {t.name for t in run.tasks}
        for reduction in ("global", "per_batch", "per_image")
    ]
    pd.DataFrame(rows).to_csv(folder / "metrics.csv", index=False)
    (folder / "summary.json").write_text(json.dumps({"profile": profile, "last_k": 1}))


def test_reproduce_table_puts_paper_and_runs_side_by_side(tmp_path):
    table = next(
        t for t in load_run_tables(REPO / "papers" / "recon" / "params.yaml") if t.table_id == "table3_cityscapes"
    )
    base = {
        ("segmentation", "miou"): 0.5,
        ("segmentation", "pixel_acc"): 0.8,
        ("depth", "abs_err"): 0.02,
        ("depth", "rel_err"): 0.5,
    }
    better = {
        ("segmentation", "miou"): 0.55,
        ("segmentation", "pixel_acc"): 0.8,
        ("depth", "abs_err"): 0.01,
        ("depth", "rel_err"): 0.5,
    }
    for row in table.rows:
        for run in row.runs:
            _fake_run(tmp_path, run, better if row.label == "Joint-train" else base)
    frame = reproduce_table(table, tmp_path, "smoke")
    ours = frame[frame["source"] == "reproduced"].set_index("row")
    paper = frame[frame["source"] == "paper"].set_index("row")
    assert ours.at["Single-task", "mIoU"] == pytest.approx(50.0)  # percent, as printed
    expected = -delta_m(
        [55.0, 80.0, 0.01, 0.5], [50.0, 80.0, 0.02, 0.5], [True, True, False, False], groups=[[0, 1], [2, 3]]
    )
    assert ours.at["Joint-train", "Δm%↑"] == pytest.approx(expected)  # improvement, per task then over tasks
    assert ours.at["Joint-train", "#P."] == pytest.approx(95.43, abs=0.005)
    assert ours.at["Single-task", "#P."] == pytest.approx(190.59, abs=0.005)
    assert paper.at["CAGrad", "Δm%↑"] == "-53.81"
    assert ours.at["CAGrad w/ Recon", "status"] == "reproduced" and ours.at["CAGrad w/ Recon", "mIoU"] == 50.0
    assert pd.isna(ours.at["CAGrad w/ Recon", "#P."])  # a Recon row's size needs the layers its run branched
    recon_run = next(row for row in table.rows if row.label == "CAGrad w/ Recon").runs[0]
    summary_path = tmp_path / recon_run.name / "summary.json"
    layers = ["backbone.encoder_first.0.0", "backbone.encoder_first.0.1"]  # conv 3→64 (1,792) and BN (128)
    summary_path.write_text(
        json.dumps({**json.loads(summary_path.read_text()), "surgery": {"0": {"recon": {"layers": layers}}}})
    )
    ours = reproduce_table(table, tmp_path, "smoke").query("source == 'reproduced'").set_index("row")
    assert ours.at["CAGrad w/ Recon", "#P."] == pytest.approx(
        95.43 + (1792 + 128) * 4 / 2**20, abs=0.005
    )  # 1 more copy
    with pytest.raises(ConfigError, match="'smoke' profile, not 'full'"):
        reproduce_table(table, tmp_path, "full")
    (tmp_path / "cityscapes-split-mgda-lr5e-05" / "summary.json").unlink()
    with pytest.raises(ConfigError, match="dvc repro"):
        reproduce_table(table, tmp_path, "smoke")


def test_every_planned_run_has_one_stage_in_the_stage_file_of_its_dataset_and_model(tmp_path):
    import yaml

    plan = yaml.safe_load((REPO / "pipelines" / "runs.yaml").read_text())
    files = sorted((REPO / "pipelines" / "train").glob("*/dvc.yaml"))
    staged: list[str] = []
    for path in files:
        stage = yaml.safe_load(path.read_text())["stages"]["train"]
        variable = stage["foreach"].removeprefix("${shards.").removesuffix("}")
        runs = plan["shards"][variable]
        assert {f"{plan['runs'][r]['dataset']}-{plan['runs'][r]['model']}".replace("_", "-") for r in runs} == {
            path.parent.name
        }
        assert stage["do"]["wdir"] == "../.."  # the template's paths are relative to pipelines/
        staged += list(runs)
    assert sorted(staged) == sorted(plan["runs"])  # each run once
    # an edited stage file is out of date: the template is the one place to change a run's stage
    copy = tmp_path / "pipelines"
    (copy / "train").mkdir(parents=True)
    (copy / "runs.yaml").write_text((REPO / "pipelines" / "runs.yaml").read_text())
    for path in files:
        (copy / "train" / path.parent.name).mkdir()
        (copy / "train" / path.parent.name / "dvc.yaml").write_text(path.read_text())
    command = [sys.executable, str(REPO / "pipelines" / "plan_runs.py"), "--check", "--runs", str(copy / "runs.yaml")]
    assert subprocess.run(command, capture_output=True).returncode == 0
    edited = copy / "train" / files[0].parent.name / "dvc.yaml"
    edited.write_text(edited.read_text().replace("--no-progress", ""))
    check = subprocess.run(command, capture_output=True, text=True)
    assert check.returncode == 1 and "plan_runs.py --write" in check.stderr and files[0].parent.name in check.stderr


def test_train_cli_bad_input_is_one_line(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "pipelines"))
    try:
        import train as train_cli
    finally:
        sys.path.pop(0)
    assert train_cli.main(["--run", "nyuv2-mtan-nope"]) == 2
    assert "plan_runs.py --write" in capsys.readouterr().err
    assert train_cli.main(["--dataset", "nyuv2", "--model", "mtan", "--method", "pcgard"]) == 2
    assert "pcgrad" in capsys.readouterr().err
    assert train_cli.main(["--dataset", "nyuv2", "--model", "mtan", "--hparam", "c"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
