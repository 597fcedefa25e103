"""Recon and sparse training as run options: names, checks, the scan, and what a run records.

A Recon run reads its layers from its pre-run's scan; a sparse run trains with a PSN mask; both record
what they did in the run's summary, and every multi-task run records its task-gradient conflict.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from deconflict.data import NYUv2
from deconflict.errors import ConfigError
from deconflict.experiments import RunSpec, TrainingSettings, train_run
from deconflict.experiments.scans import train_scan
from deconflict.experiments.surgery import recon_layers, scan_epochs, scan_name, scan_spec
from deconflict.io import read_json
from deconflict.methods import recon

SETTINGS = TrainingSettings(
    model_options={"width": 1 / 16},
    epochs=2,
    batch_size={"nyuv2": 4},
    last_k=1,
    conflict_every=1,
    sparse_k_scale=1 / 16,
)


@pytest.fixture(scope="module")
def data_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("dense")
    NYUv2.write_synthetic(base / "nyuv2", seed=0, train=8, val=4, size=(32, 64))
    return base


def quiet_run(run: RunSpec, seeds: list[int], folder, data_base, scans=None) -> dict:
    """Train ``run`` under SETTINGS into ``folder/run`` (checkpoints in ``folder/work``), printing nothing."""
    return train_run(
        run,
        SETTINGS,
        seeds,
        out=folder / "run",
        work=folder / "work",
        data_base=data_base,
        profile="smoke",
        progress=False,
        log=lambda line: None,
        scans=scans,
    )


def spec(**options) -> RunSpec:
    return RunSpec.from_dict({"dataset": "nyuv2", "model": "split", **options})


def test_recon_and_sparse_runs_are_named_by_their_options():
    assert spec(method="pcgrad", recon={}).name == "nyuv2-split-pcgrad-recon"
    assert (
        spec(recon={"select": "random_layers", "seed": 1}).name == "nyuv2-split-equal-recon-seed_1-select_random_layers"
    )
    star = spec(recon={"scan": {"dataset": "cityscapes", "lr": 5e-5}})
    assert star.name == "nyuv2-split-equal-recon-scan_dataset_cityscapes-scan_lr_5e-05"
    assert spec(model="mtan", sparse={"k": 2000}).name == "nyuv2-mtan-equal-st-k_2000"
    assert RunSpec.from_dict(star.to_dict()) == star and star.to_dict()["recon"]["scan"]["dataset"] == "cityscapes"
    assert spec().recon is None and "recon" not in spec().to_dict()  # no key: no Recon; {}: the paper's Recon


def test_a_recon_run_reads_the_scan_of_its_pre_run():
    assert scan_spec(spec(method="cagrad", hparams={"c": 0.4}, recon={})) == spec()  # joint training, same data
    star = spec(model="mtan", recon={"scan": {"dataset": "cityscapes", "lr": 5e-5}})
    assert scan_name(star) == "cityscapes-mtan-equal-lr5e-05"
    assert scan_name(spec(recon={"settings": "code"})) == "nyuv2-split-equal-code"
    assert scan_epochs(spec(), "paper", None) == 40 and scan_epochs(spec(), "code", None) == 50  # App. B / scripts
    assert scan_epochs(spec(), "paper", 1) == 1  # the smoke profile's
    whole = spec(recon={"prerun": "whole_run", "quarter": 2})  # Table 13: quarters of the whole joint training
    assert scan_name(whole) == "nyuv2-split-equal-whole_run" == scan_name(spec(recon={"prerun": "whole_run"}))
    assert scan_epochs(spec(), "paper", 1, "whole_run", run_epochs=4) == 4  # as long as the run, in any profile
    assert scan_epochs(spec(), "paper", None, "whole_run", run_epochs=200) == 200


@pytest.mark.parametrize(
    "options, message",
    [
        ({"recon": {"select": "best"}}, "recon select"),
        ({"recon": {"quarter": 5}}, "quarter"),
        ({"recon": {"prerun": "half"}}, "recon prerun"),
        ({"recon": {"threshold": 0.3}}, "threshold"),
        ({"recon": {"scan": {"epochs": 3}}}, "recon scan key"),
        ({"recon": {}, "level": "feature"}, "parameter level"),
        ({"model": "single", "task": "depth", "recon": {}}, "single-task"),
        ({"sparse": {}}, "either fraction"),
        ({"sparse": {"k": 10, "rule": "largest"}}, "unknown sparse-training rule"),
    ],
)
def test_bad_recon_and_sparse_options_are_named(options, message):
    with pytest.raises(ConfigError, match=message):
        spec(**options)


def test_a_recon_run_without_its_scan_says_which_stage_makes_it(tmp_path):
    run = spec(recon={})
    model = run.build_model(width=1 / 16)
    with pytest.raises(ConfigError, match="scan stage"):
        recon_layers(run, tmp_path / scan_name(run), model)


def test_scan_then_recon_run_branch_the_top_k_layers_and_record_them(data_base, tmp_path):
    run = spec(method="pcgrad", recon={"top_k": 5})
    scans = tmp_path / "scans"
    record = train_scan(
        scan_spec(run), SETTINGS, 0, 1, out=scans / scan_name(run), work=tmp_path / "w", data_base=data_base
    )
    pairs = pd.read_csv(scans / scan_name(run) / "gradient_pairs.csv")
    assert record["steps"] == 2 and sorted(pairs["step"].unique()) == [1, 2]  # every step of the 1-epoch pre-run
    assert set(pairs["layer"]) == set(record["layers"]) and len(record["layers"]) == 52
    expected = recon.select_layers(recon.conflict_scores(pairs, -0.02), 5)  # NYUv2: S = −0.02 (App. B)
    summary = quiet_run(run, [0], tmp_path, data_base, scans=scans)
    assert summary["surgery"]["0"]["recon"]["layers"] == expected  # most conflicting first
    base = read_json(tmp_path / "run" / "summary.json")["size"]["parameters"]
    plain = spec(method="pcgrad").build_model(width=1 / 16)
    copies = sum(p.numel() for name in expected for p in plain.get_submodule(name).parameters())
    assert base == sum(p.numel() for p in plain.parameters()) + 2 * copies  # 3 tasks: 2 more copies each
    conflict = pd.read_csv(tmp_path / "run" / "conflict_pairs.csv")
    assert set(conflict["level"]) == {"parameter"}  # a branched model has no single representation
    assert not set(expected) & set(conflict["layer"])  # what Recon branched is no longer shared


def test_a_recon_run_whose_scan_changed_starts_afresh_with_the_new_layers(data_base, tmp_path):
    run = spec(recon={"top_k": 2})
    scans = tmp_path / "scans"
    train_scan(scan_spec(run), SETTINGS, 0, 1, out=scans / scan_name(run), work=tmp_path / "w", data_base=data_base)
    first = quiet_run(run, [0], tmp_path, data_base, scans=scans)["surgery"]["0"]["recon"]["layers"]
    pairs_file = scans / scan_name(run) / "gradient_pairs.csv"
    pairs = pd.read_csv(pairs_file)
    others = [layer for layer in pairs["layer"].unique() if layer not in first][:2]
    pairs["cosine"] = 0.5  # the scan redone: now only two other layers conflict
    pairs.loc[pairs["layer"].isin(others), "cosine"] = -0.5
    pairs.to_csv(pairs_file, index=False)
    again = quiet_run(run, [0], tmp_path, data_base, scans=scans)["surgery"]["0"]["recon"]["layers"]
    assert sorted(again) == sorted(others) and len(list((tmp_path / "work").iterdir())) == 1


def test_a_sparse_run_trains_only_the_selected_entries_and_records_its_share(data_base, tmp_path):
    run = spec(method="cagrad", sparse={"k": 800})  # 800 × 1/16 = 50 connections per neuron at this width
    summary = quiet_run(run, [0], tmp_path, data_base)
    record = summary["surgery"]["0"]["sparse"]
    assert record["k_used"] == 50 and 0 < record["trainable_percent"] < 100
    checkpoint = torch.load(next((tmp_path / "work").rglob("checkpoint.pt")), weights_only=False)
    masks = checkpoint["hooks"][0]["masks"]
    assert masks and all(int(mask.sum(dim=tuple(range(1, mask.dim()))).max()) <= 50 for mask in masks.values())


def test_every_multi_task_run_records_its_conflict_at_both_levels(data_base, tmp_path):
    quiet_run(spec(), [0, 1], tmp_path, data_base)
    pairs = pd.read_csv(tmp_path / "run" / "conflict_pairs.csv")
    summary = pd.read_csv(tmp_path / "run" / "conflict_summary.csv")
    assert set(pairs["level"]) == {"parameter", "feature"} and set(pairs["seed"]) == {0, 1}
    assert sorted(pairs["step"].unique()) == [1, 2, 3, 4]  # every step (conflict_every = 1), 2 epochs of 2
    assert len(set(pairs[pairs["level"] == "parameter"]["layer"])) == 53  # 52 layers and the whole shared part
    assert {"gds", "conflict_fraction", "entropy"} <= set(summary.columns)
    assert pairs["cosine"].between(-1, 1).all()
