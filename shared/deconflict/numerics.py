"""Small numerical helpers shared by every layer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["all_finite", "single_threaded_blas"]

_CONTROLLER = None


def all_finite(tensor: Tensor) -> bool:
    """Whether every entry is finite, cheaply: one sum (NaN and Inf propagate into it), and the
    exact element-wise test only when the sum is not finite (it may also overflow on its own)."""
    if tensor.numel() == 0:
        return True
    if bool(torch.isfinite(tensor.sum())):
        return True
    return bool(torch.isfinite(tensor).all())


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
