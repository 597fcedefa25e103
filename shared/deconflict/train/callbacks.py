"""Hooks into the training loop (monitors, recorders), with state that survives a resume."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor

from deconflict.grad import BackwardResult

if TYPE_CHECKING:  # pragma: no cover
    from deconflict.train.loop import Trainer

__all__ = ["Callback", "StepOutput"]


@dataclass
class StepOutput:
    """What one optimisation step produced (all tensors detached)."""

    epoch: int  # 0-based epoch
    step: int  # global step, 1-based, counted after the step
    losses: Tensor  # [T] task losses before weighting
    weights: Tensor | None  # [T] loss weights, if the update rule used any
    backward: BackwardResult | None  # Jacobian and direction, if an aggregator was used
    outputs: dict[str, Tensor] | None = None  # the model's outputs on the batch (for training metrics)
    targets: Any = None  # the batch's targets


class Callback:
    """Base class: override the hooks you need. ``state_dict`` is saved in checkpoints."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def before_backward(self, trainer: Trainer, losses: list[Tensor], representation: Tensor) -> None:
        """Called with the step's unweighted task losses (graph alive) before any backward pass;
        monitors may take gradients here (``retain_graph=True``) but must not write ``.grad``."""

    def on_step_end(self, trainer: Trainer, output: StepOutput) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None:
        """Called when every epoch is done."""

    def on_fit_exit(self, trainer: Trainer) -> None:
        """Called when ``fit`` returns or raises (release files, loggers)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
