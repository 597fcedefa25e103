"""Dense prediction metrics: semantic segmentation, depth, surface normals (NYUv2, CityScapes)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from deconflict.errors import ShapeError
from deconflict.metrics._base import Metric, MetricError, check_finite_predictions

__all__ = ["DepthMetric", "NormalMetric", "SegmentationMetric", "confusion_matrix", "segmentation_scores"]


def confusion_matrix(labels: Tensor, targets: Tensor, num_classes: int, ignore_index: int = -1) -> Tensor:
    """num_classes × num_classes counts (rows: target class, columns: predicted class); pixels whose
    target is ``ignore_index`` or outside [0, num_classes) are left out."""
    valid = (targets != ignore_index) & (targets >= 0) & (targets < num_classes)
    index = num_classes * targets[valid].long() + labels[valid].long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes).cpu()


def segmentation_scores(confusion: Tensor) -> dict[str, float]:
    """mIoU, pixel accuracy and mean class accuracy from a confusion matrix.

    IoU_c = TP / (TP + FP + FN); classes absent from both the targets and the predictions (IoU 0/0)
    are left out of the mean rather than counted as NaN (the MTAN code would give NaN); mean class
    accuracy averages TP/(TP + FN) over the classes present in the targets.
    """
    confusion = confusion.to(torch.float64)
    true_positive = confusion.diagonal()
    per_target = confusion.sum(1)
    union = per_target + confusion.sum(0) - true_positive
    present = union > 0
    in_targets = per_target > 0
    return {
        "miou": float((true_positive[present] / union[present]).mean()),
        "pixel_acc": float(true_positive.sum() / confusion.sum()),
        "mean_class_acc": float((true_positive[in_targets] / per_target[in_targets]).mean()),
    }


class SegmentationMetric(Metric):
    """mIoU, pixel accuracy and mean class accuracy (task-priority Table 1's mAcc).

    ``global`` accumulates one confusion matrix over all test pixels (every lineage since the
    MTAN update of Nov. 2020); ``per_image`` averages per-image scores (the older MTAN formula,
    about 8 mIoU points lower); ``per_batch`` averages per-batch scores.

    Args:
        num_classes: number of classes (13 for NYUv2, 7 for CityScapes).
        ignore_index: target label of unlabelled pixels (−1 in the MTAN data).
    """

    name = "segmentation"

    def __init__(self, num_classes: int, ignore_index: int = -1, reduction: str = "global") -> None:
        if not isinstance(num_classes, int) or num_classes < 2:
            raise MetricError(f"segmentation: num_classes must be an integer ≥ 2, got {num_classes!r}.")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        super().__init__(reduction)

    def update(self, predictions: Tensor, targets: Tensor) -> None:
        """``predictions``: logits [B, C, H, W] or labels [B, H, W]; ``targets``: labels [B, H, W]."""
        check_finite_predictions(self.name, predictions)
        if predictions.dim() == targets.dim() + 1:
            if predictions.shape[1] != self.num_classes:
                raise ShapeError(
                    f"segmentation: logits have {predictions.shape[1]} channels for {self.num_classes} classes."
                )
            predictions = predictions.argmax(1)
        self._check_shapes(predictions, targets, "labels [B, H, W] (or logits [B, C, H, W])")
        labels = predictions.detach()
        per_image = []
        if self.reduction == "per_image":
            per_image = [
                confusion_matrix(labels[i], targets[i], self.num_classes, self.ignore_index)
                for i in range(targets.shape[0])
            ]
        state = (
            confusion_matrix(labels, targets, self.num_classes, self.ignore_index)
            if self.reduction != "per_image"
            else None
        )
        self._accumulate(state, per_image)

    @staticmethod
    def _add(a: Tensor, b: Tensor) -> Tensor:
        return a + b

    def _has_valid(self, state: Tensor) -> bool:
        return bool(state.sum() > 0)

    def _finish(self, state: Tensor) -> dict[str, float]:
        return segmentation_scores(state)


class DepthMetric(Metric):
    """Absolute error, relative error and RMSE over valid pixels (target ≠ 0; 0 marks missing depth).

    ``global`` divides by the number of valid pixels of the whole test set (LibMTL, SamsungLabs);
    ``per_batch`` averages batch means with equal weight (MTAN, CAGrad, Nash-MTL, FAMO).
    """

    name = "depth"

    def update(self, predictions: Tensor, targets: Tensor) -> None:
        """``predictions`` and ``targets``: [B, 1, H, W] (or [B, H, W]) depths."""
        check_finite_predictions(self.name, predictions)
        self._check_shapes(predictions, targets, "depth maps of the same shape, e.g. [B, 1, H, W]")
        per_image = (
            [self._state_of(predictions[i], targets[i]) for i in range(targets.shape[0])]
            if self.reduction == "per_image"
            else []
        )
        self._accumulate(self._state_of(predictions, targets) if self.reduction != "per_image" else None, per_image)

    @staticmethod
    def _state_of(predictions: Tensor, targets: Tensor) -> Tensor:
        valid = targets != 0
        error = (predictions.detach() - targets)[valid].to(torch.float64)
        truth = targets[valid].to(torch.float64)
        return torch.stack(
            [
                error.abs().sum(),
                (error.abs() / truth.abs()).sum(),
                (error**2).sum(),
                torch.tensor(float(valid.sum()), dtype=torch.float64),
            ]
        ).cpu()

    @staticmethod
    def _add(a: Tensor, b: Tensor) -> Tensor:
        return a + b

    def _has_valid(self, state: Tensor) -> bool:
        return bool(state[3] > 0)

    def _finish(self, state: Tensor) -> dict[str, float]:
        count = float(state[3])
        return {
            "abs_err": float(state[0]) / count,
            "rel_err": float(state[1]) / count,
            "rmse": math.sqrt(float(state[2]) / count),
        }


class NormalMetric(Metric):
    """Angle errors of surface normals in degrees over valid pixels (a non-zero target normal).

    Reports the mean and median angle and the fractions of pixels within 11.25°, 22.5° and 30°.
    Predictions are L2-normalised first (as the MTAN models do in their forward pass). The median
    over a whole test set comes from a histogram of 0.001° bins (exact to ±0.0005°, constant memory;
    the median of an even number of errors is the mean of the two middle ones, as NumPy's).

    ``global`` pools every valid pixel of the test set (LibMTL, SamsungLabs); ``per_batch``
    averages the per-batch mean, median and fractions (MTAN, CAGrad, Nash-MTL, FAMO: their
    "median" is a mean of per-batch medians). The MTAN lineage tests validity with
    ``sum(target) ≠ 0``, which also drops valid normals whose components sum to 0; here a pixel is
    valid when its target normal is not the zero vector.
    """

    name = "normal"
    BIN = 0.001  # degrees
    THRESHOLDS = (11.25, 22.5, 30.0)

    def update(self, predictions: Tensor, targets: Tensor) -> None:
        """``predictions`` and ``targets``: normals [B, 3, H, W]."""
        check_finite_predictions(self.name, predictions)
        self._check_shapes(predictions, targets, "normal maps [B, 3, H, W]")
        if predictions.dim() != 4 or predictions.shape[1] != 3:
            raise ShapeError(f"normal: expected [B, 3, H, W], got {tuple(predictions.shape)}.")
        per_image = (
            [self._state_of(predictions[i : i + 1], targets[i : i + 1]) for i in range(targets.shape[0])]
            if self.reduction == "per_image"
            else []
        )
        self._accumulate(self._state_of(predictions, targets) if self.reduction != "per_image" else None, per_image)

    def _state_of(self, predictions: Tensor, targets: Tensor) -> Tensor:
        valid = targets.abs().sum(1) > 0
        unit = torch.nn.functional.normalize(predictions.detach().to(torch.float64), dim=1)
        truth = torch.nn.functional.normalize(targets.to(torch.float64), dim=1)
        cosine = (unit * truth).sum(1)[valid].clamp(-1.0, 1.0)
        degrees = torch.rad2deg(torch.acos(cosine))
        bins = round(180.0 / self.BIN)
        histogram = torch.bincount((degrees / self.BIN).floor().long().clamp(0, bins - 1), minlength=bins)
        return {
            "sum": float(degrees.sum()),
            "count": int(degrees.numel()),
            "histogram": histogram.cpu(),
            "within": [int((degrees < t).sum()) for t in self.THRESHOLDS],
        }

    @staticmethod
    def _add(a: dict, b: dict) -> dict:
        return {
            "sum": a["sum"] + b["sum"],
            "count": a["count"] + b["count"],
            "histogram": a["histogram"] + b["histogram"],
            "within": [x + y for x, y in zip(a["within"], b["within"])],
        }

    def _has_valid(self, state: dict) -> bool:
        return state["count"] > 0

    def _finish(self, state: dict) -> dict[str, float]:
        count = state["count"]
        cumulative = torch.cumsum(state["histogram"], 0)

        def ranked(k: int) -> float:  # the (k+1)-th smallest error, to half a bin (0.0005°)
            index = int(torch.searchsorted(cumulative, torch.tensor(k, dtype=cumulative.dtype), right=True))
            return (index + 0.5) * self.BIN

        median = 0.5 * (ranked((count - 1) // 2) + ranked(count // 2))
        values = {"mean": state["sum"] / count, "median": median}
        for threshold, within in zip(self.THRESHOLDS, state["within"]):
            values[f"within_{threshold:g}"] = within / count
        return values
