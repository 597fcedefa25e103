"""How to train: the configuration of the loop, and where a run ended."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from deconflict import optim
from deconflict.errors import ConfigError

__all__ = [
    "HEAD_GRADIENTS",
    "OPTIMIZERS",
    "SHARED_SPLITS",
    "TrainConfig",
    "TrainResult",
    "build_optimizer",
    "check_weights_task_gradients",
]

#: optimizers by the name a settings file or a procedure's options use
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}

SHARED_SPLITS = ("model", "all_but_heads")
HEAD_GRADIENTS = ("own", "weighted")


@dataclass
class TrainConfig:
    """How to train (not what: model, data and methods are given to :class:`Trainer`).

    Attributes:
        epochs: number of passes over the data.
        steps_per_epoch: cap on the batches per epoch (required for endless iterables).
        level: ``"parameter"`` (per-task gradients of the shared parameters) or ``"feature"``
            (per-task gradients of the shared representation) for the aggregator.
        jacobian_mode: ``"auto"``, ``"batched"`` or ``"loop"`` (see :mod:`deconflict.grad`).
        log_every: write a row of step metrics to dvclive every N steps (0: no step log).
        checkpoint_every: checkpoint every N epochs (0: only at the end).
        progress: show a progress bar per epoch.
        shared: which parameters an aggregator treats as shared (parameter level): ``"model"``
            (the model's own ``shared_parameters()``: the split of the CAGrad, Recon and DR-MGF
            code) or ``"all_but_heads"`` (every parameter except the output heads,
            ``head_parameters()``: the split of the Nash-MTL / FAMO code lineage, in which e.g.
            every task's MTAN attention modules enter the Jacobian and so the Gramian's diagonal).
        head_gradients: what each task's own parameters receive with an aggregator: ``"own"``
            (its own gradient, unweighted) or ``"weighted"`` (times the aggregator's
            ``loss_weights``: the Nash-MTL / FAMO code back-propagates Σ_t α_t L_t, so task t's
            head gets α_t times its gradient — Nash-MTL, IMTL-G, MGDA there).
    """

    epochs: int = 1
    steps_per_epoch: int | None = None
    level: str = "parameter"
    jacobian_mode: str = "auto"
    log_every: int = 1
    checkpoint_every: int = 1
    progress: bool = True
    shared: str = "model"
    head_gradients: str = "own"

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"epochs must be an integer ≥ 1, got {self.epochs!r}.")
        if self.steps_per_epoch is not None and (not isinstance(self.steps_per_epoch, int) or self.steps_per_epoch < 1):
            raise ConfigError(f"steps_per_epoch must be None or an integer ≥ 1, got {self.steps_per_epoch!r}.")
        if self.level not in ("parameter", "feature"):
            raise ConfigError(f"level must be 'parameter' or 'feature', got {self.level!r}.")
        if self.shared not in SHARED_SPLITS:
            raise ConfigError(f"shared must be one of {', '.join(SHARED_SPLITS)}, got {self.shared!r}.")
        if self.head_gradients not in HEAD_GRADIENTS:
            raise ConfigError(
                f"head_gradients must be one of {', '.join(HEAD_GRADIENTS)}, got {self.head_gradients!r}."
            )
        if self.shared != "model" and self.level != "parameter":
            raise ConfigError(f"shared={self.shared!r} chooses shared parameters, so it needs level='parameter'.")
        if self.jacobian_mode not in ("auto", "batched", "loop"):
            raise ConfigError(f"jacobian_mode must be 'auto', 'batched' or 'loop', got {self.jacobian_mode!r}.")
        for name in ("log_every", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer ≥ 0, got {value!r}.")


@dataclass
class TrainResult:
    """Where a run ended."""

    epochs: int
    steps: int
    final_losses: list[float]
    resumed_from_epoch: int | None = None
    run_dir: Path | None = None
    history: list[list[float]] = field(default_factory=list)  # per-epoch mean task losses


def check_weights_task_gradients(method: optim.Method | None) -> None:
    """``head_gradients="weighted"`` needs an aggregator whose direction weights the task gradients."""
    if not isinstance(method, optim.GramianAggregator):
        valid = [n for n in optim.available("aggregator") if issubclass(optim.method_class(n), optim.GramianAggregator)]
        raise ConfigError(
            "head_gradients='weighted' scales each task's own gradient by the aggregator's weights, so it needs "
            f"an aggregator that weights the task gradients ({', '.join(valid)}); "
            f"got {method.name if method is not None else 'no aggregator'}."
        )


def build_optimizer(
    parameters: Iterable[Any], options: Mapping[str, Any], lr: float | None = None, where: str = "optimizer"
) -> torch.optim.Optimizer:
    """``options`` = ``{"name": "adam" | "adamw" | "sgd", **keyword options}`` built on ``parameters``
    (``lr`` replaces the options' own); a clear error for an unknown name or option."""
    options = dict(options)
    name = options.pop("name", None)
    if name not in OPTIMIZERS:
        raise ConfigError(f"{where}: the name must be one of {', '.join(OPTIMIZERS)}, got {name!r}.")
    if lr is not None:
        options["lr"] = lr
    try:
        return OPTIMIZERS[name](parameters, **options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: options {options} are not accepted by {name}: {error}") from None
