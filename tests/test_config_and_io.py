"""Parameters, profiles, devices, data roots and atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deconflict.config import load_root_params, resolve_device, resolve_profile, validate_profile
from deconflict.data import require_dataset
from deconflict.errors import ConfigError, DatasetNotFoundError
from deconflict.io import atomic_path, read_json, write_json


def make_repo(tmp_path: Path, params: str) -> Path:
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "params.yaml").write_text(params)
    return tmp_path


def test_root_params_of_the_repository_are_valid(repo_root):
    params = load_root_params(repo_root)
    assert params.profile == "smoke" and params.device in ("auto", "cpu", "cuda")
    assert params.seeds == (0,)
    assert params.data_root == repo_root / "data"


def test_unknown_profile_names_the_valid_ones(tmp_path):
    repo = make_repo(tmp_path, "profile: fast\n")
    with pytest.raises(ConfigError, match=r"unknown profile 'fast': use 'smoke'.*or 'full'"):
        load_root_params(repo)
    with pytest.raises(ConfigError, match="unknown profile"):
        validate_profile("Full")


@pytest.mark.parametrize(
    "params, match", [("device: gpu\n", "unknown device 'gpu'"), ("seeds: {smoke: []}\n", "seeds.smoke")]
)
def test_bad_device_and_seeds(tmp_path, params, match):
    with pytest.raises(ConfigError, match=match):
        load_root_params(make_repo(tmp_path, params))


def test_malformed_and_missing_params_files(tmp_path):
    with pytest.raises(ConfigError, match="no deconflict checkout"):
        load_root_params(tmp_path)
    repo = make_repo(tmp_path, "profile: [smoke\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_root_params(repo)


def test_resolve_profile_merges_shared_and_profile_keys():
    section = {
        "lr": 0.1,
        "model": {"width": 8, "depth": 2},
        "smoke": {"steps": 5, "model": {"width": 2}},
        "full": {"steps": 500},
    }
    assert resolve_profile(section, "smoke") == {"lr": 0.1, "model": {"width": 2, "depth": 2}, "steps": 5}
    assert resolve_profile(section, "full") == {"lr": 0.1, "model": {"width": 8, "depth": 2}, "steps": 500}
    assert "smoke" in section  # input untouched


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu")


def test_missing_data_root_and_dataset_say_what_to_do(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"data root .*does not exist.*data/nyuv2/README.md"):
        require_dataset(tmp_path / "nowhere", "nyuv2")
    with pytest.raises(DatasetNotFoundError, match=r"dataset 'nyuv2' not found .*data_root"):
        require_dataset(tmp_path, "nyuv2")
    (tmp_path / "nyuv2" / "train").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="missing val"):
        require_dataset(tmp_path, "nyuv2", expected=["train", "val"])
    assert require_dataset(tmp_path, "nyuv2", expected=["train"]) == tmp_path / "nyuv2"


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_write_json_refuses_nan(tmp_path):
    write_json(tmp_path / "m.json", {"b": 1, "a": [1.5]})
    assert read_json(tmp_path / "m.json") == {"a": [1.5], "b": 1}
    with pytest.raises(ValueError):
        write_json(tmp_path / "bad.json", {"x": float("nan")})
    assert not (tmp_path / "bad.json").exists()
