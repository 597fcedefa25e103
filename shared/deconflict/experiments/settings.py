"""The profile's part of a run: sizes, lengths, optimizer and schedule (``training.<family>`` in
``pipelines/params.yaml``, resolved for the active profile)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from deconflict.config import load_yaml, reject_unknown, resolve_profile
from deconflict.errors import ConfigError
from deconflict.train.config import OPTIMIZERS, build_optimizer

__all__ = ["OPTIMIZERS", "SCHEDULES", "TrainingSettings", "family_settings"]
#: learning-rate schedules: ``step`` (× gamma every step_size epochs) and ``multistep`` (× gamma at
#: each milestone, given as fractions of the epochs, e.g. [0.5, 0.75])
SCHEDULES = ("step", "multistep", "constant")


@dataclass(frozen=True)
class TrainingSettings:
    """How long and how big a family's runs are under one profile.

    Attributes:
        data_dir: folder holding the datasets' folders, relative to the repository (None: the root
            ``data_root``; the smoke profile points at the synthetic data).
        model_options: options every model of the family gets (e.g. SegNet's ``width``).
        epochs, last_k: training length and the reporting window (mean of the last epochs).
        batch_size: per dataset.
        optimizer: ``{"name": "adam" | "adamw" | "sgd", ...keyword options}``.
        lr_multiplier: the run's learning rate is multiplied by it (smoke: larger steps).
        schedule: ``{"name": "step", "step_size": E, "gamma": g}``, ``{"name": "multistep",
            "milestones": [0.5, 0.75], "gamma": 0.1}`` or ``{"name": "constant"}``.
        augment: the training augmentation of the datasets that have one.
        workers, checkpoint_every, jacobian_mode, log_every: engineering.
        max_train_items, max_test_items: use only the first items of a split (None: all).
        conflict_every: record the task gradients' cosines per shared layer every N steps
            (:class:`~deconflict.train.GradientMonitor`; None: not recorded), at ``conflict_levels``.
        sparse_k_scale: sparse training's K (connections per neuron) is given at the papers' model size;
            narrower models (the smoke profile's ``width``) scale it by this factor, so that the same
            share of each neuron's inputs is kept.
    """

    data_dir: str | None = None
    model_options: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 200
    last_k: int = 10
    batch_size: Mapping[str, int] = field(default_factory=dict)
    optimizer: Mapping[str, Any] = field(default_factory=lambda: {"name": "adam"})
    lr_multiplier: float = 1.0
    schedule: Mapping[str, Any] = field(default_factory=lambda: {"name": "constant"})
    augment: bool = True
    workers: int = 0
    checkpoint_every: int = 1
    jacobian_mode: str = "auto"
    log_every: int = 10
    max_train_items: int | None = None
    max_test_items: int | None = None
    conflict_every: int | None = None
    conflict_levels: tuple[str, ...] = ("parameter", "feature")
    sparse_k_scale: float = 1.0

    @classmethod
    def from_params(cls, section: Mapping[str, Any], where: str = "training settings") -> TrainingSettings:
        reject_unknown(section, [f.name for f in fields(cls)], f"{where} key")
        settings = cls(**section)
        for name in ("epochs", "last_k"):
            value = getattr(settings, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{where}: {name} must be an integer ≥ 1, got {value!r}.")
        if settings.conflict_every is not None and (
            not isinstance(settings.conflict_every, int) or settings.conflict_every < 1
        ):
            raise ConfigError(
                f"{where}: conflict_every must be an integer ≥ 1 or null, got {settings.conflict_every!r}."
            )
        object.__setattr__(settings, "conflict_levels", tuple(settings.conflict_levels))
        if not settings.conflict_levels or set(settings.conflict_levels) - {"parameter", "feature"}:
            raise ConfigError(
                f"{where}: conflict_levels must be among 'parameter' and 'feature', "
                f"got {list(settings.conflict_levels)!r}."
            )
        if settings.last_k > settings.epochs:
            raise ConfigError(f"{where}: last_k ({settings.last_k}) cannot exceed epochs ({settings.epochs}).")
        if settings.optimizer.get("name") not in OPTIMIZERS:
            raise ConfigError(
                f"{where}: optimizer name must be one of {', '.join(OPTIMIZERS)}, got {settings.optimizer!r}."
            )
        if settings.schedule.get("name") not in SCHEDULES:
            raise ConfigError(
                f"{where}: schedule name must be one of {', '.join(SCHEDULES)}, got {settings.schedule!r}."
            )
        return settings

    def data_base(self, repo_root: Path, data_root: Path) -> Path:
        """The folder holding the datasets' folders: ``data_dir`` if set, else the root data_root."""
        return repo_root / self.data_dir if self.data_dir else data_root

    def batch(self, dataset: str) -> int:
        if dataset not in self.batch_size:
            raise ConfigError(f"no batch size for {dataset!r} in the training settings ({dict(self.batch_size)}).")
        return int(self.batch_size[dataset])

    def build_optimizer(self, parameters: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
        """The optimizer at ``lr`` × ``lr_multiplier``."""
        return build_optimizer(parameters, self.optimizer, lr * self.lr_multiplier, "training optimizer")

    def build_scheduler(self, optimizer: torch.optim.Optimizer) -> Any:
        """The learning-rate schedule (stepped once per epoch), or None for a constant rate."""
        options = dict(self.schedule)
        name = options.pop("name")
        if name == "step":
            return torch.optim.lr_scheduler.StepLR(
                optimizer, step_size=int(options["step_size"]), gamma=float(options.get("gamma", 0.1))
            )
        if name == "multistep":
            milestones = [round(fraction * self.epochs) for fraction in options["milestones"]]
            return torch.optim.lr_scheduler.MultiStepLR(
                optimizer, milestones=milestones, gamma=float(options.get("gamma", 0.1))
            )
        return None


def family_settings(params_file: Path, family: str, profile: str) -> TrainingSettings:
    """The ``training.<family>`` settings of ``pipelines/params.yaml`` under ``profile``."""
    training = load_yaml(params_file).get("training") or {}
    if family not in training:
        raise ConfigError(
            f"{params_file} has no `training.{family}` section "
            f"(the profile's sizes and schedule of the {family} family)."
        )
    return TrainingSettings.from_params(resolve_profile(training[family], profile), f"training.{family}")
