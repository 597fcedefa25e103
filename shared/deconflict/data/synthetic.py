"""Small synthetic stand-ins for NYUv2 and CityScapes, in exactly the MTAN on-disk format.

The smoke profile trains on these. They have learnable structure: each image is a few
axis-aligned regions whose class fixes their colour and texture (so segmentation depends on the
image), each class is a plane at its own depth and tilt (so depth is predictable from the image),
and the normals are those of that depth, n ∝ (−∂z/∂x, −∂z/∂y, 1) (so they are consistent with it). Like the
real data they have unlabelled pixels (label −1) and holes (depth 0, zero normals).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from deconflict.data.dense import CityScapes, NYUv2
from deconflict.io import atomic_path

__all__ = ["write_synthetic", "synthetic_item", "class_palette", "LAYOUTS"]

#: per dataset: folders and the number of classes
LAYOUTS = {cls.name: {"folders": cls.folders, "classes": cls.num_classes} for cls in (NYUv2, CityScapes)}


def class_palette(rng: np.random.Generator, classes: int) -> np.ndarray:
    """One colour per class, drawn from the 3×3×3 grid {0.15, 0.5, 0.85}³ (at least 0.35 apart)."""
    levels = np.array([0.15, 0.5, 0.85])
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    return grid[rng.permutation(len(grid))[:classes]]


def synthetic_item(rng: np.random.Generator, height: int, width: int, classes: int, palette: np.ndarray,
                   disparity: bool = False) -> dict[str, np.ndarray]:
    """One item as the MTAN files store it: float64 arrays, channel last."""
    label = np.full((height, width), rng.integers(classes), dtype=np.float64)
    for _ in range(rng.integers(2, 5)):
        h, w = rng.integers(height // 4, height // 2 + 1), rng.integers(width // 4, width // 2 + 1)
        i, j = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        label[i:i + h, j:j + w] = rng.integers(classes)
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
    hole[hi:hi + height // 8, hj:hj + width // 8] = True
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


def write_synthetic(root: str | os.PathLike[str], dataset: str, train: int, val: int,
                    size: tuple[int, int], seed: int = 0) -> Path:
    """Write ``train`` + ``val`` synthetic items of ``dataset`` (``nyuv2`` or ``cityscapes``) under ``root``."""
    layout = LAYOUTS[dataset]
    root = Path(root)
    rng = np.random.default_rng(seed)
    palette = class_palette(rng, layout["classes"])  # fixed per dataset: class → colour
    height, width = size
    for split, count in (("train", train), ("val", val)):
        for index in range(count):
            item = synthetic_item(rng, height, width, layout["classes"], palette, disparity=dataset == "cityscapes")
            for key, folder in layout["folders"].items():
                with atomic_path(root / split / folder / f"{index}.npy") as tmp:
                    with open(tmp, "wb") as handle:
                        np.save(handle, item[key])
    return root
