"""NYUv2 and CityScapes in the MTAN pre-processed format (the format every paper here trains on).

On disk (Liu et al., MTAN; the same layout for the CAGrad, Nash-MTL, FAMO, LibMTL and Recon code)::

    <root>/train/{image,label,depth,normal}/<i>.npy     NYUv2: 795 items, 288×384
    <root>/val/{image,label,depth,normal}/<i>.npy       654 items (the test set of every paper)
    <root>/{train,val}/{image,label_7,depth}/<i>.npy    CityScapes: 2975 / 500 items, 128×256

with i = 0 … N−1, image H×W×3 in [0, 1], label H×W (float, −1 = ignore), depth H×W×1 (NYUv2:
metres; CityScapes: raw disparity; 0 = missing), normal H×W×3 (unit vectors, all-zero = missing).
Items are ``(image, targets)`` with ``targets`` a dict keyed by task, as each task stores it
(:meth:`deconflict.tasks.Task.target_from_array`): image 3×H×W float, segmentation H×W long (−1
kept), depth 1×H×W, normal 3×H×W — the stored values unchanged unless ``augment`` is on.

Each class writes small synthetic stand-ins in exactly this format (:meth:`MTANDataset.write_synthetic`),
which the smoke profile trains on. They have learnable structure: each image is a few axis-aligned
regions whose class fixes their colour and texture (so segmentation depends on the image), each
class is a plane at its own depth and tilt (so depth is predictable from the image), and the
normals are those of that depth, n ∝ (−∂z/∂x, −∂z/∂y, 1) (so they are consistent with it). Like the
real data they have unlabelled pixels (label −1) and holes (depth 0, zero normals).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from deconflict.data.base import MultiTaskDataset, register
from deconflict.data.root import DatasetError, require_dataset
from deconflict.io import atomic_path
from deconflict.tasks import Depth, SemanticSegmentation, SurfaceNormal, Task, Window, resize_window

__all__ = [
    "CityScapes",
    "MTANDataset",
    "NYUv2",
    "class_palette",
    "horizontal_flip",
    "random_scale_crop",
    "synthetic_item",
]

SCALES = (1.0, 1.2, 1.5)


def random_scale_crop(
    image: Tensor,
    targets: dict[str, Tensor],
    tasks: dict[str, Task],
    generator: torch.Generator | None = None,
    scales: tuple[float, ...] = SCALES,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The papers' RandomScaleCrop: crop a random int(H/s)×int(W/s) window (s from ``scales``) and
    resize it back to H×W — the image bilinearly (aligned corners), each target as its task says
    (:meth:`~deconflict.tasks.Task.crop_resize`: labels and depth nearest, depth ÷ s, normals bilinear)."""
    height, width = image.shape[-2:]
    scale = scales[int(torch.randint(len(scales), (1,), generator=generator))]
    h, w = int(height / scale), int(width / scale)
    i = int(torch.randint(height - h + 1, (1,), generator=generator))
    j = int(torch.randint(width - w + 1, (1,), generator=generator))
    window = Window(i, j, h, w)
    out = {name: tasks[name].crop_resize(target, window, (height, width), scale) for name, target in targets.items()}
    return resize_image(image, window, (height, width)), out


def resize_image(image: Tensor, window: Window, size: tuple[int, int]) -> Tensor:
    return resize_window(image, window, size, "bilinear")


def horizontal_flip(
    image: Tensor,
    targets: dict[str, Tensor],
    tasks: dict[str, Task],
    generator: torch.Generator | None = None,
    probability: float = 0.5,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Flip left-right with ``probability``; each target as its task says (normals: x negated)."""
    if float(torch.rand(1, generator=generator)) >= probability:
        return image, targets
    return image.flip(-1), {name: tasks[name].flip(target) for name, target in targets.items()}


class MTANDataset(MultiTaskDataset):
    """A split of a dataset in the MTAN ``.npy`` layout (see the module docstring).

    Args:
        root: the dataset folder (holding ``train/`` and ``val/``).
        split: ``"train"`` or ``"val"`` (alias ``"test"``: the papers test on ``val``).
        augment: the papers' training augmentation (random scale-crop, then horizontal flip).
        seed: makes the augmentation reproducible (see :meth:`set_epoch`); None: torch's global RNG.
    """

    name: ClassVar[str] = "mtan"
    #: folder of the image and of each task's targets (keyed by task name)
    folders: ClassVar[dict[str, str]] = {}
    counts: ClassVar[dict[str, int]] = {}  # items per split in the public release
    size: ClassVar[tuple[int, int]] = (0, 0)  # H × W of the public release
    #: the synthetic writer's targets: CityScapes stores disparity (≈ 0 … 0.5), NYUv2 metres
    synthetic_disparity: ClassVar[bool] = False

    def __init__(
        self, root: str | os.PathLike[str], split: str = "train", augment: bool = False, seed: int | None = None
    ) -> None:
        folder = {"test": "val"}.get(split, split)
        if folder not in self.splits:
            raise DatasetError(f"{self.name}: unknown split {split!r}; use 'train' or 'val' (alias 'test').")
        self.root = Path(root)
        require_dataset(self.root.parent, self.root.name, expected=[folder])
        self.split_dir = self.root / folder
        self.task_objects = {task.name: task for task in self.tasks()}
        self.folders = self._resolve_folders()
        self.length = self._count()
        self.augment = bool(augment)
        self.seed = seed
        self.epoch = 0

    @classmethod
    def num_classes(cls) -> int:
        return next(task.classes for task in cls.tasks() if isinstance(task, SemanticSegmentation))

    def set_epoch(self, epoch: int) -> None:
        """Seeded augmentation draws from (seed, epoch, index): call this at the start of each epoch."""
        self.epoch = int(epoch)

    def _generator(self, index: int) -> torch.Generator | None:
        """The augmentation's random numbers for one item: a function of (seed, epoch, index) only, so a
        resumed run and any number of loader workers draw the same crops and flips."""
        if self.seed is None:
            return None
        entropy = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(entropy[0]) << 32 | int(entropy[1]))

    def _resolve_folders(self) -> dict[str, str]:
        missing = [name for name in self.folders.values() if not (self.split_dir / name).is_dir()]
        if missing:
            raise DatasetError(
                f"{self.name}: {self.split_dir} lacks the folder(s) {missing}; the expected layout is "
                f"{self.split_dir}/{{{','.join(self.folders.values())}}}/<i>.npy (see data/{self.name}/README.md)."
            )
        return dict(self.folders)

    def _count(self) -> int:
        names = {p.name for p in (self.split_dir / self.folders["image"]).glob("*.npy")}
        count = len(names)
        if count == 0:
            raise DatasetError(f"{self.name}: no .npy file in {self.split_dir / self.folders['image']}.")
        expected = {f"{i}.npy" for i in range(count)}
        if names != expected:
            raise DatasetError(
                f"{self.name}: the files of {self.split_dir / self.folders['image']} are not 0.npy … {count - 1}.npy "
                f"(e.g. {sorted(names - expected)[:3]} present, {sorted(expected - names)[:3]} missing)."
            )
        for key, folder in self.folders.items():
            if key != "image" and not all((self.split_dir / folder / name).is_file() for name in expected):
                absent = sorted(n for n in expected if not (self.split_dir / folder / n).is_file())
                raise DatasetError(f"{self.name}: {self.split_dir / folder} lacks {absent[:5]} (it must match image/).")
        return count

    def __len__(self) -> int:
        return self.length

    def _load(self, key: str, index: int) -> np.ndarray:
        path = self.split_dir / self.folders[key] / f"{index}.npy"
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, EOFError, OSError) as error:
            raise DatasetError(
                f"{self.name}: {path} cannot be read as a .npy array ({type(error).__name__}: {error}); the file is "
                "truncated or corrupt — extract the dataset again."
            ) from None
        if key == "image":
            ok, shape = array.ndim == 3 and array.shape[-1] == 3, "H×W×3"
        else:
            task = self.task_objects[key]
            ok = task.check_array(array)
            shape = "H×W" if task.target_channels is None else f"H×W×{task.target_channels}"
        if not ok or not np.issubdtype(array.dtype, np.number):
            raise DatasetError(
                f"{self.name}: {path} has shape {array.shape} and dtype {array.dtype}; "
                f"expected a numeric {shape} array."
            )
        return array

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        image = self._load("image", index)
        height, width = image.shape[:2]
        targets = {}
        for name, task in self.task_objects.items():
            array = self._load(name, index)
            if array.shape[:2] != (height, width):
                raise DatasetError(
                    f"{self.name}: item {index}: {name} is {array.shape[:2]}, the image {(height, width)}."
                )
            targets[name] = task.target_from_array(array)
        image_tensor = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0))).float()
        if self.augment:
            generator = self._generator(index)
            image_tensor, targets = random_scale_crop(image_tensor, targets, self.task_objects, generator)
            image_tensor, targets = horizontal_flip(image_tensor, targets, self.task_objects, generator)
        return image_tensor, targets

    @classmethod
    def write_synthetic(
        cls,
        root: str | os.PathLike[str],
        seed: int = 0,
        *,
        train: int = 32,
        val: int = 16,
        size: tuple[int, int] = (32, 64),
    ) -> Path:
        """Write ``train`` + ``val`` synthetic items of ``size`` (H, W) under ``root`` (see the module docstring)."""
        root = Path(root)
        rng = np.random.default_rng(seed)
        classes = cls.num_classes()
        palette = class_palette(rng, classes)  # fixed per dataset: class → colour
        height, width = size
        for split, count in (("train", train), ("val", val)):
            for index in range(count):
                item = synthetic_item(rng, height, width, classes, palette, disparity=cls.synthetic_disparity)
                for key, folder in cls.folders.items():
                    with atomic_path(root / split / folder / f"{index}.npy") as tmp, open(tmp, "wb") as handle:
                        np.save(handle, item[key])
        return root


@register
class NYUv2(MTANDataset):
    """NYUv2 (13-class segmentation, depth in metres, surface normals), MTAN format, 288×384."""

    name = "nyuv2"
    folders = {"image": "image", "segmentation": "label", "depth": "depth", "normal": "normal"}
    counts = {"train": 795, "val": 654}
    size = (288, 384)

    @classmethod
    def tasks(cls) -> tuple[Task, ...]:
        return SemanticSegmentation(13), Depth(), SurfaceNormal()


@register
class CityScapes(MTANDataset):
    """CityScapes (7-class segmentation, disparity), MTAN format, 128×256.

    The labels are read from ``label_7/`` (the MTAN download) or ``label/`` (LibMTL's copies).
    """

    name = "cityscapes"
    folders = {"image": "image", "segmentation": "label_7", "depth": "depth"}
    counts = {"train": 2975, "val": 500}
    size = (128, 256)
    synthetic_disparity = True

    @classmethod
    def tasks(cls) -> tuple[Task, ...]:
        return SemanticSegmentation(7), Depth()

    def _resolve_folders(self) -> dict[str, str]:
        if not (self.split_dir / "label_7").is_dir() and (self.split_dir / "label").is_dir():
            self.folders = {**type(self).folders, "segmentation": "label"}
        return super()._resolve_folders()


def class_palette(rng: np.random.Generator, classes: int) -> np.ndarray:
    """One colour per class, drawn from the 3×3×3 grid {0.15, 0.5, 0.85}³ (at least 0.35 apart)."""
    levels = np.array([0.15, 0.5, 0.85])
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    return grid[rng.permutation(len(grid))[:classes]]


def synthetic_item(
    rng: np.random.Generator, height: int, width: int, classes: int, palette: np.ndarray, disparity: bool = False
) -> dict[str, np.ndarray]:
    """One item as the MTAN files store it: float64 arrays, channel last."""
    label = np.full((height, width), rng.integers(classes), dtype=np.float64)
    for _ in range(rng.integers(2, 5)):
        h, w = rng.integers(height // 4, height // 2 + 1), rng.integers(width // 4, width // 2 + 1)
        i, j = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        label[i : i + h, j : j + w] = rng.integers(classes)
    classes_map = label.astype(int)
    rows, cols = np.mgrid[0:height, 0:width] / max(height, width)
    texture = 0.05 * np.sin(2 * np.pi * (classes_map + 1) * (rows + cols) * 3)
    image = np.clip(palette[classes_map] + texture[..., None] + 0.02 * rng.standard_normal((height, width, 3)), 0, 1)
    image = np.round(image * 255) / 255  # k/255, as the real images
    # every class is a tilted plane: depth z = 1.5 + 0.25 c + a_c·y + b_c·x (x, y in image widths, metres),
    # so depth is predictable from the image and the normals, ∝ (−∂z/∂x, −∂z/∂y, 1), are those of that depth
    slope_y = 0.4 + 0.3 * (classes_map % 3)
    slope_x = 0.6 * ((classes_map % 4) - 1.5)
    depth = 1.5 + 0.25 * classes_map + slope_y * rows + slope_x * cols  # metres, about 0.6–6 as NYUv2
    normal = np.stack([-slope_x, -slope_y, np.ones_like(depth)], axis=-1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    hole = np.zeros((height, width), dtype=bool)  # missing depth, as in the real data
    hi, hj = rng.integers(0, height - height // 8), rng.integers(0, width - width // 8)
    hole[hi : hi + height // 8, hj : hj + width // 8] = True
    depth[hole] = 0.0
    normal[hole] = 0.0
    label[:1, :] = -1  # an unlabelled border row
    label[hole] = -1
    item = {"image": image, "segmentation": label, "depth": depth[..., None]}
    if disparity:  # CityScapes stores disparity (≈ 0 … 0.5), 0 = missing
        item["depth"] = np.where(depth > 0, 0.25 / np.maximum(depth, 1e-6), 0.0)[..., None]
    else:
        item["normal"] = normal
    return item
