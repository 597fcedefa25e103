"""Layer 6 — the training engine (``deconflict.train``).

* :class:`Trainer` — the loop: epochs, schedule, callbacks, atomic checkpoints, bit-identical resume.
* :class:`UpdateRule` — what one batch does (forward, losses, gradients, optimizer steps); the
  methods of :mod:`deconflict.optim` use :class:`WeightedLossUpdate`, :class:`AggregatedUpdate`
  or :class:`RegularizedUpdate`, the papers' procedures their own rules; :class:`UpdateHook` acts
  on every optimizer step (e.g. a fixed mask).
* :class:`Callback` — hooks with resumable state: :class:`DvcLiveLogger`, :class:`GradientMonitor`.
"""

from deconflict.train.callbacks import Callback, StepOutput
from deconflict.train.checkpoint import load_checkpoint, save_checkpoint
from deconflict.train.config import (
    HEAD_GRADIENTS,
    OPTIMIZERS,
    SHARED_SPLITS,
    TrainConfig,
    TrainResult,
    build_optimizer,
    check_weights_task_gradients,
)
from deconflict.train.logging import DvcLiveLogger
from deconflict.train.loop import CHECKPOINT_NAME, Trainer
from deconflict.train.monitors import GradientMonitor, layer_slices
from deconflict.train.seeding import rng_state, seed_everything, set_rng_state
from deconflict.train.update import (
    AggregatedUpdate,
    MethodUpdate,
    RegularizedUpdate,
    UpdateHook,
    UpdateRule,
    WeightedLossUpdate,
    method_update,
)

__all__ = [
    "CHECKPOINT_NAME",
    "HEAD_GRADIENTS",
    "OPTIMIZERS",
    "SHARED_SPLITS",
    "AggregatedUpdate",
    "Callback",
    "DvcLiveLogger",
    "GradientMonitor",
    "MethodUpdate",
    "RegularizedUpdate",
    "StepOutput",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "UpdateHook",
    "UpdateRule",
    "WeightedLossUpdate",
    "build_optimizer",
    "check_weights_task_gradients",
    "layer_slices",
    "load_checkpoint",
    "method_update",
    "rng_state",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
]
