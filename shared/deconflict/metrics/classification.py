"""Classification metrics: top-k accuracy (multi-exit CIFAR/ImageNet), multi-label attributes (CelebA)."""

from __future__ import annotations

import torch
from torch import Tensor

from deconflict.errors import ShapeError
from deconflict.metrics._base import MetricError, check_finite_predictions

__all__ = ["BinaryAttributes", "TopKAccuracy"]


class TopKAccuracy:
    """Fraction of examples whose label is among the k highest scores, for each k (top-1, top-5)."""

    name = "topk"

    def __init__(self, ks: tuple[int, ...] = (1, 5)) -> None:
        if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
            raise MetricError(f"topk: ks must be positive integers, got {ks!r}.")
        self.ks = tuple(ks)
        self.reset()

    def reset(self) -> None:
        self.correct = {k: 0 for k in self.ks}
        self.total = 0

    def update(self, logits: Tensor, labels: Tensor) -> None:
        """``logits`` [N, C], ``labels`` [N]."""
        check_finite_predictions(self.name, logits)
        if logits.dim() != 2 or labels.shape != logits.shape[:1]:
            raise ShapeError(
                f"topk: expected logits [N, C] and labels [N], got {tuple(logits.shape)} and {tuple(labels.shape)}."
            )
        if max(self.ks) > logits.shape[1]:
            raise MetricError(f"topk: top-{max(self.ks)} needs at least {max(self.ks)} classes, got {logits.shape[1]}.")
        top = logits.detach().topk(max(self.ks), dim=1).indices
        hits = top == labels.view(-1, 1)
        for k in self.ks:
            self.correct[k] += int(hits[:, :k].any(1).sum())
        self.total += labels.shape[0]

    def compute(self) -> dict[str, float]:
        if self.total == 0:
            raise MetricError("topk: no example was seen.")
        return {f"top{k}": self.correct[k] / self.total for k in self.ks}


class BinaryAttributes:
    """Per-task accuracy, precision, recall and F1 of T binary attributes, over all examples.

    F1 of a task with no true positive is 0 (also when it has no positive target and no positive
    prediction: F1 is undefined there; scikit-learn's default gives 0 too). ``mean_f1`` averages
    the T F1 scores (the CelebA metric of FAMO / GO4Align / Recon).

    Args:
        threshold: decision threshold on the scores; 0 for logits (the default), 0.5 for probabilities.
    """

    name = "attributes"

    def __init__(self, threshold: float = 0.0) -> None:
        self.threshold = float(threshold)
        self.reset()

    def reset(self) -> None:
        self.counts: Tensor | None = None  # [T, 4]: TP, FP, FN, TN

    def update(self, scores: Tensor, targets: Tensor) -> None:
        """``scores`` [N, T] (logits or probabilities), ``targets`` [N, T] in {0, 1}."""
        check_finite_predictions(self.name, scores)
        if scores.shape != targets.shape or scores.dim() != 2:
            raise ShapeError(
                f"attributes: expected scores and targets [N, T], got {tuple(scores.shape)} and {tuple(targets.shape)}."
            )
        predicted = scores.detach() > self.threshold
        truth = targets > 0.5
        counts = torch.stack(
            [
                (predicted & truth).sum(0),
                (predicted & ~truth).sum(0),
                (~predicted & truth).sum(0),
                (~predicted & ~truth).sum(0),
            ],
            dim=1,
        ).cpu()
        self.counts = counts if self.counts is None else self.counts + counts

    def compute(self) -> dict[str, object]:
        if self.counts is None:
            raise MetricError("attributes: no example was seen.")
        tp, fp, fn, tn = (self.counts[:, i].to(torch.float64) for i in range(4))
        precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp_min(1), torch.zeros_like(tp))
        recall = torch.where(tp + fn > 0, tp / (tp + fn).clamp_min(1), torch.zeros_like(tp))
        f1 = torch.where(tp > 0, 2 * tp / (2 * tp + fp + fn).clamp_min(1), torch.zeros_like(tp))
        accuracy = (tp + tn) / (tp + fp + fn + tn)
        return {
            "accuracy": accuracy.tolist(),
            "precision": precision.tolist(),
            "recall": recall.tolist(),
            "f1": f1.tolist(),
            "mean_f1": float(f1.mean()),
            "mean_accuracy": float(accuracy.mean()),
        }
