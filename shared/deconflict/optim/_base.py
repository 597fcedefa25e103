"""Base classes of every MTL method: aggregators (Jacobian → direction) and loss weightings."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch import Tensor

from deconflict.errors import InvalidHyperparameterError, NonFiniteError, ShapeError

__all__ = ["Method", "Aggregator", "GramianAggregator", "LossWeighting"]


class Method:
    """What every registered method has: a name, its paper and equation, hyperparameters, state.

    Subclasses set the class attributes below; the registry and the generated catalogue read them.
    ``calls`` counts the steps the method has been applied (used in messages and by methods that
    act every N steps); :meth:`reset` returns a method to its freshly-built state.
    """

    name: ClassVar[str] = ""
    category: ClassVar[str] = ""  # "aggregator" | "weighting"
    paper: ClassVar[str] = ""
    equation: ClassVar[str] = ""
    levels: ClassVar[tuple[str, ...]] = ("parameter", "feature")
    stateful: ClassVar[bool] = False

    def __init__(self) -> None:
        self.calls = 0

    # -- hyperparameters -------------------------------------------------------------------
    @classmethod
    def hyperparameters(cls) -> dict[str, Any]:
        """The constructor's keyword arguments and their defaults."""
        signature = inspect.signature(cls.__init__)
        return {
            name: param.default
            for name, param in signature.parameters.items()
            if name != "self" and param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD)
        }

    def hparams(self) -> dict[str, Any]:
        """This instance's hyperparameter values."""
        return {name: getattr(self, name) for name in self.hyperparameters()}

    def _invalid(self, message: str) -> InvalidHyperparameterError:
        return InvalidHyperparameterError(f"{self.name}: {message}")

    def _where(self) -> str:
        """"<name> at step <n>", n counting this method's calls from 1 (for messages)."""
        return f"{self.name} at step {self.calls}"

    # -- state -----------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything learned from previous steps."""
        self.calls = 0

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the method exactly (saved in checkpoints)."""
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calls = int(state["calls"])

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.hparams().items())
        return f"{type(self).__name__}({args})"


class Aggregator(Method):
    """Maps a T×D Jacobian (row t = gradient of task t) to one D-vector update direction.

    The direction is a *descent* direction in the sense of ``.grad``: the optimizer subtracts it.
    """

    category = "aggregator"

    def __call__(self, jacobian: Tensor) -> Tensor:
        if not isinstance(jacobian, Tensor) or jacobian.dim() != 2 or jacobian.shape[0] == 0:
            shape = tuple(jacobian.shape) if isinstance(jacobian, Tensor) else type(jacobian).__name__
            raise ShapeError(
                f"{self.name}: expected a T×D Jacobian (2-D tensor, one row per task), got {shape}."
            )
        self.calls += 1
        if not torch.isfinite(jacobian).all():
            rows = torch.nonzero((~torch.isfinite(jacobian)).any(dim=1)).flatten().tolist()
            raise NonFiniteError(
                f"{self._where()}: the gradients of tasks {rows} contain NaN or Inf. Lower the learning "
                "rate or check the losses for NaN before aggregating."
            )
        with torch.no_grad():
            direction = self.aggregate(jacobian.detach())
        if not torch.isfinite(direction).all():
            raise NonFiniteError(f"{self._where()}: produced a non-finite direction from a finite Jacobian.")
        return direction

    def aggregate(self, jacobian: Tensor) -> Tensor:
        raise NotImplementedError


class GramianAggregator(Aggregator):
    """An aggregator whose direction is a weighted sum of the task gradients: d = Jᵀ w(J Jᵀ).

    Subclasses implement :meth:`weights` on the T×T Gramian; the last weights used are kept in
    ``last_weights`` for logging and monitors.
    """

    def __init__(self) -> None:
        super().__init__()
        self.last_weights: Tensor | None = None

    def aggregate(self, jacobian: Tensor) -> Tensor:
        gramian = jacobian @ jacobian.T
        weights = self.weights(gramian.to(torch.float64)).to(jacobian.dtype)
        self.last_weights = weights
        return weights @ jacobian

    def weights(self, gramian: Tensor) -> Tensor:
        raise NotImplementedError


class LossWeighting(Method):
    """Maps the T task losses to T weights; training then minimises Σ_t w_t L_t."""

    category = "weighting"

    def __call__(self, losses: Tensor) -> Tensor:
        if not isinstance(losses, Tensor) or losses.dim() != 1 or losses.shape[0] == 0:
            shape = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
            raise ShapeError(f"{self.name}: expected a 1-D tensor of T losses, got {shape}.")
        self.calls += 1
        if not torch.isfinite(losses).all():
            raise NonFiniteError(
                f"{self._where()}: losses {losses.detach().tolist()} contain NaN or Inf. Lower the "
                "learning rate or check the data."
            )
        return self.weigh(losses)

    def weigh(self, losses: Tensor) -> Tensor:
        raise NotImplementedError
