"""Dense prediction tasks of NYUv2 and CityScapes, as the MTAN lineage defines them.

Losses (MTAN, CAGrad, Nash-MTL, Recon, DR-MGF code):

* segmentation: negative log-likelihood of the model's log-probabilities (= cross-entropy on
  logits), averaged over labelled pixels (label −1 ignored);
* depth: L1 over valid pixels (target ≠ 0), divided by the number of valid pixels in the batch;
* normals: 1 − the mean cosine between predicted (unit) and true normals over valid pixels
  (true normal ≠ 0).

The MTAN code divides by the number of valid pixels with no guard, so a batch without any valid
pixel of a task gives NaN there; here such a batch gives a loss of 0 for that task (still in the
graph, so every method sees a zero gradient), which only differs where the original is undefined.

Outputs: segmentation log-probabilities (``log_softmax``), raw depth, L2-normalised normals (the
MTAN code divides by the norm without a floor; ``F.normalize`` floors it at 1e-12, which differs
only for an exactly zero prediction, NaN in the original). Augmentation: labels and depth are
resized with nearest neighbours (depth divided by the zoom factor, the MTAN code's rule, also for
CityScapes disparity), normals bilinearly, and a horizontal flip negates the normals' x component.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from deconflict.errors import ConfigError, ShapeError
from deconflict.metrics import DepthMetric, Metric, NormalMetric, SegmentationMetric
from deconflict.tasks.base import MetricColumn, Task, Window

__all__ = ["Depth", "SemanticSegmentation", "SurfaceNormal", "depth_loss", "normal_loss", "segmentation_loss"]


def _valid_mean(total: Tensor, count: Tensor) -> Tensor:
    return total / count.clamp_min(1)


def segmentation_loss(log_probs: Tensor, target: Tensor, ignore_index: int = -1) -> Tensor:
    """Mean NLL over pixels whose label is not ``ignore_index`` (log_probs B×C×H×W, target B×H×W)."""
    if log_probs.dim() != 4 or target.shape != (log_probs.shape[0], *log_probs.shape[2:]):
        raise ShapeError(
            f"segmentation loss: predictions {tuple(log_probs.shape)} (B×C×H×W) and labels "
            f"{tuple(target.shape)} (B×H×W) do not match."
        )
    total = F.nll_loss(log_probs, target.long(), ignore_index=ignore_index, reduction="sum")
    return _valid_mean(total, (target != ignore_index).sum())


def _valid_mask(target: Tensor) -> Tensor:
    return (target.sum(dim=1, keepdim=True) != 0).to(target.dtype)


def depth_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """Σ |prediction − target| over valid pixels (target ≠ 0) / number of valid pixels (B×1×H×W)."""
    if prediction.shape != target.shape:
        raise ShapeError(f"depth loss: predictions {tuple(prediction.shape)} and targets {tuple(target.shape)} differ.")
    mask = _valid_mask(target)
    return _valid_mean(((prediction - target).abs() * mask).sum(), mask.sum())


def normal_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """1 − Σ⟨prediction, target⟩ over valid pixels / number of valid pixels (B×3×H×W, unit normals)."""
    if prediction.shape != target.shape:
        raise ShapeError(
            f"normal loss: predictions {tuple(prediction.shape)} and targets {tuple(target.shape)} differ."
        )
    mask = _valid_mask(target)
    return 1 - _valid_mean((prediction * target * mask).sum(), mask.sum())


class SemanticSegmentation(Task):
    """Per-pixel classification into ``classes`` classes (label −1: unlabelled)."""

    kind = "segmentation"
    metrics = (
        MetricColumn("miou", True, "mIoU", 100.0),
        MetricColumn("pixel_acc", True, "Pix Acc", 100.0),
        MetricColumn("mean_class_acc", True),
    )
    target_channels = None

    def __init__(self, classes: int, name: str | None = None, ignore_index: int = -1) -> None:
        if not isinstance(classes, int) or classes < 2:
            raise ConfigError(f"segmentation needs an integer number of classes ≥ 2, got {classes!r}.")
        super().__init__(name, channels=classes)
        self.ignore_index = ignore_index

    @classmethod
    def from_channels(cls, name: str, channels: int) -> Task:
        return cls(classes=channels, name=name)

    @property
    def classes(self) -> int:
        return self.channels

    def output(self, raw: Tensor) -> Tensor:
        return F.log_softmax(raw, dim=1)

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        return segmentation_loss(prediction, target, self.ignore_index)

    def metric(self, reduction: str = "global") -> Metric:
        return SegmentationMetric(self.classes, ignore_index=self.ignore_index, reduction=reduction)

    def prediction_for_metric(self, prediction: Tensor) -> Tensor:
        return prediction.argmax(1)  # the predicted label of each pixel

    def target_from_array(self, array: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).long()


class _FixedChannels(Task):
    """A task whose head has a fixed number of channels."""

    fixed_channels: int = 1

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name, channels=self.fixed_channels)

    @classmethod
    def from_channels(cls, name: str, channels: int) -> Task:
        if channels != cls.fixed_channels:
            raise ConfigError(
                f"{cls.kind} has {cls.fixed_channels} output channel(s), got {channels} for task {name!r}."
            )
        return cls(name=name)


class Depth(_FixedChannels):
    """Per-pixel depth (NYUv2: metres) or disparity (CityScapes); 0 marks a missing value."""

    kind = "depth"
    metrics = (
        MetricColumn("abs_err", False, "Abs Err"),
        MetricColumn("rel_err", False, "Rel Err"),
        MetricColumn("rmse", False),
    )
    target_channels = 1
    fixed_channels = 1

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        return depth_loss(prediction, target)

    def metric(self, reduction: str = "global") -> Metric:
        return DepthMetric(reduction=reduction)

    def crop_resize(self, target: Tensor, window: Window, size: tuple[int, int], scale: float) -> Tensor:
        return super().crop_resize(target, window, size, scale) / scale


class SurfaceNormal(_FixedChannels):
    """Per-pixel unit surface normals; the zero vector marks a missing value."""

    kind = "normal"
    metrics = (
        MetricColumn("mean", False, "Mean"),
        MetricColumn("median", False, "Median"),
        MetricColumn("within_11.25", True, "11.25", 100.0),
        MetricColumn("within_22.5", True, "22.5", 100.0),
        MetricColumn("within_30", True, "30", 100.0),
    )
    target_channels = 3
    fixed_channels = 3
    interpolation = "bilinear"

    def output(self, raw: Tensor) -> Tensor:
        return F.normalize(raw, p=2, dim=1)

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        return normal_loss(prediction, target)

    def metric(self, reduction: str = "global") -> Metric:
        return NormalMetric(reduction=reduction)

    def flip(self, target: Tensor) -> Tensor:
        flipped = target.flip(-1).clone()
        flipped[0] = -flipped[0]
        return flipped
