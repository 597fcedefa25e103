"""RLW and RGW — random loss / gradient weighting (Lin et al., TMLR 2022)."""

from __future__ import annotations

import torch
from torch import Tensor

from deconflict.optim._base import GramianAggregator, LossWeighting, RandomMixin, StepContext
from deconflict.optim._registry import register

__all__ = ["RGW", "RLW", "random_weights"]

DISTRIBUTIONS = ("normal", "uniform", "dirichlet", "bernoulli", "constrained_bernoulli")


def random_weights(n_tasks: int, distribution: str, generator: torch.Generator | None) -> Tensor:
    """One draw of random task weights (float64), as in the paper's experiments.

    ``normal`` / ``uniform`` / ``dirichlet``: softmax of N(0, I), U(0, 1)ᵀ, Dir(1) samples (the
    paper's default is the normal); ``bernoulli``: independent 0/1 weights (redrawn until not all
    0), unnormalised; ``constrained_bernoulli``: a one-hot vector (one task per step).
    """
    if distribution == "normal":
        return torch.softmax(torch.randn(n_tasks, generator=generator, dtype=torch.float64), dim=0)
    if distribution == "uniform":
        return torch.softmax(torch.rand(n_tasks, generator=generator, dtype=torch.float64), dim=0)
    if distribution == "dirichlet":
        gamma = -torch.log(torch.rand(n_tasks, generator=generator, dtype=torch.float64))  # Exp(1) = Gamma(1, 1)
        return torch.softmax(gamma / gamma.sum(), dim=0)
    if distribution == "bernoulli":
        while True:
            draw = (torch.rand(n_tasks, generator=generator, dtype=torch.float64) < 0.5).to(torch.float64)
            if draw.sum() > 0:
                return draw
    chosen = int(torch.randint(n_tasks, (1,), generator=generator))
    return torch.nn.functional.one_hot(torch.tensor(chosen), n_tasks).to(torch.float64)


class _RandomWeightsBase(RandomMixin):
    """What RLW and RGW share: the distribution, the scale and the seeded generator."""

    def _setup_random(self, distribution: str, scale: str, seed: int | None) -> None:
        if distribution not in DISTRIBUTIONS:
            raise self._invalid(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}.")
        if scale not in ("mean", "sum"):
            raise self._invalid(f"scale must be 'mean' or 'sum', got {scale!r}.")
        self.distribution, self.scale, self.seed = distribution, scale, seed
        self.reset()

    def _draw(self, n_tasks: int) -> Tensor:
        weights = random_weights(n_tasks, self.distribution, self._generator)
        return weights * n_tasks if self.scale == "sum" else weights


@register("random_loss_weighting")
class RLW(_RandomWeightsBase, LossWeighting):
    """RLW: random loss weights, drawn afresh at every step.

    Lin et al., *Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task
    Learning*, TMLR 2022, Eq. (3): λ = softmax(λ̃) with λ̃ ~ p(λ̃), here N(0, I) by default (the
    paper's and LibMTL's default); the weights sum to 1 (``scale="sum"`` multiplies them by T).

    Args:
        distribution: ``normal`` (default), ``uniform``, ``dirichlet``, ``bernoulli``,
            ``constrained_bernoulli`` (see :func:`random_weights`).
        scale: ``"mean"`` (weights sum to 1, the paper) or ``"sum"`` (sum to T, equal weighting's scale).
        seed: seed of the method's own generator (None: torch's global generator).
    """

    name = "rlw"
    paper = "Lin et al. 2022, Reasonable Effectiveness of Random Weighting (TMLR)"
    equation = "Eq. (3): λ = softmax(λ̃), λ̃ ~ N(0, I), redrawn every step; L = Σ λ_t L_t"
    stateful = True  # its random generator

    def __init__(self, distribution: str = "normal", scale: str = "mean", seed: int | None = None) -> None:
        super().__init__()
        self._setup_random(distribution, scale, seed)

    def weigh(self, losses: Tensor, context: StepContext | None) -> Tensor:
        return self._draw(losses.shape[0]).to(dtype=losses.dtype, device=losses.device)


@register("random_gradient_weighting")
class RGW(_RandomWeightsBase, GramianAggregator):
    """RGW: a random convex combination of the task gradients, drawn afresh at every step.

    Lin et al., *Reasonable Effectiveness of Random Weighting*, TMLR 2022, Sec. 3 (RGW):
    d = Σ_t λ_t g_t with λ = softmax(λ̃), λ̃ ~ N(0, I) (TorchJD's ``Random`` aggregator). On the
    shared part it equals RLW; unlike RLW, each task's own parameters get their unweighted gradient.

    Args: as :class:`RLW`.
    """

    name = "rgw"
    claims = frozenset({"homogeneous"})
    paper = "Lin et al. 2022, Reasonable Effectiveness of Random Weighting (TMLR)"
    equation = "Sec. 3: d = Σ_t λ_t g_t, λ = softmax(λ̃), λ̃ ~ N(0, I), redrawn every step"
    stateful = True

    def __init__(self, distribution: str = "normal", scale: str = "mean", seed: int | None = None) -> None:
        super().__init__()
        self._setup_random(distribution, scale, seed)

    def weights(self, gramian: Tensor) -> Tensor:
        return self._draw(gramian.shape[0]).to(gramian.device)
