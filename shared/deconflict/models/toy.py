"""The two-task toy network of DR-MGF (Sun et al.), Fig. 3(a) and Appendix A."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from deconflict.errors import InvalidHyperparameterError, ShapeError
from deconflict.models.base import MultiTaskModel, register

__all__ = ["TOY_PARAMETER_NAMES", "DRMGFToy", "toy_objective", "toy_task_optima"]

TOY_PARAMETER_NAMES = ("w1", "w2", "a1", "b1", "a2", "b2")


def _signed(weight: Tensor) -> Tensor:
    """sign(a) ⊙ |a|, written as in Eq. (A.1) (equal to a; its gradient is 1 except at a = 0)."""
    return torch.sign(weight) * torch.abs(weight)


@register("drmgf_toy")
class DRMGFToy(MultiTaskModel):
    """Two tasks sharing two filters, Eq. (A.1) of DR-MGF:

        θ_1 = sign(a_1) ⊙ |a_1| w_1 + sign(b_1) ⊙ |b_1| w_2,
        θ_2 = sign(a_2) ⊙ |a_2| w_1 + sign(b_2) ⊙ |b_2| w_2.

    Reading chosen here (the paper does not give shapes): θ_k ∈ R² (Eq. (A.2) adds [c_1, c_1] to it),
    the shared filters w_1, w_2 ∈ R², and the task weights a_k, b_k ∈ R² act element-wise (⊙), so
    each of the six weights is a 2-vector. ``encode`` returns the stacked shared filters [w_1; w_2],
    so feature-level and parameter-level gradients coincide for this model.
    """

    task_names = ("task1", "task2")

    def __init__(
        self, init: Mapping[str, Tensor | list[float]] | None = None, dtype: torch.dtype = torch.float64
    ) -> None:
        super().__init__()
        init = dict(init or {})
        unknown = set(init) - set(TOY_PARAMETER_NAMES)
        if unknown:
            raise InvalidHyperparameterError(
                f"unknown toy weights {sorted(unknown)}; the weights are {', '.join(TOY_PARAMETER_NAMES)}."
            )
        for name in TOY_PARAMETER_NAMES:
            value = torch.as_tensor(init.get(name, [1.0, 1.0]), dtype=dtype)
            if value.shape != (2,):
                raise ShapeError(f"toy weight {name} must have 2 entries, got shape {tuple(value.shape)}.")
            setattr(self, name, nn.Parameter(value.clone()))

    def encode(self, inputs: object = None) -> Tensor:
        return torch.stack([self.w1, self.w2])

    def decode(self, representation: Tensor) -> dict[str, Tensor]:
        w1, w2 = representation[0], representation[1]
        return {
            "task1": _signed(self.a1) * w1 + _signed(self.b1) * w2,
            "task2": _signed(self.a2) * w1 + _signed(self.b2) * w2,
        }

    def shared_parameters(self) -> list[nn.Parameter]:
        return [self.w1, self.w2]

    def task_parameters(self) -> list[list[nn.Parameter]]:
        return [[self.a1, self.b1], [self.a2, self.b2]]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [self.w1, self.w2]


def toy_task_optima(c1: float = 8.0, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """θ_1* = −[c_1, c_1] and θ_2* = +[c_1, c_1], the unique minimisers of f_1 and f_2 (c_2 > 0)."""
    corner = torch.tensor([c1, c1], dtype=dtype)
    return -corner, corner


def _objective(theta: Tensor, shift: Tensor, c1: float, c2: float) -> Tensor:
    offset = theta + shift
    squared = (offset * offset).sum(-1)  # (θ + s)(θ + s)ᵀ for a row vector θ
    floor = torch.full_like(squared, c1 * math.sqrt(2.0))
    return torch.maximum(squared, floor) + c2 * squared


def toy_objective(outputs: Mapping[str, Tensor], c1: float = 8.0, c2: float = 0.4) -> Tensor:
    """The two losses of Eq. (A.2), as a 1-D tensor [f_1(θ_1), f_2(θ_2)]:

        f_1(θ) = max{(θ + [c_1, c_1])(θ + [c_1, c_1])ᵀ, c_1√2} + c_2 (θ + [c_1, c_1])(θ + [c_1, c_1])ᵀ,
        f_2(θ) = max{(θ − [c_1, c_1])(θ − [c_1, c_1])ᵀ, c_1√2} + c_2 (θ − [c_1, c_1])(θ − [c_1, c_1])ᵀ.

    Read literally: the first term is the squared distance to the task's optimum, floored at the
    constant c_1√2 (≈ 11.31 for c_1 = 8), so inside the ball of radius (c_1√2)^{1/2} only the
    c_2 term pulls towards the optimum. The minimum of each f_k is c_1√2, at θ_k = ∓[c_1, c_1].
    """
    if c2 <= 0:
        raise InvalidHyperparameterError(f"toy objective: c2 must be > 0 for a unique optimum, got {c2}.")
    theta1, theta2 = outputs["task1"], outputs["task2"]
    shift = torch.tensor([c1, c1], dtype=theta1.dtype, device=theta1.device)
    return torch.stack([_objective(theta1, shift, c1, c2), _objective(theta2, -shift, c1, c2)])
