"""Update rules: how one batch becomes parameter updates, the part of a step the loop does not fix.

The training loop (:class:`~deconflict.train.Trainer`) owns the data, the epochs, the schedule,
checkpoints and callbacks; an :class:`UpdateRule` owns what happens to one batch: the forward
pass, the losses, the gradients and the optimizer step(s). The rules of the methods in
:mod:`deconflict.optim` are:

* :class:`WeightedLossUpdate` — one backward pass of Σ_t w_t L_t (+ the weighting's penalty):
  joint training and every loss weighting;
* :class:`AggregatedUpdate` — per-task gradients of the shared part (parameters, or the shared
  representation at feature level) combined by an aggregator, each task's own parameters with
  its own gradient (PCGrad, CAGrad, MGDA, Nash-MTL, …);
* :class:`RegularizedUpdate` — a differentiable penalty on the task gradients added to the loss
  (CosReg).

:func:`method_update` picks the one a method set needs. The papers' own procedures are rules too
(``deconflict.methods``): sequential per-task steps within one batch call
:meth:`Trainer.optimizer_step` once per task; per-task passes over the epoch fused by learned weights
run their passes at :meth:`UpdateRule.start_epoch` (over :meth:`Trainer.epoch_batches`) and fuse in
:meth:`UpdateRule.step` and :meth:`UpdateRule.end_epoch`. A rule's
state (``state_dict``) is saved in every checkpoint, so a killed run resumes bit-identically
whatever rule it trains with. :class:`UpdateHook` objects act on every optimizer step of any rule
(e.g. a fixed mask on the update of the shared parameters).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from deconflict import optim
from deconflict.grad import jacobian as grad_jacobian
from deconflict.grad import stack_losses
from deconflict.train.callbacks import StepOutput

if TYPE_CHECKING:  # pragma: no cover
    from deconflict.train.loop import Trainer

__all__ = [
    "AggregatedUpdate",
    "MethodUpdate",
    "RegularizedUpdate",
    "UpdateHook",
    "UpdateRule",
    "WeightedLossUpdate",
    "method_update",
]


class UpdateHook:
    """Acts around every optimizer step of any update rule (override what you need).

    ``before_step`` sees the gradients the rule wrote into ``.grad`` and may change them;
    ``after_step`` sees the parameters after the step (e.g. to restore entries that must not move).
    """

    def setup(self, trainer: Trainer) -> None: ...

    def before_step(self, trainer: Trainer) -> None: ...

    def after_step(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class UpdateRule:
    """Turns one batch into parameter updates (see the module docstring).

    ``step`` must return a :class:`~deconflict.train.StepOutput`; it uses the trainer's helpers
    (:meth:`Trainer.forward`, :meth:`Trainer.task_losses`, :meth:`Trainer.optimizer_step`).
    """

    def setup(self, trainer: Trainer) -> None:
        """Called once when the trainer is built."""

    def describe(self) -> str:
        """What identifies the rule in a run's fingerprint (a changed rule refuses old checkpoints)."""
        return type(self).__name__

    def start_epoch(self, trainer: Trainer) -> None:
        """Called before the first batch of every epoch."""

    def step(self, trainer: Trainer, inputs: Any, targets: Any) -> StepOutput:
        raise NotImplementedError

    def end_epoch(self, trainer: Trainer) -> None:
        """Called after the last batch of every epoch, before the scheduler steps."""

    def after_fit(self, trainer: Trainer, evaluate: Callable[[], list[dict[str, Any]]]) -> None:
        """Called once training is done (also when a finished run is loaded again), with ``evaluate``:
        the test metrics of the model as it is then (tidy rows). For analyses of the trained model that
        need the rule's state (e.g. pruning by DR-MGF's learned routes); the results go to
        ``records()``."""

    def gives_task_jacobian(self, trainer: Trainer) -> bool:
        """Whether every step's :class:`~deconflict.train.StepOutput` carries, in ``backward``, the
        Jacobian of the *unweighted* task losses with respect to ``trainer.parameter_split()[0]`` — the
        matrix a :class:`~deconflict.train.GradientMonitor` measures. Then the monitor reads it there
        instead of taking the same T backward passes again (one measurement of a SegNet-MTAN smoke run
        costs about what its training step does)."""
        return False

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class MethodUpdate(UpdateRule):
    """The rules of :mod:`deconflict.optim`'s methods: a loss weighting (always), and an aggregator or
    a regularizer. The weighting's weights scale the task losses; the methods' ``after_step`` hooks
    run after the optimizer step (FAMO's update, GradNorm's renormalisation)."""

    def __init__(self, methods: optim.MethodSet) -> None:
        self.methods = methods

    def describe(self) -> str:
        return f"{type(self).__name__}({self.methods.describe()})"

    def step(self, trainer: Trainer, inputs: Any, targets: Any) -> StepOutput:
        trainer.optimizer.zero_grad(set_to_none=True)
        representation, outputs = trainer.forward(inputs)
        rows, losses = trainer.task_losses(outputs, targets)
        trainer.watch_before_backward(rows, representation)
        context = self.context(trainer, inputs, targets, rows, losses, representation)
        weights = self.methods.weighting(losses, context)
        penalty = self.methods.weighting.penalty()
        result = self.backward(trainer, rows, weights, penalty, representation, context)
        trainer.optimizer_step()
        for built in self.methods.all:
            built.after_step(context)
        return StepOutput(
            epoch=trainer.epoch,
            step=trainer.step + 1,
            losses=losses.detach(),
            weights=weights.detach().clone(),
            backward=result,
            outputs={name: out.detach() for name, out in outputs.items()} if isinstance(outputs, dict) else None,
            targets=targets,
        )

    def backward(
        self,
        trainer: Trainer,
        rows: list[Tensor],
        weights: Tensor,
        penalty: Tensor | None,
        representation: Tensor,
        context: optim.StepContext,
    ) -> Any:
        raise NotImplementedError

    def context(
        self, trainer: Trainer, inputs: Any, targets: Any, rows: list[Tensor], losses: Tensor, representation: Tensor
    ) -> optim.StepContext:
        """The step's context for the methods; its expensive parts are computed only if asked for."""
        level = trainer.config.level
        cache: dict[str, Tensor] = {}

        def task_gradients() -> Tensor:
            if "jacobian" not in cache:
                target = representation if level == "feature" else trainer.model.last_shared_parameters()
                cache["jacobian"] = trainer.backward.engine(rows, target, retain_graph=True).detach()
            return cache["jacobian"]

        def losses_after_step() -> Tensor:
            if "after" not in cache:
                with torch.no_grad():
                    outputs = trainer.predict(inputs)
                    cache["after"] = stack_losses(trainer.ordered(trainer.criterion(outputs, targets))).detach()
            return cache["after"]

        return optim.StepContext(
            losses=losses,
            level=level,
            step=trainer.step + 1,
            epoch=trainer.epoch,
            task_gradients=task_gradients,
            losses_after_step=losses_after_step,
            representation=representation.detach() if level == "feature" else None,
            shared_layout=trainer.shared_layout if level == "parameter" else None,
            learning_rate=float(trainer.optimizer.param_groups[0]["lr"]),
        )


class WeightedLossUpdate(MethodUpdate):
    """One backward pass of Σ_t w_t L_t (+ the weighting's penalty)."""

    def backward(self, trainer, rows, weights, penalty, representation, context):
        objective = (torch.stack(rows) * weights).sum()
        (objective if penalty is None else objective + penalty).backward()
        return None


def _weighted_rows(rows: list[Tensor], weights: Tensor, penalty: Tensor | None) -> tuple[list[Tensor], Tensor]:
    """Each task's weighted loss (one backward branch per task) and their sum (+ penalty)."""
    weighted = [row * weight for row, weight in zip(rows, weights)]
    objective = torch.stack(weighted).sum()
    return weighted, objective if penalty is None else objective + penalty


class AggregatedUpdate(MethodUpdate):
    """Per-task gradients of the shared part aggregated into one direction (see
    :class:`~deconflict.grad.MultiTaskBackward`); the split of shared and task parameters and what
    the heads receive follow the trainer's configuration (``shared``, ``head_gradients``)."""

    def gives_task_jacobian(self, trainer: Trainer) -> bool:
        # at parameter level with weights that are exactly 1 (Equal, "sum"), the rows it differentiates,
        # L_t · 1, have bit for bit the gradients of L_t; any other weighting scales them
        weighting = self.methods.weighting
        return (
            trainer.config.level == "parameter"
            and isinstance(weighting, optim.Equal)
            and weighting.reduction == "sum"
            and weighting.penalty() is None
        )

    def backward(self, trainer, rows, weights, penalty, representation, context):
        weighted, objective = _weighted_rows(rows, weights, penalty)
        self._method_parameter_grads(objective)
        aggregator = self.methods.aggregator
        shared, own = trainer.parameter_split()
        weighted_heads = trainer.config.head_gradients == "weighted"
        return trainer.backward(
            weighted,
            shared,
            own,
            aggregator,
            representation=representation if trainer.config.level == "feature" else None,
            task_names=trainer.model.task_names,
            context=context,
            downstream_shared=trainer.model.downstream_shared_parameters(),
            task_weights=(lambda: aggregator.loss_weights) if weighted_heads else None,
        )

    def _method_parameter_grads(self, objective: Tensor) -> None:
        """The loss weighting's own parameters (UW's log-variances, IMTL-L's scales) get their gradient
        from the weighted objective, which no backward pass of this rule runs."""
        own = [p for p in self.methods.weighting.parameters() if p.requires_grad]
        if not own or not objective.requires_grad:
            return
        grads = torch.autograd.grad(objective, own, retain_graph=True, allow_unused=True)
        for param, grad in zip(own, grads):
            if grad is not None:  # None: the method set its own gradient (GradNorm)
                param.grad = grad.detach() if param.grad is None else param.grad + grad.detach()


class RegularizedUpdate(MethodUpdate):
    """Σ_t w_t L_t plus a differentiable penalty on the task gradients (taken with a graph)."""

    def backward(self, trainer, rows, weights, penalty, representation, context):
        weighted, objective = _weighted_rows(rows, weights, penalty)
        target = representation if trainer.config.level == "feature" else trainer.parameter_split()[0]
        jac = grad_jacobian(weighted, target, create_graph=True)
        (objective + self.methods.regularizer(jac, context)).backward()
        return None


def method_update(methods: optim.MethodSet) -> MethodUpdate:
    """The update rule a method set needs."""
    if methods.aggregator is not None:
        return AggregatedUpdate(methods)
    if methods.regularizer is not None:
        return RegularizedUpdate(methods)
    return WeightedLossUpdate(methods)
