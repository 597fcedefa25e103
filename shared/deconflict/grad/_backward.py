"""Aggregated backward pass: one direction into the shared part, each task's gradient into its own."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from deconflict.errors import NonFiniteError, ShapeError
from deconflict.grad._jacobian import JacobianEngine, JacobianMode, as_param_list, stack_losses
from deconflict.numerics import all_finite

__all__ = ["BackwardResult", "MultiTaskBackward", "multitask_backward", "split_like", "write_grad"]


def split_like(vector: Tensor, params: Sequence[Tensor]) -> list[Tensor]:
    """Cut a flat D-vector into pieces shaped like ``params`` (inverse of flattening)."""
    sizes = [p.numel() for p in params]
    if vector.dim() != 1 or vector.shape[0] != sum(sizes):
        raise ShapeError(
            f"direction has shape {tuple(vector.shape)} but the parameters have {sum(sizes)} entries in all."
        )
    return [piece.view_as(p) for piece, p in zip(torch.split(vector, sizes), params)]


def write_grad(params: Iterable[Tensor], vector: Tensor, *, accumulate: bool = False) -> None:
    """Store the flat ``vector`` into the ``.grad`` of ``params`` (overwriting unless ``accumulate``)."""
    params = list(params)
    for param, piece in zip(params, split_like(vector, params)):
        piece = piece.detach().to(dtype=param.dtype)
        if accumulate and param.grad is not None:
            param.grad.add_(piece)
        else:
            param.grad = piece.clone()


@dataclass
class BackwardResult:
    """What one aggregated backward pass saw and did (read by monitors and logs)."""

    jacobian: Tensor  # T×D: per-task gradients of the shared part (parameters or representation)
    direction: Tensor  # D: the aggregated direction written into the shared part
    level: str  # "parameter" or "feature"


def _names(rows: Sequence[int], task_names: Sequence[str] | None) -> str:
    return ", ".join(task_names[i] if task_names else f"task {i}" for i in rows)


def _check_finite_losses(losses: Tensor, task_names: Sequence[str] | None) -> None:
    if all_finite(losses.detach()):
        return
    bad = (~torch.isfinite(losses.detach())).nonzero().flatten().tolist()
    raise NonFiniteError(
        f"the loss of {_names(bad, task_names)} is NaN or Inf. Lower the learning rate or check the "
        "inputs, targets and loss for NaN, log(0) or division by zero."
    )


def _check_finite(matrix: Tensor, task_names: Sequence[str] | None, what: str) -> None:
    if all_finite(matrix):
        return
    bad = (~torch.isfinite(matrix)).any(dim=1).nonzero().flatten().tolist()
    raise NonFiniteError(
        f"the {what} gradient of {_names(bad, task_names)} contains NaN or Inf although the losses are "
        "finite (an infinite derivative in one task's backward pass can reach the other tasks' rows as "
        "0·Inf). Lower the learning rate, or look for sqrt/log/division at 0 in the model or loss."
    )


class MultiTaskBackward:
    """Backward pass of a multi-task model through an aggregator.

    Parameter level (``representation=None``): the per-task gradients of the shared parameters
    form a T×D Jacobian J; ``aggregate(J)`` gives one D-vector, written into the shared
    parameters' ``.grad``.

    Feature level (``representation=z``): the per-task gradients with respect to the shared
    representation ``z`` (computed by backpropagating through the task heads only) form J;
    ``aggregate(J)`` gives one direction on ``z``, which is then backpropagated once through the
    shared encoder. This is how MGDA-UB (Sener & Koltun 2018, Sec. 3.3) and the "(rep)" methods of
    the robust-MTL paper run.

    In both cases the task-specific parameters of task t receive task t's own gradient
    (row t of the Jacobian taken in the same backward passes), never the aggregate — times
    ``task_weights()[t]`` if ``task_weights`` is given (a callable asked after the aggregation, e.g.
    for the weights of a code lineage that back-propagates Σ_t α_t L_t). At feature
    level, ``downstream_shared`` parameters (shared by the tasks but applied after the
    representation, e.g. SegNet-MTAN's shared attention blocks) receive the sum of the task
    gradients, as in joint training; at parameter level they are ordinary shared parameters.
    """

    def __init__(self, mode: JacobianMode = "auto") -> None:
        self.engine = JacobianEngine(mode)

    def __call__(
        self,
        losses: Tensor | Sequence[Tensor],
        shared_params: Iterable[Tensor],
        task_params: Sequence[Iterable[Tensor]] | None,
        aggregate: Callable[[Tensor], Tensor],
        *,
        representation: Tensor | None = None,
        task_names: Sequence[str] | None = None,
        context: object = None,
        downstream_shared: Iterable[Tensor] = (),
        task_weights: Callable[[], Tensor] | None = None,
    ) -> BackwardResult:
        """``aggregate`` is called as ``aggregate(J)``, or ``aggregate(J, context)`` when a context is given.

        Pass the losses as a list of the tasks' own scalar tensors when you can (see
        :func:`~deconflict.grad.loss_rows`): each task's backward pass then stays in its own branch.
        """
        stacked = stack_losses(losses)
        _check_finite_losses(stacked, task_names)
        n_tasks = stacked.shape[0]
        shared_params = as_param_list(shared_params)
        per_task = [list(group) for group in (task_params or [])]
        if per_task and len(per_task) != n_tasks:
            raise ShapeError(f"{n_tasks} losses but task parameters for {len(per_task)} tasks.")
        own = [p for group in per_task for p in group]
        sizes = [sum(p.numel() for p in group) for group in per_task]
        downstream = list(downstream_shared) if representation is not None else []

        level = "parameter" if representation is None else "feature"
        targets = shared_params if representation is None else [representation]
        width = sum(p.numel() for p in targets)
        full = self.engine(losses, targets + own + downstream, retain_graph=representation is not None)
        shared_jac = full[:, :width]
        _check_finite(shared_jac, task_names, "shared-" + ("parameter" if level == "parameter" else "representation"))

        direction = aggregate(shared_jac) if context is None else aggregate(shared_jac, context)
        if direction.shape != (width,):
            raise ShapeError(f"the aggregator returned shape {tuple(direction.shape)}, expected ({width},).")
        if not all_finite(direction):
            raise NonFiniteError("the aggregated direction contains NaN or Inf although every task gradient is finite.")

        if representation is None:
            write_grad(shared_params, direction)
        else:  # the parameters before the representation; the downstream ones are written below
            skip = {id(p) for p in downstream}
            upstream = [p for p in shared_params if id(p) not in skip]
            grads = torch.autograd.grad(
                representation,
                upstream,
                grad_outputs=direction.view_as(representation).to(representation.dtype),
                allow_unused=True,
            )
            for param, grad in zip(upstream, grads):
                param.grad = torch.zeros_like(param) if grad is None else grad

        scales = None
        if task_weights is not None and per_task:
            scales = task_weights()
            if scales is None or tuple(scales.shape) != (n_tasks,):
                raise ShapeError(
                    f"task_weights() gave {None if scales is None else tuple(scales.shape)}, "
                    f"expected one weight per task ({n_tasks},)."
                )
        start = width
        for task, (group, size) in enumerate(zip(per_task, sizes)):
            if group:
                own_grad = full[task, start : start + size]
                write_grad(group, own_grad if scales is None else own_grad * scales[task].to(own_grad.dtype))
            start += size
        if downstream:
            write_grad(downstream, full[:, start:].sum(0))
        return BackwardResult(jacobian=shared_jac.detach(), direction=direction.detach(), level=level)


def multitask_backward(
    losses: Tensor | Sequence[Tensor],
    shared_params: Iterable[Tensor],
    task_params: Sequence[Iterable[Tensor]] | None,
    aggregate: Callable[[Tensor], Tensor],
    *,
    mode: JacobianMode = "auto",
    **options: Any,
) -> BackwardResult:
    """One-off :class:`MultiTaskBackward` (see there for ``representation``, ``task_names``, ``context``,
    ``downstream_shared``, ``task_weights``). Keep an instance to reuse its backend choice."""
    return MultiTaskBackward(mode)(losses, shared_params, task_params, aggregate, **options)
