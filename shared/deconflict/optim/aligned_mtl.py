"""Aligned-MTL — independent component alignment (Senushkin et al., CVPR 2023)."""

from __future__ import annotations

import torch
from torch import Tensor

from deconflict.errors import SolverError
from deconflict.optim._base import GramianAggregator
from deconflict.optim._registry import register

__all__ = ["AlignedMTL", "alignment_matrix"]

SCALE_MODES = ("min", "median", "rmse")


def alignment_matrix(gramian: Tensor, scale_mode: str = "min") -> Tensor:
    """B = √σ · V Λ^{-1/2} Vᵀ from the eigendecomposition G = V Λ Vᵀ of the Gramian.

    Eigenvalues below λ_max · T · ε(float32) (the official code's tolerance) are dropped, so B acts
    on the span of the gradients; σ is the smallest kept eigenvalue (``min``, the paper), their
    lower median (``median``) or their mean (``rmse``). With rank 0 (all gradients zero) B = I.
    """
    n_tasks = gramian.shape[0]
    eigenvalues, eigenvectors = torch.linalg.eigh(gramian)
    tolerance = eigenvalues.max() * n_tasks * torch.finfo(torch.float32).eps
    keep = eigenvalues > tolerance
    if not keep.any():
        return torch.eye(n_tasks, dtype=gramian.dtype, device=gramian.device)
    values = eigenvalues[keep]
    vectors = eigenvectors[:, keep]
    if scale_mode == "min":
        scale = values.min()
    elif scale_mode == "median":
        scale = values.sort().values[(len(values) - 1) // 2]  # lower median, as torch.median
    else:
        scale = values.mean()
    return scale.sqrt() * (vectors / values.sqrt()) @ vectors.T


@register("aligned_mtl_ub", "amtl")
class AlignedMTL(GramianAggregator):
    """Aligned-MTL: align the principal components of the task gradients to a well-conditioned set.

    Senushkin et al., *Independent Component Alignment for Multi-Task Learning*, CVPR 2023,
    Sec. 4 / Algorithm 1: with the Gramian G = J Jᵀ = V Λ Vᵀ, the balance matrix
    B = √σ V Λ^{-1/2} Vᵀ (σ: the smallest eigenvalue) turns the task gradients into Ĵ = B J, whose
    rows are orthogonal with equal norms √σ (condition number 1, the paper's claim); the update is
    Ĵᵀ w = Jᵀ (B w). At feature level (gradients of the shared representation) this is
    Aligned-MTL-UB.

    Args:
        scale_mode: σ = the smallest (``min``, the paper), lower-median (``median``) or mean
            (``rmse``) of the kept eigenvalues (TorchJD's options).
        reduction: ``"sum"`` (w = 1: the official code and LibMTL) or ``"mean"`` (w = 1/T: TorchJD).
    """

    name = "aligned_mtl"
    claims = frozenset({"homogeneous", "permutation_invariant"})
    paper = "Senushkin et al. 2023, Independent Component Alignment for Multi-Task Learning (CVPR)"
    equation = "Alg. 1: G = VΛVᵀ, B = √λ_min VΛ^{-1/2}Vᵀ, d = Jᵀ B w (w = 1)"

    def __init__(self, scale_mode: str = "min", reduction: str = "sum") -> None:
        super().__init__()
        if scale_mode not in SCALE_MODES:
            raise self._invalid(f"scale_mode must be one of {', '.join(SCALE_MODES)}, got {scale_mode!r}.")
        if reduction not in ("sum", "mean"):
            raise self._invalid(f"reduction must be 'sum' or 'mean', got {reduction!r}.")
        self.scale_mode = scale_mode
        self.reduction = reduction

    def weights(self, gramian: Tensor) -> Tensor:
        n_tasks = gramian.shape[0]
        preference = torch.ones(n_tasks, dtype=gramian.dtype, device=gramian.device)
        if self.reduction == "mean":
            preference = preference / n_tasks
        try:
            return alignment_matrix(gramian, self.scale_mode) @ preference
        except torch.linalg.LinAlgError as error:
            raise SolverError(f"{self._where()}: the eigendecomposition of the Gramian failed ({error}).") from None
