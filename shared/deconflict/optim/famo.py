"""FAMO — fast adaptive multitask optimization (Liu et al., NeurIPS 2023)."""

from __future__ import annotations

import torch
from torch import Tensor

from deconflict.optim._base import LossWeighting, StepContext
from deconflict.optim._registry import register

__all__ = ["FAMO"]


@register()
class FAMO(LossWeighting):
    """FAMO: decrease every task's loss at the same relative rate, with O(1) extra cost.

    Liu et al., *FAMO: Fast Adaptive Multitask Optimization*, NeurIPS 2023, Algorithm 1 / 2
    (App. C). Task weights z = softmax(ξ) over learned logits ξ (init 0). The model follows
    c Σ_i z_i ∇ log(L_i − b_i + ε) with c = (Σ_i z_i / (L_i − b_i + ε))⁻¹ — i.e. the convex loss
    weights w_i = c z_i / (L_i − b_i + ε), which sum to 1. **After the optimizer step** FAMO
    evaluates the losses L' on the same batch (an extra forward pass without gradients; the
    engine provides it) and updates the logits with δ_i = log(L_i − b_i + ε) − log(L'_i − b_i + ε):
    ξ ← Adam step on (∂z/∂ξ)ᵀ δ with learning rate β and weight decay γ.

    Args:
        lr: β, the logits' Adam learning rate (0.025 in the paper and code).
        gamma: γ, the logits' weight decay (1e-3 in the paper's Algorithm 2 and its NYUv2/CelebA/QM9
            runs; the official code's class default is 1e-5 and its CityScapes run uses 1e-2).
        min_losses: b, known lower bounds of the losses (0 in all the paper's experiments).
        eps: ε (1e-8).
    """

    name = "famo"
    paper = "Liu et al. 2023, FAMO: Fast Adaptive Multitask Optimization (NeurIPS)"
    equation = "Alg. 1-2: w_i = c z_i/(L_i−b_i+ε), z = softmax(ξ); after the step ξ ← ξ − β Adam((∂z/∂ξ)ᵀδ + γξ)"
    stateful = True
    needs = frozenset({"losses_after_step"})

    def __init__(self, lr: float = 0.025, gamma: float = 1e-3, min_losses: float = 0.0, eps: float = 1e-8) -> None:
        super().__init__()
        if not lr > 0:
            raise self._invalid(f"lr must be > 0, got {lr!r}.")
        if not gamma >= 0:
            raise self._invalid(f"gamma must be ≥ 0, got {gamma!r}.")
        if not eps > 0:
            raise self._invalid(f"eps must be > 0, got {eps!r}.")
        self.lr, self.gamma, self.min_losses, self.eps = float(lr), float(gamma), float(min_losses), float(eps)
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.logits: Tensor | None = None
        self._optimizer: torch.optim.Adam | None = None
        self._before: Tensor | None = None

    def setup(self, n_tasks: int, device: torch.device) -> None:
        if self.logits is None:
            self.logits = torch.zeros(n_tasks, dtype=torch.float64, requires_grad=True)
            self._optimizer = torch.optim.Adam([self.logits], lr=self.lr, weight_decay=self.gamma)

    def weigh(self, losses: Tensor, context: StepContext | None) -> Tensor:
        self.setup(losses.shape[0], losses.device)
        shifted = losses.detach().to(torch.float64).cpu() - self.min_losses + self.eps
        if torch.any(shifted <= 0):
            raise self._invalid(f"at step {self.calls} a loss is below min_losses={self.min_losses}: lower min_losses.")
        z = torch.softmax(self.logits.detach(), dim=0)
        c = 1.0 / (z / shifted).sum()
        self._before = shifted
        return (c * z / shifted).to(dtype=losses.dtype, device=losses.device)

    def update(self, new_losses: Tensor) -> None:
        """FAMO's logit update from the losses after the step (called by :meth:`after_step`)."""
        if self._before is None:
            return
        after = new_losses.detach().to(torch.float64).cpu() - self.min_losses + self.eps
        delta = torch.log(self._before) - torch.log(after.clamp_min(self.eps))
        with torch.enable_grad():
            z = torch.softmax(self.logits, dim=0)
            (gradient,) = torch.autograd.grad(z, self.logits, grad_outputs=delta)
        self._optimizer.zero_grad()
        self.logits.grad = gradient
        self._optimizer.step()
        self._before = None

    def after_step(self, context: StepContext) -> None:
        self.update(self._require(context, "losses_after_step")())

    @property
    def task_weights(self) -> Tensor | None:
        """z = softmax(ξ), FAMO's current task weighting."""
        return None if self.logits is None else torch.softmax(self.logits.detach(), dim=0)

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "logits": None if self.logits is None else self.logits.detach().clone(),
            "optimizer": None if self._optimizer is None else self._optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if state["logits"] is not None:
            self.logits = None
            self.setup(len(state["logits"]), torch.device("cpu"))
            with torch.no_grad():
                self.logits.copy_(state["logits"])
            self._optimizer.load_state_dict(state["optimizer"])
