"""The dataset contract and the dataset registry.

A dataset class of the project is a ``torch.utils.data.Dataset`` of ``(inputs, {task: target})``
items that reads one public on-disk format and

* is built as ``cls(root, split, **options)`` (``root``: the dataset's folder),
* says its tasks (:meth:`tasks`, :class:`~deconflict.tasks.Task` objects) and its splits,
* writes small synthetic data with learnable structure in exactly its on-disk format
  (:meth:`write_synthetic`), for the smoke profile and the tests,
* optionally reseeds its augmentation per epoch (:meth:`set_epoch`).

It registers itself with ``@register`` and is then found by name:
``deconflict.data.get("nyuv2", root, "train", augment=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from torch.utils.data import Dataset

from deconflict.errors import UnknownNameError
from deconflict.registry import Registry
from deconflict.tasks import Task

__all__ = ["DATASETS", "MultiTaskDataset", "register"]

#: every dataset class, by name
DATASETS: Registry[type[MultiTaskDataset]] = Registry("dataset", error=UnknownNameError)


def register(cls: type[MultiTaskDataset]) -> type[MultiTaskDataset]:
    """Class decorator: register a dataset class under its ``name``."""
    return DATASETS.add(cls.name, cls)


class MultiTaskDataset(Dataset):
    """Base class of the project's datasets (see the module docstring)."""

    #: registry name; also the dataset's folder under the data root and its README (data/<name>/)
    name: ClassVar[str] = ""
    #: the split names it accepts
    splits: ClassVar[tuple[str, ...]] = ("train", "val")
    #: the split the papers test on
    test_split: ClassVar[str] = "val"

    @classmethod
    def tasks(cls) -> tuple[Task, ...]:
        """The dataset's tasks, in the order of its targets."""
        raise NotImplementedError

    @classmethod
    def write_synthetic(cls, root: str | os.PathLike[str], seed: int = 0, **sizes: Any) -> Path:
        """Write a small synthetic copy in exactly the on-disk format under ``root``."""
        raise NotImplementedError(f"{cls.__name__} has no synthetic writer")

    def set_epoch(self, epoch: int) -> None:
        """Called at the start of every epoch (seeded augmentation); nothing by default."""
