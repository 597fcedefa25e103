"""Per-task gradients: the T×D Jacobian of T losses with respect to D parameter entries."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor

from deconflict.errors import ShapeError

__all__ = ["JacobianEngine", "JacobianMode", "as_param_list", "jacobian", "loss_rows", "stack_losses"]

JacobianMode = Literal["auto", "batched", "loop"]
_MODES = ("auto", "batched", "loop")


def stack_losses(losses: Tensor | Sequence[Tensor]) -> Tensor:
    """Return the T losses as one 1-D tensor, whatever container they came in."""
    if isinstance(losses, Tensor):
        if losses.dim() == 0:
            return losses.reshape(1)
        if losses.dim() != 1:
            raise ShapeError(
                f"losses must be a 1-D tensor of T task losses (or a list of scalars), got shape "
                f"{tuple(losses.shape)}; reduce each task's loss to a scalar first (e.g. .mean())."
            )
        return losses
    losses = list(losses)
    if not losses:
        raise ShapeError("losses is empty: pass one scalar loss per task.")
    for index, loss in enumerate(losses):
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise ShapeError(f"loss {index} must be a scalar tensor, got {shape}.")
    return torch.stack([loss.reshape(()) for loss in losses])


def as_param_list(params: Iterable[Tensor] | Tensor) -> list[Tensor]:
    """A list of tensors that require grad (a single tensor, e.g. a representation, is wrapped)."""
    params = [params] if isinstance(params, Tensor) else list(params)
    if not params:
        raise ShapeError("no parameters given: pass the tensors the Jacobian is taken with respect to.")
    for index, param in enumerate(params):
        if not isinstance(param, Tensor) or not param.requires_grad:
            raise ShapeError(
                f"parameter {index} does not require grad; only tensors with requires_grad=True "
                "(parameters, or a representation inside the graph) have per-task gradients."
            )
    return params


def _flatten(grads: Sequence[Tensor | None], params: Sequence[Tensor], rows: int | None) -> Tensor:
    """Concatenate per-parameter gradients into [rows, D] (or [D] when rows is None); None → 0."""
    parts = []
    for grad, param in zip(grads, params):
        if grad is None:
            shape = (param.numel(),) if rows is None else (rows, param.numel())
            parts.append(torch.zeros(shape, dtype=param.dtype, device=param.device))
        else:
            parts.append(grad.reshape(-1) if rows is None else grad.reshape(rows, -1))
    return torch.cat(parts, dim=-1)


def _jacobian_batched(losses: Tensor, params: list[Tensor], retain_graph: bool) -> Tensor:
    rows = losses.shape[0]
    identity = torch.eye(rows, dtype=losses.dtype, device=losses.device)
    grads = torch.autograd.grad(
        losses,
        params,
        grad_outputs=identity,
        is_grads_batched=True,
        retain_graph=retain_graph,
        allow_unused=True,
    )
    return _flatten(grads, params, rows)


def loss_rows(losses: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """The T losses as separate scalars, for one backward pass each.

    Given a sequence, its own tensors are used: a backward pass from one of them reaches only that
    task's part of the graph. Given a stacked tensor, each row is a view of the stack, and autograd
    then also runs the other tasks' branches (with zero gradients) — correct, but slower; return a
    list of losses from the criterion to avoid it.
    """
    if isinstance(losses, Tensor):
        return list(stack_losses(losses))
    return [loss.reshape(()) for loss in losses]


def _jacobian_loop(
    rows: Sequence[Tensor], params: list[Tensor], retain_graph: bool, create_graph: bool = False
) -> Tensor:
    gradients = []
    last = len(rows) - 1
    for index, loss in enumerate(rows):
        grads = torch.autograd.grad(
            loss,
            params,
            retain_graph=retain_graph or create_graph or index < last,
            create_graph=create_graph,
            allow_unused=True,
        )
        gradients.append(_flatten(grads, params, None))
    return torch.stack(gradients)


class JacobianEngine:
    """Computes Jacobians and remembers which backend is right for the model at hand.

    ``mode="batched"`` takes all T vector-Jacobian products in one call of
    ``torch.autograd.grad(..., is_grads_batched=True)`` (vmap over the backward pass);
    ``mode="loop"`` runs T backward passes. Both give the same numbers (to float64 round-off).

    ``mode="auto"`` decides on the first call with T > 1, by rules that do not depend on timing (the
    two backends round differently in float32, so a choice by a stopwatch would make a run's
    numbers depend on the machine's load): on the CPU the loop (vmap's batched convolution
    backward is slower there, see ``tests/benchmarks/bench_jacobian.py``); on a GPU the batched
    call, unless torch cannot batch an operation of the model (an error, or vmap's warning that it
    falls back to a slow per-sample loop), then the loop. ``resolved`` tells the choice.
    """

    def __init__(self, mode: JacobianMode = "auto") -> None:
        if mode not in _MODES:
            raise ValueError(f"unknown Jacobian mode {mode!r}: use one of {', '.join(_MODES)}.")
        self.mode: JacobianMode = mode
        self.resolved: Literal["batched", "loop"] | None = None if mode == "auto" else mode

    def __call__(
        self, losses: Tensor | Sequence[Tensor], params: Iterable[Tensor] | Tensor, *, retain_graph: bool = True
    ) -> Tensor:
        rows = loss_rows(losses)
        losses = stack_losses(losses)
        params = as_param_list(params)
        if losses.shape[0] == 1 or self.resolved == "loop":
            return _jacobian_loop(rows, params, retain_graph)
        if self.resolved == "batched":
            return _jacobian_batched(losses, params, retain_graph)
        return self._calibrate(losses, rows, params, retain_graph)

    def _calibrate(self, losses: Tensor, rows: list[Tensor], params: list[Tensor], retain_graph: bool) -> Tensor:
        if losses.device.type != "cuda":
            self.resolved = "loop"
            return _jacobian_loop(rows, params, retain_graph)
        return self.batched_if_possible(losses, rows, params)

    def batched_if_possible(self, losses: Tensor, rows: list[Tensor], params: list[Tensor]) -> Tensor:
        """The batched Jacobian, or the loop's if torch cannot batch an operation of the graph
        (then ``resolved`` becomes ``"loop"``, else ``"batched"``). Keeps the graph."""
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = _jacobian_batched(losses, params, retain_graph=True)
        except (RuntimeError, NotImplementedError):
            self.resolved = "loop"
            return _jacobian_loop(rows, params, True)
        if any("batching rule" in str(w.message) for w in caught):
            self.resolved = "loop"
            return _jacobian_loop(rows, params, True)
        for w in caught:  # not ours to swallow
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self.resolved = "batched"
        return result


def jacobian(
    losses: Tensor | Sequence[Tensor],
    params: Iterable[Tensor] | Tensor,
    *,
    mode: JacobianMode = "auto",
    retain_graph: bool = True,
    create_graph: bool = False,
) -> Tensor:
    """The T×D Jacobian of T scalar losses with respect to ``params``.

    Row ``t`` is the gradient of ``losses[t]`` with respect to all entries of ``params``,
    flattened and concatenated in order (D = total number of entries). A parameter that a task
    does not use gets zeros in that task's row. ``params`` may be the shared parameters of a
    model (parameter-level gradients) or a shared representation tensor (feature-level
    gradients, as in MGDA-UB).

    Args:
        losses: a 1-D tensor of T losses, or a sequence of T scalar tensors.
        params: tensors that require grad.
        mode: ``"batched"``, ``"loop"`` or ``"auto"`` (see :class:`JacobianEngine`).
        retain_graph: keep the autograd graph for further backward passes (default True).
        create_graph: make the Jacobian itself differentiable (for penalties on gradients, e.g.
            CosReg); always computed with the loop backend.
    """
    if create_graph:
        return _jacobian_loop(loss_rows(losses), as_param_list(params), True, create_graph=True)
    return JacobianEngine(mode)(losses, params, retain_graph=retain_graph)
