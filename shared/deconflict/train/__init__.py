"""Layer 6 — the training engine (``deconflict.train``)."""

from deconflict.train.callbacks import Callback, StepOutput
from deconflict.train.checkpoint import load_checkpoint, save_checkpoint
from deconflict.train.engine import CHECKPOINT_NAME, TrainConfig, Trainer, TrainResult, check_weights_task_gradients
from deconflict.train.monitors import GradientMonitor, layer_slices
from deconflict.train.seeding import rng_state, seed_everything, set_rng_state

__all__ = [
    "CHECKPOINT_NAME",
    "Callback",
    "GradientMonitor",
    "layer_slices",
    "StepOutput",
    "TrainConfig",
    "TrainResult",
    "check_weights_task_gradients",
    "Trainer",
    "load_checkpoint",
    "rng_state",
    "save_checkpoint",
    "seed_everything",
    "set_rng_state",
]
