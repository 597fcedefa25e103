"""NYUv2 / CityScapes in the MTAN format: items, augmentation, synthetic data, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deconflict import data, tasks
from deconflict.data import CityScapes, DatasetError, NYUv2, horizontal_flip, random_scale_crop
from deconflict.data.mtan import class_palette, synthetic_item
from deconflict.data.verify import file_hashes, verify_dataset
from deconflict.errors import DatasetNotFoundError, UnknownNameError

NYU_TASKS = {task.name: task for task in NYUv2.tasks()}


@pytest.fixture(scope="module")
def nyu_root(tmp_path_factory):
    return NYUv2.write_synthetic(tmp_path_factory.mktemp("data") / "nyuv2", seed=1, train=4, val=2, size=(64, 96))


@pytest.fixture(scope="module")
def city_root(tmp_path_factory):
    return CityScapes.write_synthetic(
        tmp_path_factory.mktemp("data") / "cityscapes", seed=2, train=3, val=2, size=(32, 64)
    )


def test_registry_finds_datasets_by_name(nyu_root):
    assert {"nyuv2", "cityscapes"} <= set(data.available())
    dataset = data.get("nyuv2", nyu_root, "train", augment=True, seed=0)
    assert isinstance(dataset, NYUv2) and dataset.augment
    with pytest.raises(UnknownNameError, match="unknown dataset 'nyu'; valid names: .*cityscapes.*nyuv2"):
        data.get("nyu", nyu_root, "train")


def test_nyuv2_items_are_channel_first_with_stored_values(nyu_root):
    dataset = NYUv2(nyu_root, "train")
    assert len(dataset) == 4 and [t.name for t in dataset.tasks()] == ["segmentation", "depth", "normal"]
    assert dataset.tasks() == (tasks.SemanticSegmentation(13), tasks.Depth(), tasks.SurfaceNormal())
    image, targets = dataset[2]
    assert image.shape == (3, 64, 96) and image.dtype == torch.float32
    assert targets["segmentation"].shape == (64, 96) and targets["segmentation"].dtype == torch.int64
    assert targets["depth"].shape == (1, 64, 96) and targets["normal"].shape == (3, 64, 96)
    stored = {
        key: np.load(nyu_root / "train" / folder / "2.npy")
        for key, folder in {"image": "image", "label": "label", "depth": "depth", "normal": "normal"}.items()
    }
    np.testing.assert_array_equal(image.numpy(), np.moveaxis(stored["image"], -1, 0).astype(np.float32))
    np.testing.assert_array_equal(targets["segmentation"].numpy(), stored["label"].astype(np.int64))
    np.testing.assert_array_equal(targets["depth"].numpy(), np.moveaxis(stored["depth"], -1, 0).astype(np.float32))
    np.testing.assert_array_equal(targets["normal"].numpy(), np.moveaxis(stored["normal"], -1, 0).astype(np.float32))
    assert (targets["segmentation"] == -1).any()  # the ignore label is kept


def test_split_names_and_cityscapes_label_folder(city_root, tmp_path):
    assert len(CityScapes(city_root, "test")) == len(CityScapes(city_root, "val")) == 2
    _, targets = CityScapes(city_root, "train")[0]
    assert set(targets) == {"segmentation", "depth"}
    # LibMTL's copies call the 7-class folder label/
    import shutil

    copy = tmp_path / "cityscapes"
    shutil.copytree(city_root, copy)
    for split in ("train", "val"):
        (copy / split / "label_7").rename(copy / split / "label")
    np.testing.assert_array_equal(
        CityScapes(copy, "train")[1][1]["segmentation"], CityScapes(city_root, "train")[1][1]["segmentation"]
    )
    with pytest.raises(DatasetError, match="unknown split 'validation'"):
        NYUv2(city_root, "validation")


def test_missing_root_split_or_folder_names_the_layout(nyu_root, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="data/nyuv2/README.md"):
        NYUv2(tmp_path / "nowhere" / "nyuv2", "train")
    with pytest.raises(DatasetNotFoundError, match="missing val"):
        root = tmp_path / "nyuv2"
        (root / "train").mkdir(parents=True)
        NYUv2(root, "val")
    import shutil

    broken = tmp_path / "broken" / "nyuv2"
    shutil.copytree(nyu_root, broken)
    shutil.rmtree(broken / "train" / "normal")
    with pytest.raises(DatasetError, match=r"lacks the folder\(s\) \['normal'\].*\{image,label,depth,normal\}/<i>.npy"):
        NYUv2(broken, "train")
    (broken / "val" / "depth" / "1.npy").unlink()
    with pytest.raises(DatasetError, match=r"depth lacks \['1.npy'\]"):
        NYUv2(broken, "val")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:100]), "truncated or corrupt"),
        (lambda p: p.write_bytes(b"not a numpy file at all"), "truncated or corrupt"),
        (lambda p: np.save(p, np.zeros((64, 96, 2))), r"shape \(64, 96, 2\).*expected a numeric H×W×3"),
        (lambda p: np.save(p, np.full((64, 96, 3), "a")), "dtype <U1"),
    ],
)
def test_corrupt_files_give_one_clear_error(nyu_root, tmp_path, damage, message):
    import shutil

    root = tmp_path / "nyuv2"
    shutil.copytree(nyu_root, root)
    target = root / "train" / "normal" / "1.npy"
    damage(target)
    dataset = NYUv2(root, "train")
    with pytest.raises(DatasetError, match=message) as info:
        dataset[1]
    assert str(target) in str(info.value)
    dataset[0]  # the other items are fine


def test_mismatched_sizes_are_reported(nyu_root, tmp_path):
    import shutil

    root = tmp_path / "nyuv2"
    shutil.copytree(nyu_root, root)
    np.save(root / "val" / "depth" / "0.npy", np.ones((32, 96, 1)))
    with pytest.raises(DatasetError, match=r"item 0: depth is \(32, 96\), the image \(64, 96\)"):
        NYUv2(root, "val")[0]


def test_scale_crop_at_scale_one_is_the_identity_and_depth_scales():
    image = torch.rand(3, 12, 16)
    targets = {
        "segmentation": torch.randint(-1, 5, (12, 16)),
        "depth": torch.full((1, 12, 16), 3.0),
        "normal": torch.nn.functional.normalize(torch.randn(3, 12, 16), dim=0),
    }
    out_image, out = random_scale_crop(image, targets, NYU_TASKS, scales=(1.0,))
    torch.testing.assert_close(out_image, image, rtol=0, atol=1e-6)
    assert torch.equal(out["segmentation"], targets["segmentation"])
    torch.testing.assert_close(out["normal"], targets["normal"], rtol=0, atol=1e-6)
    _, zoomed = random_scale_crop(image, targets, NYU_TASKS, torch.Generator().manual_seed(0), scales=(1.5,))
    torch.testing.assert_close(zoomed["depth"], torch.full((1, 12, 16), 2.0))  # depth / s
    assert zoomed["segmentation"].dtype == torch.int64
    assert set(zoomed["segmentation"].unique().tolist()) <= set(targets["segmentation"].unique().tolist())


def test_flip_mirrors_everything_and_negates_normal_x():
    image = torch.rand(3, 4, 6)
    targets = {"segmentation": torch.randint(0, 3, (4, 6)), "normal": torch.randn(3, 4, 6)}
    flipped_image, flipped = horizontal_flip(image, targets, NYU_TASKS, probability=1.0)
    assert torch.equal(flipped_image, image.flip(-1))
    assert torch.equal(flipped["segmentation"], targets["segmentation"].flip(-1))
    assert torch.equal(flipped["normal"][0], -targets["normal"][0].flip(-1))
    assert torch.equal(flipped["normal"][1:], targets["normal"][1:].flip(-1))
    again_image, again = horizontal_flip(flipped_image, flipped, NYU_TASKS, probability=1.0)
    assert torch.equal(again_image, image) and torch.equal(again["normal"], targets["normal"])
    same_image, _ = horizontal_flip(image, targets, NYU_TASKS, probability=0.0)
    assert same_image is image


def test_seeded_augmentation_depends_on_seed_epoch_and_index_only(nyu_root):
    a, b = NYUv2(nyu_root, "train", augment=True, seed=3), NYUv2(nyu_root, "train", augment=True, seed=3)
    assert torch.equal(a[1][0], b[1][0])
    images = set()
    for epoch in range(6):
        a.set_epoch(epoch)
        images.add(a[1][0].sum().item())
    assert len(images) > 1  # crops and flips change from epoch to epoch
    plain = NYUv2(nyu_root, "train")[1][0]
    assert any(not torch.equal(plain, (a.set_epoch(e), a[1][0])[1]) for e in range(6))


def test_synthetic_segmentation_is_a_function_of_colour():
    rng = np.random.default_rng(0)
    palette = class_palette(rng, 13)
    distances = np.linalg.norm(palette[:, None] - palette[None], axis=-1) + np.eye(13)
    assert distances.min() >= 0.35 - 1e-9
    item = synthetic_item(rng, 64, 96, 13, palette)
    label = item["segmentation"]
    valid = label >= 0
    nearest = np.linalg.norm(item["image"][..., None, :] - palette, axis=-1).argmin(-1)
    assert (nearest[valid] == label[valid]).mean() > 0.99  # the image determines the class


def test_synthetic_depth_and_normals_agree():
    rng = np.random.default_rng(1)
    item = synthetic_item(rng, 64, 96, 13, class_palette(rng, 13))
    depth, normal = item["depth"][..., 0], item["normal"]
    hole = depth == 0
    assert hole.any() and (np.abs(normal[hole]).sum(-1) == 0).all() and (item["segmentation"][hole] == -1).all()
    unit = np.linalg.norm(normal[~hole], axis=-1)
    np.testing.assert_allclose(unit, 1.0, atol=1e-12)
    # the normals are those of the depth: n ∝ (−∂z/∂x, −∂z/∂y, 1), x and y in image widths
    spacing = 1 / 96
    dz_dy, dz_dx = np.gradient(depth, spacing, spacing)
    label = item["segmentation"]
    same = np.zeros_like(hole)  # pixels whose 4 neighbours share their class (no region edge)
    same[1:-1, 1:-1] = (
        (label[1:-1, 1:-1] == label[:-2, 1:-1])
        & (label[1:-1, 1:-1] == label[2:, 1:-1])
        & (label[1:-1, 1:-1] == label[1:-1, :-2])
        & (label[1:-1, 1:-1] == label[1:-1, 2:])
    )
    inside = same & ~hole
    assert inside.mean() > 0.5
    expected = np.stack([-dz_dx, -dz_dy, np.ones_like(depth)], axis=-1)
    expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
    np.testing.assert_allclose(normal[inside], expected[inside], atol=1e-9)
    assert np.degrees(np.arccos(normal[inside][:, 2])).max() > 20  # real tilts, not all facing the camera


def test_synthetic_cityscapes_stores_disparity(city_root):
    _, targets = CityScapes(city_root, "val")[0]
    disparity = targets["depth"]
    assert float(disparity.min()) >= 0 and float(disparity.max()) <= 0.5 and (disparity == 0).any()


def test_verify_checks_the_public_layout_and_hashes(nyu_root):
    assert verify_dataset(NYUv2, nyu_root, public=False) == []
    problems = verify_dataset(NYUv2, nyu_root)
    assert any("795" in p for p in problems) and any("(288, 384)" in p for p in problems)
    hashes = file_hashes(nyu_root)
    assert len(hashes) == 4 * (4 + 2) and all(len(h) == 64 for h in hashes.values())


def test_verify_cli_pins_a_copy_with_a_manifest(nyu_root, tmp_path, capsys):
    import shutil

    from deconflict.data.verify import main

    root = tmp_path / "nyuv2"
    shutil.copytree(nyu_root, root)
    manifest = tmp_path / "SHA256SUMS"
    assert main(["nyuv2", str(root), "--any-size", "--write-manifest", str(manifest)]) == 0
    assert main(["nyuv2", str(root), "--any-size", "--manifest", str(manifest)]) == 0
    np.save(root / "val" / "depth" / "1.npy", np.ones((64, 96, 1)))
    assert main(["nyuv2", str(root), "--any-size", "--manifest", str(manifest)]) == 1
    assert "val/depth/1.npy: hash differs" in capsys.readouterr().err
    assert main(["nyuv2", str(root)]) == 1  # not the public counts and size
