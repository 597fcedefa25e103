"""GradDrop — gradient sign dropout (Chen et al., NeurIPS 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from deconflict.optim._base import Aggregator, RandomMixin, StepContext
from deconflict.optim._registry import register

__all__ = ["GradDrop"]


@register("gradient_sign_dropout")
class GradDrop(RandomMixin, Aggregator):
    """GradDrop: at every element keep only the task gradients of one randomly chosen sign.

    Chen et al., *Just Pick a Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout*,
    NeurIPS 2020, Eq. (1)–(2) / Algorithm 1:

        P = ½ (1 + Σ_i ∇_i / Σ_i |∇_i|)                       (positive sign purity, per element)
        M_i = 1[P > U] · 1[∇_i > 0] + 1[P < U] · 1[∇_i < 0],   U ~ Uniform(0, 1), one per element
        ∇_new = Σ_i (ℓ_i + (1 − ℓ_i) M_i) ⊙ ∇_i               (ℓ_i: leak, 0 for plain MTL)

    **Feature level (the original).** GradDrop sits on a shared activation z of shape [B, ...].
    Each task's gradient is first multiplied by sign(z) (the next layer's weight gradient is
    z ⊙ ∇_z) and summed over the batch, so P, U and the masks have one entry per feature; the
    masks are then applied to every example's gradient (as the official layer in
    ``tensorflow/lingvo`` and LibMTL do). That layer can also rescale the result's norm
    (``keep_gradnorm_constant``); the paper does not, and neither does this class.

    **Parameter level.** P, U and the masks have one entry per shared parameter (as the CAGrad
    and Recon code and TorchJD do).

    Args:
        leak: ℓ, one number for all tasks or one per task, in [0, 1].
        sign_correction: multiply by sign(z) before summing over the batch (feature level).
        epsilon: added to Σ_i |∇_i|. ``0`` (default) is the paper's Eq. (1) (entries where every
            task's gradient is 0 get P = ½; they stay 0 whatever is kept); the official lingvo
            layer and LibMTL add ``1e-7``, which pulls P towards ½ wherever Σ_i |∇_i| ≲ 1e-6 and
            so drops signs at random even where all tasks agree (e.g. a single task's gradient
            at scale 1e-8 would be dropped about half of the time).
        seed: seed of the method's own generator (None: torch's global generator).
    """

    name = "graddrop"
    claims = frozenset({"homogeneous"})
    paper = "Chen et al. 2020, Just Pick a Sign: Gradient Sign Dropout (NeurIPS)"
    equation = "Eq. (1)-(2), Alg. 1: P = ½(1 + Σ∇_i/Σ|∇_i|), keep sign + if P > U, Σ_i (ℓ_i + (1−ℓ_i)M_i)∇_i"
    stateful = True  # its random generator

    def __init__(
        self,
        leak: float | Sequence[float] = 0.0,
        sign_correction: bool = True,
        epsilon: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        values = [leak] if isinstance(leak, (int, float)) else list(leak)
        if not values or any(not (0.0 <= float(v) <= 1.0) for v in values):
            raise self._invalid(f"leak must be in [0, 1] (one value, or one per task), got {leak!r}.")
        if not epsilon >= 0:
            raise self._invalid(f"epsilon must be ≥ 0, got {epsilon!r}.")
        self.leak = leak if isinstance(leak, (int, float)) else tuple(float(v) for v in leak)
        self.sign_correction = bool(sign_correction)
        self.epsilon = float(epsilon)
        self.seed = seed
        self.reset()

    def _leak(self, n_tasks: int, like: Tensor) -> Tensor:
        if isinstance(self.leak, (int, float)):
            return torch.full((n_tasks,), float(self.leak), dtype=like.dtype, device=like.device)
        if len(self.leak) != n_tasks:
            raise self._invalid(f"{len(self.leak)} leak values for {n_tasks} tasks.")
        return torch.tensor(self.leak, dtype=like.dtype, device=like.device)

    def masks(self, signals: Tensor) -> Tensor:
        """The T masks from T per-element signals (the gradients, or their batch sums)."""
        magnitude = signals.abs().sum(0) + self.epsilon
        ratio = torch.where(
            magnitude > 0,
            signals.sum(0) / magnitude.clamp_min(torch.finfo(signals.dtype).tiny),
            torch.zeros_like(magnitude),
        )
        purity = 0.5 * (1.0 + ratio)
        # U ~ Uniform(0, 1) on the open interval: torch.rand draws from [0, 1), and a draw of exactly 0
        # (one in 2^24 entries in float32) becomes the smallest positive number, so that P = 0 (every
        # task negative) keeps the gradient as P = 1 (every task positive) does
        uniform = torch.rand(purity.shape, generator=self._generator, dtype=purity.dtype)
        uniform = uniform.clamp_min(torch.finfo(purity.dtype).tiny).to(purity.device)
        return ((purity > uniform) & (signals > 0)) | ((purity < uniform) & (signals < 0))

    def aggregate(self, jacobian: Tensor, context: StepContext | None) -> Tensor:
        n_tasks = jacobian.shape[0]
        leak = self._leak(n_tasks, jacobian).view(n_tasks, 1)
        representation = None if context is None else context.representation
        if representation is not None and representation.dim() >= 2 and representation.numel() == jacobian.shape[1]:
            batch = representation.shape[0]
            per_example = jacobian.view(n_tasks, batch, -1)
            signals = per_example
            if self.sign_correction:
                signals = per_example * torch.sign(representation.reshape(1, batch, -1))
            masks = self.masks(signals.sum(dim=1)).to(jacobian.dtype)  # [T, features]
            kept = leak.unsqueeze(-1) + (1 - leak.unsqueeze(-1)) * masks.unsqueeze(1)  # [T, 1, features]
            return (kept * per_example).sum(0).reshape(-1)
        masks = self.masks(jacobian).to(jacobian.dtype)
        return ((leak + (1 - leak) * masks) * jacobian).sum(0)
