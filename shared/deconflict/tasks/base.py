"""What a task is: its outputs, loss, metrics, the columns the papers print, and its targets under augmentation.

A :class:`Task` is the one place that says, for one output of a multi-task model:

* ``channels`` — how many output channels the model's head gives it, and :meth:`output` — the
  activation applied to the head's raw output (e.g. log-softmax for segmentation);
* :meth:`loss` — the training loss of a prediction against a target;
* :meth:`metric` — an accumulating metric (:mod:`deconflict.metrics`) at one of the ``reductions``
  the papers' code lineages use, and ``metrics`` — the values it reports, each with its direction
  (higher or lower is better) and the column label and scale the papers print it with;
* :meth:`target_from_array` — how a stored target becomes a tensor, and :meth:`crop_resize` /
  :meth:`flip` — how the target follows the image under the papers' augmentation.

Models (``deconflict.models``), datasets (``deconflict.data``) and the experiment core ask the task
objects instead of switching on task names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from deconflict.errors import ConfigError, ShapeError
from deconflict.metrics import REDUCTIONS, Metric

__all__ = ["MetricColumn", "Task", "TaskLoss", "Window", "resize_window"]


@dataclass(frozen=True)
class MetricColumn:
    """One value a task's metric reports.

    Attributes:
        key: the name the metric computes it under (e.g. ``miou``).
        higher_is_better: its direction (Δm and the tables use it).
        label: the column label the papers print it under (e.g. ``mIoU``), if they print it.
        scale: factor from the metric's units to the printed ones (100 for percentages).
    """

    key: str
    higher_is_better: bool
    label: str | None = None
    scale: float = 1.0


@dataclass(frozen=True)
class Window:
    """A crop of an H×W map: rows ``top`` … ``top + height``, columns ``left`` … ``left + width``."""

    top: int
    left: int
    height: int
    width: int


def resize_window(tensor: Tensor, window: Window, size: tuple[int, int], mode: str) -> Tensor:
    """Crop ``window`` out of the last two dimensions of ``tensor`` and resize it to ``size``
    (``nearest``, or ``bilinear`` with aligned corners, as the MTAN lineage's RandomScaleCrop)."""
    crop = tensor[..., window.top : window.top + window.height, window.left : window.left + window.width]
    batched = crop.reshape(1, -1, window.height, window.width).to(torch.float32)
    kwargs = {"align_corners": True} if mode == "bilinear" else {}
    return F.interpolate(batched, size=size, mode=mode, **kwargs).reshape(*tensor.shape[:-2], *size)


class Task:
    """Base class of every task; subclasses set the class attributes and override what differs.

    Args:
        name: the task's key in the model's outputs and the dataset's targets (default: ``kind``).
        channels: output channels of the task's head.
    """

    #: registry name of this kind of task (``deconflict.tasks.get``)
    kind: ClassVar[str] = ""
    #: what :meth:`metric` reports, in the papers' column order; the first is the headline metric
    metrics: ClassVar[tuple[MetricColumn, ...]] = ()
    #: the averagings its metric supports (dense metrics: all three of :data:`deconflict.metrics.REDUCTIONS`)
    reductions: ClassVar[tuple[str, ...]] = REDUCTIONS
    #: channels of a stored target (None: an H×W label map)
    target_channels: ClassVar[int | None] = None
    #: interpolation of the target under the scale-crop augmentation
    interpolation: ClassVar[str] = "nearest"

    def __init__(self, name: str | None = None, channels: int = 1) -> None:
        if not isinstance(channels, int) or channels < 1:
            raise ConfigError(
                f"task {name or self.kind!r} needs a positive integer number of output channels, got {channels!r}."
            )
        self.name = name or self.kind
        self.channels = channels

    @classmethod
    def from_channels(cls, name: str, channels: int) -> Task:
        """The task of this kind with ``channels`` output channels (e.g. a segmentation's classes)."""
        return cls(name=name, channels=channels)

    # -- outputs and loss ----------------------------------------------------------------------
    def output(self, raw: Tensor) -> Tensor:
        """The prediction from the head's raw output (identity unless the task says otherwise)."""
        return raw

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    # -- evaluation ----------------------------------------------------------------------------
    def metric(self, reduction: str = "global") -> Metric:
        raise NotImplementedError

    def prediction_for_metric(self, prediction: Tensor) -> Tensor:
        """What the metric is given of a prediction (identity unless the task says otherwise)."""
        return prediction

    @property
    def headline(self) -> MetricColumn:
        """The first metric: the one a table or a progress line shows first."""
        return self.metrics[0]

    def column(self, key: str) -> MetricColumn:
        for column in self.metrics:
            if column.key == key:
                return column
        raise ConfigError(f"task {self.name!r} has no metric {key!r}; its metrics: {[c.key for c in self.metrics]}.")

    # -- targets -------------------------------------------------------------------------------
    def target_from_array(self, array: np.ndarray) -> Tensor:
        """A stored H×W×C (or H×W) array as the target tensor (C×H×W float by default)."""
        if array.ndim == 2:
            array = array[..., None]
        return torch.from_numpy(np.ascontiguousarray(np.moveaxis(array, -1, 0))).float()

    def check_array(self, array: np.ndarray) -> bool:
        """Whether a stored target array has this task's shape (H×W×C, or H×W for C = 1 or labels)."""
        if self.target_channels is None:
            return array.ndim == 2
        return (array.ndim == 3 and array.shape[-1] == self.target_channels) or (
            array.ndim == 2 and self.target_channels == 1
        )

    def crop_resize(self, target: Tensor, window: Window, size: tuple[int, int], scale: float) -> Tensor:
        """The target of an image whose ``window`` was resized to ``size`` (zoom factor ``scale``)."""
        return resize_window(target, window, size, self.interpolation).to(target.dtype)

    def flip(self, target: Tensor) -> Tensor:
        """The target of the horizontally flipped image."""
        return target.flip(-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, channels={self.channels})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(vars(self).items()))))


class TaskLoss:
    """The criterion of a multi-task model: ``(outputs, targets) → {task: loss}``, each task's own loss."""

    def __init__(self, tasks: Iterable[Task]) -> None:
        self.tasks = tuple(tasks)
        if not self.tasks or not all(isinstance(t, Task) for t in self.tasks):
            raise ConfigError("TaskLoss needs a non-empty sequence of Task objects (deconflict.tasks).")

    def __call__(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        missing = [t.name for t in self.tasks if t.name not in outputs or t.name not in targets]
        if missing:
            raise ShapeError(
                f"task loss: task(s) {missing} missing from the model outputs {sorted(outputs)} "
                f"or the targets {sorted(targets)}."
            )
        return {task.name: task.loss(outputs[task.name], targets[task.name]) for task in self.tasks}

    def __repr__(self) -> str:
        return f"TaskLoss({[task.name for task in self.tasks]})"


def task_names(tasks: Sequence[Task]) -> tuple[str, ...]:
    return tuple(task.name for task in tasks)


def describe(tasks: Sequence[Task]) -> dict[str, Any]:
    """A JSON-able description (name → kind and channels), e.g. for run summaries."""
    return {task.name: {"kind": task.kind, "channels": task.channels} for task in tasks}
