"""GradNorm — gradient normalization (Chen et al., ICML 2018)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deconflict.optim._base import LossWeighting, StepContext
from deconflict.optim._registry import register

__all__ = ["GradNorm"]


@register()
class GradNorm(LossWeighting):
    """GradNorm: learn task weights that equalise the tasks' gradient norms and training rates.

    Chen et al., *GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep Multitask
    Networks*, ICML 2018, Eq. (1)–(2) and Algorithm 1. On a layer W (the last shared layer at
    parameter level; the shared representation at feature level):

        G_i = ‖∇_W w_i L_i‖,   Ḡ = mean_i G_i,   r_i = L̃_i / mean_j L̃_j,   L̃_i = L_i(t) / L_i(0)
        L_grad = Σ_i | G_i − Ḡ · r_i^α |          (the target Ḡ r_i^α held constant)

    ∇_w L_grad updates only the weights (the network gets the gradient of Σ_i w_i L_i with w fixed);
    after every step the weights are renormalised to Σ_i w_i = T. The weights start at 1 and L_i(0)
    is the loss of the first step. The weights are updated by the model's optimizer (as a separate
    parameter group, with learning rate ``lr`` if given), as in the paper's Algorithm 1.

    Args:
        alpha: the asymmetry α (1.5 on NYUv2 in the paper).
        lr: learning rate of the weights' parameter group (None: the optimizer's).
    """

    name = "gradnorm"
    paper = "Chen et al. 2018, GradNorm: Gradient Normalization for Adaptive Loss Balancing (ICML)"
    equation = "Eq. (1)-(2), Alg. 1: L_grad = Σ_i |‖∇_W w_iL_i‖ − Ḡ r_i^α|; renormalise Σw = T"
    stateful = True
    trained_with_model = True
    needs = frozenset({"task_gradients"})

    def __init__(self, alpha: float = 1.5, lr: float | None = None) -> None:
        super().__init__()
        if not (isinstance(alpha, (int, float)) and alpha >= 0):
            raise self._invalid(f"alpha must be ≥ 0, got {alpha!r}.")
        if lr is not None and not lr > 0:
            raise self._invalid(f"lr must be > 0 or None, got {lr!r}.")
        self.alpha = float(alpha)
        self.lr = lr
        self.task_weights = nn.Parameter(torch.ones(0))
        self.initial_losses: Tensor | None = None

    def setup(self, n_tasks: int, device: torch.device) -> None:
        if self.task_weights.numel() != n_tasks:
            self.task_weights.data = torch.ones(n_tasks, device=device)

    def parameters(self) -> list[nn.Parameter]:
        return [self.task_weights]

    def reset(self) -> None:
        super().reset()
        with torch.no_grad():
            self.task_weights.fill_(1.0)
        self.initial_losses = None

    def weigh(self, losses: Tensor, context: StepContext | None) -> Tensor:
        gradients = self._require(context, "task_gradients")()
        n_tasks = losses.shape[0]
        self.setup(n_tasks, losses.device)
        detached = losses.detach().to(torch.float64)
        if self.initial_losses is None:
            self.initial_losses = detached.clone()
        ratio = detached / self.initial_losses
        relative = ratio / ratio.mean()
        norms = gradients.detach().to(torch.float64).norm(dim=1)  # ‖∇_W L_i‖
        w = self.task_weights.detach().to(torch.float64)
        g = w * norms  # G_i = ‖∇_W w_i L_i‖ = w_i ‖∇_W L_i‖
        target = g.mean() * relative**self.alpha  # constant
        # ∂L_grad/∂w_i = sign(G_i − target_i) ‖∇_W L_i‖ (target constant)
        gradient = torch.sign(g - target) * norms
        self.task_weights.grad = gradient.to(self.task_weights.dtype)
        self.last_gradnorm_loss = float((g - target).abs().sum())
        # a copy: the parameter changes in place at optimizer.step(), the weights of this step must not
        return self.task_weights.detach().to(dtype=losses.dtype, device=losses.device, copy=True)

    def after_step(self, context: StepContext) -> None:
        with torch.no_grad():  # renormalise so that Σ w = T (keeping them positive)
            self.task_weights.clamp_(min=1e-8)
            self.task_weights.mul_(self.task_weights.numel() / self.task_weights.sum())

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "task_weights": self.task_weights.detach().clone(),
            "initial_losses": None if self.initial_losses is None else self.initial_losses.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.task_weights.data = state["task_weights"].clone().to(self.task_weights.device)
        self.initial_losses = None if state["initial_losses"] is None else state["initial_losses"].clone()
