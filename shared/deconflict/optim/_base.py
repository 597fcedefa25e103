"""Base classes of every MTL method.

* :class:`Aggregator` — T×D Jacobian → D-vector direction (PCGrad, MGDA, CAGrad, ...).
* :class:`LossWeighting` — T losses → T weights, optionally with a penalty term and learnable
  parameters (equal, UW, DWA, GradNorm, FAMO, ...).
* :class:`Regularizer` — a differentiable penalty on the task gradients (CosReg).
* :class:`Combined` — a loss weighting and an aggregator that a paper runs together (IMTL).

The training engine gives methods that need more than the Jacobian or the losses a
:class:`StepContext` (the losses, lazily the task gradients of the last shared layer, lazily the
losses after the optimizer step), and calls :meth:`Method.after_step` after ``optimizer.step()``
and :meth:`Method.end_epoch` at the end of each epoch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from deconflict.errors import InvalidHyperparameterError, NonFiniteError, ShapeError
from deconflict.numerics import all_finite, gramian_float64, single_threaded_blas

__all__ = [
    "Aggregator",
    "Combined",
    "GramianAggregator",
    "LearnedLogScales",
    "LossWeighting",
    "Method",
    "RandomMixin",
    "Regularizer",
    "StepContext",
]


@dataclass
class StepContext:
    """What the training engine knows about the current step.

    Attributes:
        losses: the T task losses of this step, detached, before any weighting.
        level: ``"parameter"`` or ``"feature"``: where gradient-based methods act.
        step: the global step, counted from 1.
        epoch: the epoch, counted from 0.
        task_gradients: computes (lazily, once) the T×D' per-task gradients of the last shared
            layer (parameter level) or of the shared representation (feature level) — GradNorm.
        losses_after_step: computes (lazily) the task losses on the same batch after the optimizer
            step, without gradients — FAMO's update.
        representation: the shared representation (detached), at feature level — GradDrop's sign
            correction and batch handling.
        shared_layout: (name, number of entries) of each shared parameter, in the Jacobian's column
            order, at parameter level — GradVac's per-layer and per-matrix groups.
        learning_rate: the network's current learning rate (the optimizer's first parameter
            group) — RotoGrad's rotations follow it.
    """

    losses: Tensor
    level: str = "parameter"
    step: int = 0
    epoch: int = 0
    task_gradients: Callable[[], Tensor] | None = None
    losses_after_step: Callable[[], Tensor] | None = None
    representation: Tensor | None = None
    shared_layout: tuple[tuple[str, int], ...] | None = None
    learning_rate: float | None = None


class Method:
    """What every registered method has: a name, its paper and equation, hyperparameters, state.

    Subclasses set the class attributes below; the registry and the generated catalogue read them.
    ``calls`` counts the steps the method has been applied (used in messages and by methods that
    act every N steps); :meth:`reset` returns a method to its freshly-built state.
    """

    name: ClassVar[str] = ""
    category: ClassVar[str] = ""  # "aggregator" | "weighting" | "regularizer" | "combined"
    paper: ClassVar[str] = ""
    equation: ClassVar[str] = ""
    levels: ClassVar[tuple[str, ...]] = ("parameter", "feature")
    stateful: ClassVar[bool] = False
    #: what the method needs from the engine's StepContext ("task_gradients", "losses_after_step")
    needs: ClassVar[frozenset[str]] = frozenset()
    #: learnable parameters that join the model's optimizer (UW, IMTL-L); others train themselves
    trained_with_model: ClassVar[bool] = False
    #: properties the method's paper claims, which the test suite checks on every method that declares
    #: them (tests/optim/test_aggregator_properties.py): ``homogeneous`` (d(sJ) = s·d(J), s > 0),
    #: ``scale_invariant`` (d(sJ) = d(J)), ``permutation_invariant`` (the order of the tasks does not
    #: matter), ``non_conflicting`` (⟨g_t, d⟩ ≥ 0 for every task)
    claims: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def example_hparams(cls, n_tasks: int) -> dict[str, Any]:
        """Hyperparameters that make a valid instance for ``n_tasks`` tasks (for tests and listings;
        empty unless the method has required ones, e.g. fixed weights)."""
        return {}

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
        """ "<name> at step <n>", n counting this method's calls from 1 (for messages)."""
        return f"{self.name} at step {self.calls}"

    def _require(self, context: StepContext | None, need: str) -> Any:
        value = None if context is None else getattr(context, need)
        if value is None:
            raise ShapeError(
                f"{self.name} needs {need.replace('_', ' ')} from the training engine: use it through "
                f"deconflict.train.Trainer, or pass a StepContext with {need} set."
            )
        return value

    # -- learnable parameters and hooks --------------------------------------------------------
    def parameters(self) -> list[torch.nn.Parameter]:
        """Learnable parameters of the method itself (empty for most methods)."""
        return []

    def setup(self, n_tasks: int, device: torch.device) -> None:
        """Called by the engine before training: size learnable state for ``n_tasks`` tasks."""

    def task_views(self, representation: Tensor, n_tasks: int) -> list[Tensor] | None:
        """Per-task views of the shared representation, if the method gives each head its own
        (RotoGrad's rotations); None: every head sees the representation itself."""
        return None

    def after_step(self, context: StepContext) -> None:
        """Called by the engine after ``optimizer.step()``."""

    def end_epoch(self) -> None:
        """Called by the engine at the end of every epoch."""

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


class RandomMixin:
    """A method that draws random numbers: from its own generator if ``seed`` is set, else from
    torch's global generator (which the training engine seeds and checkpoints). It resets and
    saves its generator together with the method's other state."""

    seed: int | None
    _generator: torch.Generator | None = None

    def reset(self) -> None:
        super().reset()  # type: ignore[misc]
        self._generator = None if self.seed is None else torch.Generator().manual_seed(int(self.seed))

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()  # type: ignore[misc]
        return state if self._generator is None else {**state, "generator": self._generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)  # type: ignore[misc]
        if "generator" in state and self._generator is not None:
            self._generator.set_state(state["generator"])


def _check_finite_matrix(method: Method, matrix: Tensor) -> None:
    if not all_finite(matrix):
        rows = torch.nonzero((~torch.isfinite(matrix)).any(dim=1)).flatten().tolist()
        raise NonFiniteError(
            f"{method._where()}: the gradients of tasks {rows} contain NaN or Inf. Lower the learning "
            "rate or check the losses for NaN before aggregating."
        )


def _check_jacobian(method: Method, jacobian: Any) -> None:
    if not isinstance(jacobian, Tensor) or jacobian.dim() != 2 or jacobian.shape[0] == 0:
        shape = tuple(jacobian.shape) if isinstance(jacobian, Tensor) else type(jacobian).__name__
        raise ShapeError(f"{method.name}: expected a T×D Jacobian (2-D tensor, one row per task), got {shape}.")


class Aggregator(Method):
    """Maps a T×D Jacobian (row t = gradient of task t) to one D-vector update direction.

    The direction is a *descent* direction in the sense of ``.grad``: the optimizer subtracts it.
    """

    category = "aggregator"

    def __call__(self, jacobian: Tensor, context: StepContext | None = None) -> Tensor:
        _check_jacobian(self, jacobian)
        self.calls += 1
        _check_finite_matrix(self, jacobian)
        with torch.no_grad():
            direction = self.aggregate(jacobian.detach(), context)
        if not all_finite(direction):
            raise NonFiniteError(f"{self._where()}: produced a non-finite direction from a finite Jacobian.")
        return direction

    def aggregate(self, jacobian: Tensor, context: StepContext | None) -> Tensor:
        raise NotImplementedError


class GramianAggregator(Aggregator):
    """An aggregator whose direction is a weighted sum of the task gradients: d = Jᵀ w(J Jᵀ).

    Subclasses implement :meth:`weights` on the T×T Gramian (float64); the last weights used are
    kept in ``last_weights`` for logging and monitors. ``loss_weights`` are the weights a code
    lineage that multiplies the *losses* by the method's weights (Nash-MTL's, FAMO's) gives the
    task-specific parameters: ``last_weights`` unless a method says otherwise (Nash-MTL: the
    weights before its norm clipping, which that code applies to the shared gradients only).

    ``exact_gramian = True`` (CAGrad) accumulates the Gramian in float64 also for float32
    Jacobians, for methods that need ‖Σ_i w_i g_i‖ near 0 (see
    :func:`~deconflict.numerics.gramian_float64`); the others take J Jᵀ in J's dtype.
    """

    exact_gramian: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self.last_weights: Tensor | None = None

    @property
    def loss_weights(self) -> Tensor | None:
        return self.last_weights

    def aggregate(self, jacobian: Tensor, context: StepContext | None) -> Tensor:
        gramian = gramian_float64(jacobian) if self.exact_gramian else jacobian @ jacobian.T
        with single_threaded_blas():
            weights = self.weights(gramian.to(torch.float64)).to(jacobian.dtype)
        self.last_weights = weights
        return weights @ jacobian

    def weights(self, gramian: Tensor) -> Tensor:
        raise NotImplementedError


class LossWeighting(Method):
    """Maps the T task losses to T weights; training then minimises Σ_t w_t L_t (+ :meth:`penalty`).

    Weights may carry gradients to the method's own parameters (UW, IMTL-L); a method that
    changes the objective beyond a weighted sum adds a :meth:`penalty` term.
    """

    category = "weighting"

    def __call__(self, losses: Tensor, context: StepContext | None = None) -> Tensor:
        if not isinstance(losses, Tensor) or losses.dim() != 1 or losses.shape[0] == 0:
            shape = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
            raise ShapeError(f"{self.name}: expected a 1-D tensor of T losses, got {shape}.")
        self.calls += 1
        if not all_finite(losses):
            raise NonFiniteError(
                f"{self._where()}: losses {losses.detach().tolist()} contain NaN or Inf. Lower the "
                "learning rate or check the data."
            )
        weights = self.weigh(losses, context)
        if not all_finite(weights):
            raise NonFiniteError(f"{self._where()}: produced non-finite weights {weights.detach().tolist()}.")
        return weights

    def weigh(self, losses: Tensor, context: StepContext | None) -> Tensor:
        raise NotImplementedError

    def penalty(self) -> Tensor | None:
        """A term added to the weighted loss (e.g. UW's Σ log σ_t), or None."""
        return None


class LearnedLogScales(LossWeighting):
    """A loss weighting with one learned log-scale s_t per task, trained with the model (UW, IMTL-L).

    Subclasses implement :meth:`scales` (s ↦ weights and penalty). ``log_scales`` is sized by
    :meth:`setup` (the engine calls it with the number of tasks) or at the first call.
    """

    stateful = True
    trained_with_model = True

    def __init__(self, init: float = 0.0) -> None:
        super().__init__()
        self.init = float(init)
        self.log_scales = torch.nn.Parameter(torch.zeros(0))
        self._penalty: Tensor | None = None

    def scales(self, log_scales: Tensor) -> tuple[Tensor, Tensor]:
        """(weights, penalty) from the log-scales."""
        raise NotImplementedError

    def setup(self, n_tasks: int, device: torch.device) -> None:
        if self.log_scales.numel() == 0:
            self.log_scales.data = torch.full((n_tasks,), self.init, device=device)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.log_scales]

    def reset(self) -> None:
        super().reset()
        with torch.no_grad():
            self.log_scales.fill_(self.init)

    def weigh(self, losses: Tensor, context: StepContext | None) -> Tensor:
        self.setup(losses.shape[0], losses.device)
        if self.log_scales.shape[0] != losses.shape[0]:
            raise self._invalid(f"built for {self.log_scales.shape[0]} tasks, called with {losses.shape[0]}.")
        weights, self._penalty = self.scales(self.log_scales.to(losses.dtype))
        return weights

    def penalty(self) -> Tensor | None:
        return self._penalty

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "log_scales": self.log_scales.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.log_scales.data = state["log_scales"].clone().to(self.log_scales.device)


class Regularizer(Method):
    """A differentiable penalty R(J) on the task gradients, added to the loss (needs J with graph)."""

    category = "regularizer"

    def __call__(self, jacobian: Tensor, context: StepContext | None = None) -> Tensor:
        _check_jacobian(self, jacobian)
        self.calls += 1
        _check_finite_matrix(self, jacobian.detach())
        penalty = self.penalty(jacobian, context)
        if not all_finite(penalty):
            raise NonFiniteError(f"{self._where()}: the penalty is NaN or Inf.")
        return penalty

    def penalty(self, jacobian: Tensor, context: StepContext | None) -> Tensor:
        raise NotImplementedError


class Combined(Method):
    """A loss weighting and an aggregator run together as one named method (e.g. IMTL)."""

    category = "combined"
    parts: ClassVar[tuple[str, str]] = ("", "")

    def __init__(self, weighting: LossWeighting, aggregator: Aggregator) -> None:
        super().__init__()
        self.weighting = weighting
        self.aggregator = aggregator

    def reset(self) -> None:
        super().reset()
        self.weighting.reset()
        self.aggregator.reset()

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "weighting": self.weighting.state_dict(),
            "aggregator": self.aggregator.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.weighting.load_state_dict(state["weighting"])
        self.aggregator.load_state_dict(state["aggregator"])
