"""Layer 3 — datasets (``deconflict.data``).

Real datasets are never downloaded by the code (no dataset can be fetched on the machines this
project is tested on, and their licences forbid re-hosting): users place them under the data root
(``data_root`` in the root ``params.yaml``, default ``data/``), with the layout documented in
``data/<name>/README.md``. :func:`require_dataset` checks that before any training starts. Every
dataset class writes small synthetic stand-ins in exactly its own format (``write_synthetic``).

Datasets are found by name::

    >>> from deconflict import data
    >>> data.available()
    ['cityscapes', 'nyuv2']
    >>> train = data.get("nyuv2", "data/nyuv2", "train", augment=True, seed=0)   # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any

from deconflict.data.base import DATASETS, MultiTaskDataset, register
from deconflict.data.mtan import CityScapes, MTANDataset, NYUv2, horizontal_flip, random_scale_crop
from deconflict.data.root import DatasetError, require_dataset


def available() -> list[str]:
    """The registered dataset names."""
    return DATASETS.available()


def get(name: str, root: str | os.PathLike[str], split: str, **kwargs: Any) -> MultiTaskDataset:
    """The split ``split`` of the dataset registered under ``name``, read from ``root``."""
    return DATASETS[name](root, split, **kwargs)


__all__ = [
    "DATASETS",
    "CityScapes",
    "DatasetError",
    "MTANDataset",
    "MultiTaskDataset",
    "NYUv2",
    "available",
    "get",
    "horizontal_flip",
    "random_scale_crop",
    "register",
    "require_dataset",
]
