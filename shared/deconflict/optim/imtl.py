"""IMTL — impartial multi-task learning (Liu et al., ICLR 2021): IMTL-L, IMTL-G and both together."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deconflict.errors import SolverError
from deconflict.optim._base import Combined, GramianAggregator, LearnedLogScales
from deconflict.optim._registry import register

__all__ = ["IMTL", "IMTLG", "IMTLL", "imtl_g_weights"]


def imtl_g_weights(gramian: Tensor, eps: float = 1e-12) -> Tensor:
    """α of IMTL-G from the Gramian: α ∝ G⁻¹ diag(G)^{1/2}, normalised so that Σ α = 1.

    This is the paper's closed form α_{2:T} = g_1 Uᵀ (D Uᵀ)⁻¹, α_1 = 1 − Σ α_{2:T} (D rows
    g_1 − g_t, U rows u_1 − u_t) rewritten on the Gramian: d = Σ α_t g_t has equal projections
    on every unit gradient u_t iff (G α)_t / ‖g_t‖ is the same for all t. A singular Gramian (zero
    or linearly dependent gradients, where the paper's inverse does not exist) is handled with the
    pseudo-inverse, as TorchJD does; if Σ α vanishes (e.g. opposite gradients) α = 0.
    """
    norms = gramian.diagonal().clamp_min(0).sqrt()
    scale = float(norms.max()) if norms.numel() else 0.0
    if scale == 0.0:
        return torch.zeros_like(norms)
    raw = (
        torch.linalg.solve(gramian, norms)
        if torch.linalg.matrix_rank(gramian, hermitian=True) == len(norms)
        else torch.linalg.pinv(gramian, hermitian=True) @ norms
    )
    total = raw.sum()
    if abs(float(total)) * scale < eps:  # Σα = 0: no combination with equal projections
        return torch.zeros_like(raw)
    return raw / total


@register()
class IMTLG(GramianAggregator):
    """IMTL-G: the combination of task gradients with equal projection on every task's direction.

    Liu et al., *Towards Impartial Multi-task Learning*, ICLR 2021, Sec. 3.2, Eq. (9)–(11):
    find d = Σ_t α_t g_t with Σ_t α_t = 1 such that d·u_1 = d·u_t for all t (u_t = g_t/‖g_t‖);
    closed form α_{2:T} = g_1 Uᵀ (D Uᵀ)⁻¹, α_1 = 1 − Σ α_{2:T}. The weights sum to 1 (the scale of a
    mean). The paper computes the gradients on the shared representation (feature level).
    """

    name = "imtl_g"
    claims = frozenset({"homogeneous", "permutation_invariant"})
    paper = "Liu et al. 2021, Towards Impartial Multi-task Learning (ICLR)"
    equation = "Sec. 3.2, Eq. (9)-(11): d = Σα_t g_t, Σα = 1, d·u_1 = d·u_t; α_{2:T} = g_1Uᵀ(DUᵀ)⁻¹"

    def __init__(self) -> None:
        super().__init__()

    def weights(self, gramian: Tensor) -> Tensor:
        try:
            return imtl_g_weights(gramian)
        except torch.linalg.LinAlgError as error:
            raise SolverError(f"{self._where()}: solving for IMTL-G's weights failed ({error}).") from None


@register()
class IMTLL(LearnedLogScales):
    """IMTL-L: learned loss scales that make every scaled loss equal to 1 at the optimum.

    Liu et al., *Towards Impartial Multi-task Learning*, ICLR 2021, Sec. 3.1, Eq. (6): each loss
    becomes e^{s_t} L_t − s_t with a learnable s_t (init 0), trained with the network; at the
    optimum e^{s_t} L_t = 1. Here: weights e^{s_t}, penalty −Σ_t s_t.
    """

    name = "imtl_l"
    paper = "Liu et al. 2021, Towards Impartial Multi-task Learning (ICLR)"
    equation = "Sec. 3.1, Eq. (6): Σ_t e^{s_t} L_t − s_t"

    def __init__(self, init: float = 0.0) -> None:
        super().__init__(init=init)

    @property
    def log_scale(self) -> nn.Parameter:
        """s_t."""
        return self.log_scales

    def scales(self, log_scales: Tensor) -> tuple[Tensor, Tensor]:
        return torch.exp(log_scales), -log_scales.sum()


@register()
class IMTL(Combined):
    """IMTL: IMTL-L scales the losses, IMTL-G combines the gradients of the scaled losses.

    Liu et al., *Towards Impartial Multi-task Learning*, ICLR 2021, Algorithm 1 (the hybrid the
    robust-MTL paper runs, as LibMTL's ``IMTL``): L̃_t = e^{s_t} L_t − s_t, per-task gradients of L̃_t
    on the shared part, α by IMTL-G's closed form, shared update Σ α_t g̃_t; each task's own
    parameters and s_t get the gradients of their own scaled loss.
    """

    name = "imtl"
    paper = "Liu et al. 2021, Towards Impartial Multi-task Learning (ICLR)"
    equation = "Alg. 1: IMTL-L (Eq. 6) on the losses, IMTL-G (Eq. 9-11) on the gradients of the scaled losses"
    stateful = True

    def __init__(self, init: float = 0.0) -> None:
        super().__init__(IMTLL(init=init), IMTLG())
        self.init = float(init)
