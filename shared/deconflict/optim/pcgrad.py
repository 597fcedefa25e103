"""PCGrad — gradient surgery (Yu et al., NeurIPS 2020)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from deconflict.optim._base import GramianAggregator, RandomMixin
from deconflict.optim._registry import register

__all__ = ["PCGrad"]


@register()
class PCGrad(RandomMixin, GramianAggregator):
    """PCGrad: project each task gradient off the gradients it conflicts with.

    Yu et al., *Gradient Surgery for Multi-Task Learning*, NeurIPS 2020, Algorithm 1: for every
    task i, start from g_i^PC = g_i and, for each other task j **in random order**, if
    g_i^PC · g_j < 0 replace g_i^PC ← g_i^PC − (g_i^PC · g_j / ‖g_j‖²) g_j (projection onto the
    normal plane of the *original* g_j). The update is Δθ = Σ_i g_i^PC.

    Every g_i^PC is a linear combination of the original gradients, so the whole procedure runs on
    the T×T Gramian (no D-sized temporaries) and the direction is Jᵀw.

    Args:
        reduction: ``"sum"`` (the paper's Σ_i g_i^PC) or ``"mean"`` (the CAGrad/Recon code, which
            averages and rescales elsewhere).
        shuffle: visit the other tasks in random order (the paper) or in index order.
        seed: seed of the method's own random generator; ``None`` draws from torch's global
            generator (seeded by the training engine).
    """

    name = "pcgrad"
    claims = frozenset({"homogeneous"})
    paper = "Yu et al. 2020, Gradient Surgery for Multi-Task Learning (NeurIPS)"
    equation = "Alg. 1: g_i ← g_i − (g_i·g_j / ‖g_j‖²) g_j if g_i·g_j < 0; Δθ = Σ_i g_i^PC"
    stateful = True  # its random generator

    def __init__(self, reduction: str = "sum", shuffle: bool = True, seed: int | None = None) -> None:
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise self._invalid(f"reduction must be 'sum' or 'mean', got {reduction!r}.")
        self.reduction = reduction
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.reset()

    def _orders(self, n_tasks: int) -> Tensor:
        """Row i: the other tasks in the order task i visits them (one random permutation per i)."""
        rows = []
        for i in range(n_tasks):
            order = torch.randperm(n_tasks, generator=self._generator) if self.shuffle else torch.arange(n_tasks)
            rows.append(order[order != i])
        return torch.stack(rows)

    def projections(self, gramian: Tensor) -> Tensor:
        """T×T matrix C whose row i expresses g_i^PC in the basis of the original gradients (C J).

        Task i's projections depend only on row i, so the T sequences run side by side: at step k
        every task i projects against the k-th task of its own order.
        """
        n_tasks = gramian.shape[0]
        if n_tasks == 1:
            return torch.ones(1, 1, dtype=gramian.dtype, device=gramian.device)
        gram = gramian.detach().cpu().numpy().astype(np.float64)  # small: NumPy has less per-op overhead
        coefficients = np.eye(n_tasks)
        orders = self._orders(n_tasks).numpy()
        rows = np.arange(n_tasks)
        diagonal = np.diag(gram)
        for k in range(n_tasks - 1):
            others = orders[:, k]
            inner = np.einsum("ij,ji->i", coefficients, gram[:, others])  # g_i^PC · g_{others[i]}
            conflict = inner < 0
            if conflict.any():
                i, j = rows[conflict], others[conflict]
                coefficients[i, j] -= inner[conflict] / diagonal[j]
        return torch.from_numpy(coefficients).to(dtype=gramian.dtype, device=gramian.device)

    def weights(self, gramian: Tensor) -> Tensor:
        n_tasks = gramian.shape[0]
        weights = self.projections(gramian).sum(dim=0)
        if self.reduction == "mean":
            weights = weights / n_tasks
        return weights
