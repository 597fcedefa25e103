"""Saliency metrics (PASCAL-Context): mIoU and maxF over binarisation thresholds, ASTMT / MTI-Net style."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from deconflict.metrics._base import Metric, MetricError, check_finite_predictions

__all__ = ["SaliencyMetric"]


class SaliencyMetric(Metric):
    """mIoU and maxF of saliency maps, as in the ASTMT / MTI-Net evaluation the task-priority paper uses.

    The predicted saliency (in [0, 1]) is binarised at each threshold of ``thresholds``
    (linspace(0.2, 0.9, 15)); per image, the Jaccard index (1 when the target and the prediction
    are both empty) and precision / recall (tp / (tp + fp + 1e-12), tp / (tp + fn + 1e-12)) are
    taken; they are averaged over images for each threshold. mIoU is the best mean Jaccard over
    the thresholds; maxF the best F-measure (1 + β²) P R / (β² P + R) of the mean precision and
    recall, with β² = 0.3 (MTI-Net; ``beta2=1`` gives ASTMT's F1 variant).

    The reduction is per image by definition (``reduction`` is fixed).
    """

    name = "saliency"

    def __init__(self, thresholds: tuple[float, ...] | None = None, beta2: float = 0.3) -> None:
        self.thresholds = tuple(np.linspace(0.2, 0.9, 15).tolist()) if thresholds is None else tuple(thresholds)
        if not self.thresholds or not beta2 > 0:
            raise MetricError("saliency: needs at least one threshold and beta2 > 0.")
        self.beta2 = float(beta2)
        super().__init__("per_image")

    def update(self, predictions: Tensor, targets: Tensor) -> None:
        """``predictions``: saliency in [0, 1], [B, H, W] or [B, 1, H, W]; ``targets``: binary, same shape."""
        check_finite_predictions(self.name, predictions)
        self._check_shapes(predictions, targets, "saliency maps of the same shape")
        truth = (targets > 0.5).reshape(targets.shape[0], -1)
        scores = predictions.detach().reshape(predictions.shape[0], -1)
        rows = []
        for threshold in self.thresholds:
            predicted = scores > threshold
            tp = (predicted & truth).sum(1).double()
            fp = (predicted & ~truth).sum(1).double()
            fn = (~predicted & truth).sum(1).double()
            union = tp + fp + fn
            jaccard = torch.where(union > 0, tp / union.clamp_min(1), torch.ones_like(tp))
            rows.append(torch.stack([jaccard, tp / (tp + fp + 1e-12), tp / (tp + fn + 1e-12)], dim=1))
        per_image = torch.stack(rows, dim=1).cpu()  # [B, thresholds, 3]
        self._values.extend(per_image)

    def compute(self) -> dict[str, float]:
        if not self._values:
            raise MetricError("saliency: no image was seen.")
        mean = torch.stack(list(self._values)).mean(0)  # [thresholds, 3]
        jaccard, precision, recall = mean[:, 0], mean[:, 1], mean[:, 2]
        f = (1 + self.beta2) * precision * recall / (self.beta2 * precision + recall + 1e-12)
        return {"miou": float(jaccard.max()), "max_f": float(f.max())}
