"""GO4Align — group optimization for multi-task alignment (Shen et al., NeurIPS 2024)."""

from __future__ import annotations

import torch
from torch import Tensor

from deconflict.optim._base import LossWeighting, RandomMixin, StepContext
from deconflict.optim._registry import register

__all__ = ["GO4Align", "kmeans_1d"]


def kmeans_1d(
    points: Tensor, k: int, generator: torch.Generator | None, tol: float = 1e-4, max_iter: int = 300
) -> Tensor:
    """Lloyd's K-means on scalars, started from k distinct random points (as ``kmeans_pytorch``,
    which the official code calls); an emptied cluster is re-seeded at a random point. Returns labels."""
    n = points.shape[0]
    k = min(k, n)
    centers = points[torch.randperm(n, generator=generator)[:k]].clone()
    labels = torch.zeros(n, dtype=torch.long)
    for _ in range(max_iter):
        labels = (points[:, None] - centers[None, :]).abs().argmin(dim=1)
        previous = centers.clone()
        for c in range(k):
            members = points[labels == c]
            if members.numel():
                centers[c] = members.mean()
            else:
                centers[c] = points[int(torch.randint(n, (1,), generator=generator))]
        if float((centers - previous).abs().sum()) ** 2 < tol:
            break
    return (points[:, None] - centers[None, :]).abs().argmin(dim=1)


@register("go4")
class GO4Align(RandomMixin, LossWeighting):
    """GO4Align: risk-guided group indicators, grouped dynamically, give the task weights.

    Shen et al., *GO4Align: Group Optimization for Multi-Task Alignment*, NeurIPS 2024 (Sec. 3,
    reference code ``autumn9999/GO4Align``, ``GO4ALIGN``). From the detached losses ℓ each step:

        s_k = Σ_j ℓ_j / ℓ_k                        (scale balance)
        p ← p ⊙ exp(−η ℓ), p ← p / Σ p             (risk history; p starts uniform)
        γ_k = s_k p_k                              (group indicator)

    the T indicators are clustered into K groups by K-means (afresh every step) and each task's
    weight is its group's mean indicator; the loss is Σ_k ω_k L_k. Only the losses are needed.

    The reference code's default is K = 1 (every task gets mean(γ); its K-means import is commented
    out, so K ≥ 2 does not run there as shipped); the paper's per-dataset K is not public, so K is
    a hyperparameter to set (each paper's params say which).

    Args:
        num_groups: K.
        step_size: η, the risk-history step (1e-4 in the code).
        seed: seed of the K-means initialisation generator (None: torch's global generator).
    """

    name = "go4align"
    paper = "Shen et al. 2024, GO4Align: Group Optimization for Multi-Task Alignment (NeurIPS)"
    equation = "Sec. 3: γ_k = (Σ_jℓ_j/ℓ_k)·p_k, p ← softmax(−η Σ_τ ℓ(τ)); ω_k = mean γ over k's K-means group"
    stateful = True

    def __init__(self, num_groups: int = 1, step_size: float = 1e-4, seed: int | None = None) -> None:
        super().__init__()
        if not isinstance(num_groups, int) or num_groups < 1:
            raise self._invalid(f"num_groups must be an integer ≥ 1, got {num_groups!r}.")
        if not step_size >= 0:
            raise self._invalid(f"step_size must be ≥ 0, got {step_size!r}.")
        self.num_groups = num_groups
        self.step_size = float(step_size)
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.risk: Tensor | None = None

    def weigh(self, losses: Tensor, context: StepContext | None) -> Tensor:
        ell = losses.detach().to(torch.float64).cpu()
        if torch.any(ell <= 0):
            raise self._invalid(
                f"at step {self.calls} a loss is ≤ 0; GO4Align's scale term Σℓ/ℓ_k needs positive losses."
            )
        if self.risk is None:
            self.risk = torch.full_like(ell, 1.0 / ell.shape[0])
        self.risk = self.risk * torch.exp(-self.step_size * ell)
        self.risk = self.risk / self.risk.sum()
        indicator = (ell.sum() / ell) * self.risk
        if self.num_groups == 1:
            weights = torch.full_like(indicator, float(indicator.mean()))
        else:
            labels = kmeans_1d(indicator, self.num_groups, self._generator)
            weights = torch.empty_like(indicator)
            for label in labels.unique():
                weights[labels == label] = indicator[labels == label].mean()
        self.last_groups = None if self.num_groups == 1 else labels.tolist()
        return weights.to(dtype=losses.dtype, device=losses.device)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "risk": None if self.risk is None else self.risk.clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.risk = None if state["risk"] is None else state["risk"].clone()
