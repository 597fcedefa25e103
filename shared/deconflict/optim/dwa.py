"""DWA — dynamic weight average (Liu, Johns & Davison, CVPR 2019, the MTAN paper)."""

from __future__ import annotations

import torch
from torch import Tensor

from deconflict.optim._base import LossWeighting, StepContext
from deconflict.optim._registry import register

__all__ = ["DWA"]


@register("dynamic_weight_average")
class DWA(LossWeighting):
    """DWA: weigh each task by how slowly its loss fell over the last two epochs.

    Liu et al., *End-to-End Multi-Task Learning with Attention*, CVPR 2019, Eq. (7):

        λ_t(e) = T · exp(r_t(e−1)/τ) / Σ_i exp(r_i(e−1)/τ),   r_t(e−1) = L_t(e−1) / L_t(e−2),

    where L_t(e) is task t's training loss averaged over the steps of epoch e (as in the MTAN code).
    In the first two epochs, without two past averages, λ_t = 1. The weights change once per
    epoch (the engine calls :meth:`end_epoch`).

    Args:
        temperature: τ (the paper uses 2).
    """

    name = "dwa"
    paper = "Liu, Johns & Davison 2019, End-to-End Multi-Task Learning with Attention (CVPR)"
    equation = "Eq. (7): λ_t = T exp(r_t/τ)/Σ_i exp(r_i/τ), r_t = L_t(e−1)/L_t(e−2) (epoch means)"
    stateful = True

    def __init__(self, temperature: float = 2.0) -> None:
        super().__init__()
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise self._invalid(f"temperature must be > 0, got {temperature!r}.")
        self.temperature = float(temperature)
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.history: list[list[float]] = []  # epoch-mean losses of finished epochs
        self._sum: Tensor | None = None
        self._count = 0

    def current_weights(self, n_tasks: int) -> Tensor:
        """The weights of the running epoch."""
        if len(self.history) < 2:
            return torch.ones(n_tasks, dtype=torch.float64)
        ratio = torch.tensor(self.history[-1], dtype=torch.float64) / torch.tensor(
            self.history[-2], dtype=torch.float64
        )
        return n_tasks * torch.softmax(ratio / self.temperature, dim=0)

    def weigh(self, losses: Tensor, context: StepContext | None) -> Tensor:
        detached = losses.detach().to(torch.float64).cpu()
        self._sum = detached.clone() if self._sum is None else self._sum + detached
        self._count += 1
        return self.current_weights(losses.shape[0]).to(dtype=losses.dtype, device=losses.device)

    def end_epoch(self) -> None:
        if self._count:
            self.history.append((self._sum / self._count).tolist())
            self.history = self.history[-2:]
        self._sum, self._count = None, 0

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "history": self.history,
            "sum": None if self._sum is None else self._sum.tolist(),
            "count": self._count,
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.history = [list(h) for h in state["history"]]
        self._sum = None if state["sum"] is None else torch.tensor(state["sum"], dtype=torch.float64)
        self._count = int(state["count"])
