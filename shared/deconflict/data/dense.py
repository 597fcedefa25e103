"""NYUv2 and CityScapes in the MTAN pre-processed format (the format every paper here trains on).

On disk (Liu et al., MTAN; the same layout for the CAGrad, Nash-MTL, FAMO, LibMTL and Recon code)::

    <root>/train/{image,label,depth,normal}/<i>.npy     NYUv2: 795 items, 288×384
    <root>/val/{image,label,depth,normal}/<i>.npy       654 items (the test set of every paper)
    <root>/{train,val}/{image,label_7,depth}/<i>.npy    CityScapes: 2975 / 500 items, 128×256

with i = 0 … N−1, image H×W×3 in [0, 1], label H×W (float, −1 = ignore), depth H×W×1 (NYUv2:
metres; CityScapes: raw disparity; 0 = missing), normal H×W×3 (unit vectors, all-zero = missing).
Items are ``(image, targets)`` with ``targets`` a dict keyed by task, channel-first tensors:
image 3×H×W float, segmentation H×W long (−1 kept), depth 1×H×W, normal 3×H×W — the stored values
unchanged unless ``augment`` is on.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import Dataset

from deconflict.data.root import DatasetError, require_dataset

__all__ = ["MTANDataset", "NYUv2", "CityScapes", "random_scale_crop", "horizontal_flip"]

SCALES = (1.0, 1.2, 1.5)


def random_scale_crop(image: Tensor, targets: dict[str, Tensor], generator: torch.Generator | None = None,
                      scales: tuple[float, ...] = SCALES) -> tuple[Tensor, dict[str, Tensor]]:
    """The papers' RandomScaleCrop: crop a random int(H/s)×int(W/s) window (s from ``scales``)
    and resize it back to H×W — bilinear (align_corners) for the image and normals, nearest for
    labels and depth — and divide depth by s (the MTAN code's rule, also for CityScapes disparity)."""
    height, width = image.shape[-2:]
    scale = scales[int(torch.randint(len(scales), (1,), generator=generator))]
    h, w = int(height / scale), int(width / scale)
    i = int(torch.randint(height - h + 1, (1,), generator=generator))
    j = int(torch.randint(width - w + 1, (1,), generator=generator))

    def resize(tensor: Tensor, mode: str) -> Tensor:
        crop = tensor[..., i:i + h, j:j + w]
        batched = crop.reshape(1, -1, h, w).to(torch.float32)
        kwargs = {"align_corners": True} if mode == "bilinear" else {}
        return F.interpolate(batched, size=(height, width), mode=mode, **kwargs).reshape(*tensor.shape[:-2], height, width)

    out = {}
    for task, target in targets.items():
        if task == "segmentation":
            out[task] = resize(target, "nearest").to(target.dtype)
        elif task == "depth":
            out[task] = resize(target, "nearest") / scale
        else:
            out[task] = resize(target, "bilinear")
    return resize(image, "bilinear"), out


def horizontal_flip(image: Tensor, targets: dict[str, Tensor], generator: torch.Generator | None = None,
                    probability: float = 0.5) -> tuple[Tensor, dict[str, Tensor]]:
    """Flip left-right with ``probability``; the normals' x component changes sign."""
    if float(torch.rand(1, generator=generator)) >= probability:
        return image, targets
    out = {task: target.flip(-1) for task, target in targets.items()}
    if "normal" in out:
        out["normal"] = out["normal"].clone()
        out["normal"][0] = -out["normal"][0]
    return image.flip(-1), out


class MTANDataset(Dataset):
    """A split of a dataset in the MTAN ``.npy`` layout (see the module docstring).

    Args:
        root: the dataset folder (holding ``train/`` and ``val/``).
        split: ``"train"`` or ``"val"`` (alias ``"test"``: the papers test on ``val``).
        augment: the papers' training augmentation (random scale-crop, then horizontal flip).
        seed: makes the augmentation reproducible (see :meth:`set_epoch`); None: torch's global RNG.
    """

    name = "mtan"
    folders: dict[str, str] = {}  # task (or "image") → folder name
    channels: dict[str, int] = {}
    num_classes = 0
    counts: dict[str, int] = {}  # items per split in the public release
    size: tuple[int, int] = (0, 0)  # H × W of the public release

    def __init__(self, root: str | os.PathLike[str], split: str = "train", augment: bool = False,
                 seed: int | None = None) -> None:
        folder = {"test": "val"}.get(split, split)
        if folder not in ("train", "val"):
            raise DatasetError(f"{self.name}: unknown split {split!r}; use 'train' or 'val' (alias 'test').")
        self.root = Path(root)
        require_dataset(self.root.parent, self.root.name, expected=[folder])
        self.split_dir = self.root / folder
        self.folders = self._resolve_folders()
        self.length = self._count()
        self.augment = bool(augment)
        self.seed = seed
        self.epoch = 0

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

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(key for key in self.folders if key != "image")

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
        expected = {"image": 3, "segmentation": 0}.get(key, self.channels.get(key, 1))
        ok = (array.ndim == 3 and array.shape[-1] == expected) if expected else array.ndim == 2
        if key == "depth" and array.ndim == 2:
            ok, array = True, array[..., None]
        if not ok or not np.issubdtype(array.dtype, np.number):
            shape = "H×W" if expected == 0 else f"H×W×{expected}"
            raise DatasetError(f"{self.name}: {path} has shape {array.shape} and dtype {array.dtype}; expected a numeric {shape} array.")
        return array

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        image = self._load("image", index)
        height, width = image.shape[:2]
        targets = {}
        for task in self.tasks:
            array = self._load(task, index)
            if array.shape[:2] != (height, width):
                raise DatasetError(f"{self.name}: item {index}: {task} is {array.shape[:2]}, the image {(height, width)}.")
            if task == "segmentation":
                targets[task] = torch.from_numpy(np.ascontiguousarray(array)).long()
            else:
                targets[task] = torch.from_numpy(np.ascontiguousarray(np.moveaxis(array, -1, 0))).float()
        image_tensor = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0))).float()
        if self.augment:
            generator = self._generator(index)
            image_tensor, targets = random_scale_crop(image_tensor, targets, generator)
            image_tensor, targets = horizontal_flip(image_tensor, targets, generator)
        return image_tensor, targets


class NYUv2(MTANDataset):
    """NYUv2 (13-class segmentation, depth in metres, surface normals), MTAN format, 288×384."""

    name = "nyuv2"
    folders = {"image": "image", "segmentation": "label", "depth": "depth", "normal": "normal"}
    channels = {"depth": 1, "normal": 3}
    num_classes = 13
    counts = {"train": 795, "val": 654}
    size = (288, 384)


class CityScapes(MTANDataset):
    """CityScapes (7-class segmentation, disparity), MTAN format, 128×256.

    The labels are read from ``label_7/`` (the MTAN download) or ``label/`` (LibMTL's copies).
    """

    name = "cityscapes"
    folders = {"image": "image", "segmentation": "label_7", "depth": "depth"}
    channels = {"depth": 1}
    num_classes = 7
    counts = {"train": 2975, "val": 500}
    size = (128, 256)

    def _resolve_folders(self) -> dict[str, str]:
        if not (self.split_dir / "label_7").is_dir() and (self.split_dir / "label").is_dir():
            self.folders = {**type(self).folders, "segmentation": "label"}
        return super()._resolve_folders()
