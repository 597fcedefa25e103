"""Small numerical helpers shared by every layer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["all_finite", "gramian_float64", "single_threaded_blas"]

_CONTROLLER = None


def all_finite(tensor: Tensor) -> bool:
    """Whether every entry is finite, cheaply: one sum (NaN and Inf propagate into it), and the
    exact element-wise test only when the sum is not finite (it may also overflow on its own)."""
    if tensor.numel() == 0:
        return True
    if bool(torch.isfinite(tensor.sum())):
        return True
    return bool(torch.isfinite(tensor).all())


def gramian_float64(matrix: Tensor, chunk: int = 1 << 20) -> Tensor:
    """J Jᵀ accumulated in float64, whatever J's dtype (float32 Jacobians are converted in column
    chunks of ``chunk`` entries, so the extra memory is T × chunk doubles).

    A float32 Gramian resolves ‖Σ_i w_i g_i‖ only down to about 3e-4 · max_i ‖g_i‖ (the square
    root of float32's rounding error); in float64 the products of float32 entries are exact and
    the sums lose about 1e-16 relative, so norms are resolved down to about 1e-8 · max_i ‖g_i‖.
    """
    if matrix.dtype == torch.float64:
        return matrix @ matrix.T
    rows, columns = matrix.shape
    total = torch.zeros(rows, rows, dtype=torch.float64, device=matrix.device)
    for start in range(0, columns, chunk):
        block = matrix[:, start : start + chunk].to(torch.float64)
        total += block @ block.T
    return total


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run NumPy/SciPy linear algebra on one thread inside this block.

    The methods' solvers work on T×T matrices, where threads only cost: worse, NumPy's and SciPy's
    OpenBLAS threads keep spinning after a call and then compete with torch's own OpenMP threads
    for the same cores (measured on 2 cores: a CAGrad step took 7–24 ms instead of 1.5 ms).
    """
    global _CONTROLLER
    if _CONTROLLER is None:
        import numpy  # noqa: F401  (load the BLAS libraries before the controller looks for them)
        import scipy.linalg  # noqa: F401
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    with _CONTROLLER.limit(limits=1, user_api="blas"):
        yield
