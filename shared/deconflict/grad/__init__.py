"""Layer 1 — per-task gradients (``deconflict.grad``).

* :func:`jacobian` — the T×D Jacobian of T losses with respect to shared parameters or a shared
  representation, batched (one vmapped backward) or looped (T backward passes), chosen automatically.
* :func:`gramian` — J Jᵀ, the T×T matrix of gradient inner products most methods need.
* :func:`write_grad` — store a flat direction into the ``.grad`` of parameters.
* :class:`MultiTaskBackward` / :func:`multitask_backward` — aggregate the shared part's Jacobian with
  any callable and write it back, while each task's own parameters receive that task's gradient,
  at parameter level or at feature level.

This layer imports nothing else from deconflict but errors.
"""

from torch import Tensor

from deconflict.grad._backward import (
    BackwardResult,
    MultiTaskBackward,
    multitask_backward,
    split_like,
    write_grad,
)
from deconflict.grad._jacobian import JacobianEngine, JacobianMode, jacobian, loss_rows, stack_losses


def gramian(jacobian_matrix: Tensor) -> Tensor:
    """The Gramian J Jᵀ (T×T) of a Jacobian: entry (i, j) is the inner product of g_i and g_j."""
    return jacobian_matrix @ jacobian_matrix.T


__all__ = [
    "BackwardResult",
    "JacobianEngine",
    "JacobianMode",
    "MultiTaskBackward",
    "gramian",
    "jacobian",
    "loss_rows",
    "multitask_backward",
    "split_like",
    "stack_losses",
    "write_grad",
]
