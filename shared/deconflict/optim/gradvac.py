"""GradVac — gradient vaccine (Wang et al., ICLR 2021)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from deconflict.optim._base import Aggregator, RandomMixin, StepContext
from deconflict.optim._registry import register

__all__ = ["GradVac"]

GROUPINGS = ("whole_model", "all_layer", "all_matrix")


@register("gradient_vaccine")
class GradVac(RandomMixin, Aggregator):
    """GradVac: pull each pair of task gradients towards an adaptive target cosine similarity.

    Wang et al., *Gradient Vaccine: Investigating and Improving Multi-task Optimization in
    Massively Multilingual Models*, ICLR 2021, Eq. (3)–(4) / Algorithm 1. For each task i and each
    other task j in random order, with φ_ij = cos(g_i', g_j) (g_i' the already corrected gradient,
    g_j the original) and the EMA target φ̂_ij:

        if φ_ij < φ̂_ij:  g_i' ← g_i' + ‖g_i'‖ (φ̂_ij √(1−φ_ij²) − φ_ij √(1−φ̂_ij²)) / (‖g_j‖ √(1−φ̂_ij²)) · g_j
        φ̂_ij ← (1 − β) φ̂_ij + β φ_ij        (on every visit, with the φ_ij before the correction)

    and the update is Σ_i g_i'. The correction makes cos(g_i', g_j) equal to φ̂_ij exactly. The
    targets start at 0, so the first step equals PCGrad. Each parameter group has its own targets
    and its own corrections (the paper's granularities): ``whole_model``, ``all_layer`` (one group
    per module owning shared parameters) or ``all_matrix`` (one group per parameter tensor). Like
    LibMTL and TorchJD, ``eps`` guards the denominators.

    Args:
        beta: EMA rate β of the targets, in [0, 1] (LibMTL's and TorchJD's default 0.5).
        grouping: one of ``whole_model``, ``all_layer``, ``all_matrix`` (parameter level; at feature
            level there is one group).
        eps: added to the denominators.
        seed: seed of the method's own generator (None: torch's global generator).
    """

    name = "gradvac"
    claims = frozenset({"homogeneous"})
    paper = "Wang et al. 2021, Gradient Vaccine (ICLR)"
    equation = "Alg. 1, Eq. (3)-(4): g_i += ‖g_i‖(φ̂√(1−φ²) − φ√(1−φ̂²))/(‖g_j‖√(1−φ̂²)) g_j if φ < φ̂; φ̂ ← (1−β)φ̂ + βφ"
    stateful = True

    def __init__(
        self, beta: float = 0.5, grouping: str = "whole_model", eps: float = 1e-8, seed: int | None = None
    ) -> None:
        super().__init__()
        if not (isinstance(beta, (int, float)) and 0.0 <= beta <= 1.0):
            raise self._invalid(f"beta must be in [0, 1], got {beta!r}.")
        if grouping not in GROUPINGS:
            raise self._invalid(f"grouping must be one of {', '.join(GROUPINGS)}, got {grouping!r}.")
        if not eps >= 0:
            raise self._invalid(f"eps must be ≥ 0, got {eps!r}.")
        self.beta = float(beta)
        self.grouping = grouping
        self.eps = float(eps)
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.targets: Tensor | None = None  # [groups, T, T], float64

    def _groups(self, width: int, context: StepContext | None) -> list[slice]:
        layout = None if context is None else context.shared_layout
        if self.grouping == "whole_model" or not layout:
            return [slice(0, width)]
        keys = [name if self.grouping == "all_matrix" else name.rpartition(".")[0] for name, _ in layout]
        groups, start, index = [], 0, 0
        while index < len(layout):
            stop, key = start, keys[index]
            while index < len(layout) and keys[index] == key:
                stop += layout[index][1]
                index += 1
            groups.append(slice(start, stop))
            start = stop
        return groups

    def _orders(self, n_tasks: int) -> Tensor:
        """Row i: the other tasks in a random order (a fresh permutation of them for each i)."""
        rows = []
        for i in range(n_tasks):
            others = torch.tensor([j for j in range(n_tasks) if j != i], dtype=torch.long)
            rows.append(others[torch.randperm(n_tasks - 1, generator=self._generator)])
        return torch.stack(rows)

    def corrections(self, gram: Tensor, targets: Tensor) -> Tensor:
        """T×T matrix C whose row i expresses g_i' in the original gradients (C J); updates ``targets``
        (T×T, float64) in place.

        Task i's corrections depend only on row i of C and of the targets, so the T sequences run
        side by side: at step k every task i is corrected against the k-th task of its own order.
        """
        n_tasks = gram.shape[0]
        if n_tasks == 1:
            return torch.ones(1, 1, dtype=gram.dtype)
        g = gram.detach().cpu().numpy().astype(np.float64)  # small: NumPy has less per-op overhead
        t = targets.numpy()  # shares memory: the targets are updated in place
        coefficients = np.eye(n_tasks)
        norms = np.sqrt(np.clip(np.diag(g), 0.0, None))
        orders = self._orders(n_tasks).numpy()
        rows = np.arange(n_tasks)
        for k in range(n_tasks - 1):
            others = orders[:, k]
            inner = np.einsum("ij,ji->i", coefficients, g[:, others])  # ⟨g_i', g_j⟩
            norm_i = np.sqrt(np.clip(np.einsum("ij,ij->i", coefficients @ g, coefficients), 0.0, None))  # ‖g_i'‖
            norm_j = norms[others]
            phi = inner / (norm_i * norm_j + self.eps)
            target = t[rows, others]
            below = phi < target
            if below.any():
                root_phi = np.sqrt(np.clip(1 - phi[below] ** 2, 0.0, None))
                root_target = np.sqrt(np.clip(1 - target[below] ** 2, 0.0, None))
                weight = (
                    norm_i[below]
                    * (target[below] * root_phi - phi[below] * root_target)
                    / (norm_j[below] * root_target + self.eps)
                )
                coefficients[rows[below], others[below]] += weight
            t[rows, others] = (1 - self.beta) * target + self.beta * phi
        return torch.from_numpy(coefficients).to(gram.dtype)

    def aggregate(self, jacobian: Tensor, context: StepContext | None) -> Tensor:
        n_tasks, width = jacobian.shape
        groups = self._groups(width, context)
        if self.targets is None or self.targets.shape != (len(groups), n_tasks, n_tasks):
            if self.targets is not None:
                raise self._invalid(
                    f"the number of tasks or groups changed ({tuple(self.targets.shape)} → "
                    f"{(len(groups), n_tasks, n_tasks)}); call reset()."
                )
            self.targets = torch.zeros(len(groups), n_tasks, n_tasks, dtype=torch.float64)
        direction = torch.empty(width, dtype=jacobian.dtype, device=jacobian.device)
        for index, columns in enumerate(groups):
            part = jacobian[:, columns]
            gram = (part @ part.T).to(torch.float64).cpu()
            weights = self.corrections(gram, self.targets[index]).sum(0)
            direction[columns] = weights.to(dtype=jacobian.dtype, device=jacobian.device) @ part
        return direction

    def state_dict(self) -> dict:
        return {**super().state_dict(), "targets": None if self.targets is None else self.targets.clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.targets = None if state["targets"] is None else state["targets"].clone()
