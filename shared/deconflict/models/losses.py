"""The dense-prediction losses of the MTAN lineage (MTAN, CAGrad, Nash-MTL, Recon, DR-MGF code).

* segmentation: negative log-likelihood of the model's log-probabilities (= cross-entropy on
  logits), averaged over labelled pixels (label −1 ignored);
* depth: L1 over valid pixels (target ≠ 0), divided by the number of valid pixels in the batch;
* normals: 1 − the mean cosine between predicted (unit) and true normals over valid pixels
  (true normal ≠ 0).

The MTAN code divides by the number of valid pixels with no guard, so a batch without any valid
pixel of a task gives NaN there; here such a batch gives a loss of 0 for that task (still in the
graph, so every method sees a zero gradient), which only differs where the original is undefined.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from torch import Tensor
from torch.nn import functional as F

from deconflict.errors import ConfigError, ShapeError

__all__ = ["DenseLoss", "segmentation_loss", "depth_loss", "normal_loss", "DENSE_LOSSES"]


def _valid_mean(total: Tensor, count: Tensor) -> Tensor:
    return total / count.clamp_min(1)


def segmentation_loss(log_probs: Tensor, target: Tensor, ignore_index: int = -1) -> Tensor:
    """Mean NLL over pixels whose label is not ``ignore_index`` (log_probs B×C×H×W, target B×H×W)."""
    if log_probs.dim() != 4 or target.shape != (log_probs.shape[0], *log_probs.shape[2:]):
        raise ShapeError(f"segmentation loss: predictions {tuple(log_probs.shape)} (B×C×H×W) and labels "
                         f"{tuple(target.shape)} (B×H×W) do not match.")
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
        raise ShapeError(f"normal loss: predictions {tuple(prediction.shape)} and targets {tuple(target.shape)} differ.")
    mask = _valid_mask(target)
    return 1 - _valid_mean((prediction * target * mask).sum(), mask.sum())


DENSE_LOSSES = {"segmentation": segmentation_loss, "depth": depth_loss, "normal": normal_loss}


class DenseLoss:
    """Criterion for the training engine: ``(outputs, targets) → {task: loss}`` for the given tasks."""

    def __init__(self, tasks: Iterable[str]) -> None:
        self.tasks = tuple(tasks)
        unknown = [t for t in self.tasks if t not in DENSE_LOSSES]
        if unknown:
            raise ConfigError(f"no dense loss for task(s) {unknown}; known: {', '.join(DENSE_LOSSES)}.")

    def __call__(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> dict[str, Tensor]:
        missing = [t for t in self.tasks if t not in outputs or t not in targets]
        if missing:
            raise ShapeError(f"dense loss: task(s) {missing} missing from the model outputs {sorted(outputs)} "
                             f"or the targets {sorted(targets)}.")
        return {task: DENSE_LOSSES[task](outputs[task], targets[task]) for task in self.tasks}

    def __repr__(self) -> str:
        return f"DenseLoss({list(self.tasks)})"

