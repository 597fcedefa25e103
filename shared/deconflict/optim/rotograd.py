"""RotoGrad — gradient homogenization by rotating the shared representation (Javaloy & Valera, ICLR 2022)."""

from __future__ import annotations

import torch
from torch import Tensor

from deconflict.optim._base import Aggregator, StepContext
from deconflict.optim._registry import register

__all__ = ["RotoGrad", "rotate"]


def rotate(representation: Tensor, rotation: Tensor) -> Tensor:
    """Apply an n×n rotation along dimension 1 (features / channels) of a [B, C, ...] tensor.

    Only the leading n channels are rotated when n < C; every position of the trailing dimensions
    (e.g. each pixel of a feature map) is rotated by the same matrix.
    """
    n = rotation.shape[0]
    head, tail = representation[:, :n], representation[:, n:]
    rotated = torch.einsum("ij,bj...->bi...", rotation.to(representation.dtype), head)
    return rotated if tail.shape[1] == 0 else torch.cat([rotated, tail], dim=1)


@register("rotate_only")
class RotoGrad(Aggregator):
    """RotoGrad: per-task rotations of the shared representation plus gradient-magnitude scaling.

    Javaloy & Valera, *RotoGrad: Gradient Homogenization in Multitask Learning*, ICLR 2022
    (Sec. 4–5; reference package ``rotograd`` 0.1.6). Task k's head sees R_k z (R_k orthogonal,
    detached there, so task losses never train it). With g_k = ∂L_k/∂z (i.e. R_kᵀ ∂L_k/∂(R_k z)):

    * **direction** (magnitude homogenization): n_k = ‖g_k‖, r_k = n_k / n_k⁰ (n⁰ taken at the first
      step and again after ``burn_in`` steps), α = r/Σr, C = Σ_k α_k n_k; the backbone receives
      Σ_k C g_k/n_k. ``scale_magnitudes=False`` gives the rotation-only variant (Σ_k g_k).
    * **rotations** are trained to align the rotated-back task gradients with a common target:
      v = mean_k g_k ‖m‖/‖g_k‖ (m = mean_k g_k), and L_rot,k = mean over the batch of
      ‖R_k v − ∂L_k/∂(R_k z)‖², minimised over R_k = B_k expm(A_k − A_kᵀ) (A_k strictly lower
      triangular, init 0) by the method's own Adam optimizer. Its learning rate is
      ``lr_factor`` × the network's current learning rate (read from the training engine at every
      step, so it follows the network's schedule), or the fixed ``lr`` if given.

    RotoGrad acts on the representation, so it runs at feature level only; the training engine
    routes each task's view through the model's ``decode_tasks``. As in the reference package,
    each B_k is a random rotation (Haar, seeded) unless ``init="identity"``.

    Args:
        lr: a fixed learning rate of the rotations (None: ``lr_factor`` × the network's).
        lr_factor: the rotations' learning rate relative to the network's (used when ``lr`` is None):
            1 (default; the reference package trains the rotations with the network's optimizer,
            and Recon App. B.1 "the learning rate of the neural networks"), 0.1 for Recon App. B.2
            (CityScapes: "10 times less than the learning rate of the neural networks").
        rotation_size: how many leading channels to rotate (None: all).
        burn_in: step after which the reference norms n⁰ are taken again (package default 20).
        scale_magnitudes: RotoGrad (True) or rotation only (False).
        init: ``"random"`` (the package's effective behaviour) or ``"identity"``.
        seed: seed of the random initial rotations.
    """

    name = "rotograd"
    claims = frozenset({"homogeneous"})
    paper = "Javaloy & Valera 2022, RotoGrad: Gradient Homogenization in Multitask Learning (ICLR)"
    equation = "Sec. 4-5: z_k = R_k z; ∇z = Σ_k C g_k/‖g_k‖, C = Σα_k‖g_k‖; R_k ← argmin ‖R_k v − ∇_{z_k}L_k‖²"
    levels = ("feature",)
    stateful = True

    def __init__(
        self,
        lr: float | None = None,
        lr_factor: float = 1.0,
        rotation_size: int | None = None,
        burn_in: int = 20,
        scale_magnitudes: bool = True,
        init: str = "random",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if lr is not None and not lr > 0:
            raise self._invalid(f"lr must be > 0 (or None: lr_factor × the network's), got {lr!r}.")
        if not (isinstance(lr_factor, (int, float)) and lr_factor > 0):
            raise self._invalid(f"lr_factor must be > 0, got {lr_factor!r}.")
        if rotation_size is not None and (not isinstance(rotation_size, int) or rotation_size < 1):
            raise self._invalid(f"rotation_size must be a positive integer or None, got {rotation_size!r}.")
        if init not in ("random", "identity"):
            raise self._invalid(f"init must be 'random' or 'identity', got {init!r}.")
        self.lr = None if lr is None else float(lr)
        self.lr_factor = float(lr_factor)
        self.rotation_size = rotation_size
        self.burn_in = int(burn_in)
        self.scale_magnitudes = bool(scale_magnitudes)
        self.init = init
        self.seed = int(seed)
        self.generators: Tensor | None = None  # A_k, [T, n, n]
        self.bases: Tensor | None = None  # B_k, [T, n, n]
        self._optimizer: torch.optim.Adam | None = None
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.generators = self.bases = self._optimizer = None
        self.reference_norms: Tensor | None = None
        self._step_rotations: Tensor | None = None

    def setup(self, n_tasks: int, device: torch.device, channels: int | None = None) -> None:
        if self.generators is not None or channels is None:
            return
        n = min(self.rotation_size or channels, channels)
        generator = torch.Generator().manual_seed(self.seed)
        if self.init == "identity":
            bases = torch.eye(n).repeat(n_tasks, 1, 1)
        else:  # Haar-random rotations: QR of a Gaussian with the sign fix, det = +1
            q, r = torch.linalg.qr(torch.randn(n_tasks, n, n, generator=generator))
            q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
            flip = torch.linalg.det(q) < 0
            q[flip, :, 0] = -q[flip, :, 0]
            bases = q
        self.bases = bases.to(device)
        self.generators = torch.zeros(n_tasks, n, n, device=device, requires_grad=True)
        self._optimizer = torch.optim.Adam([self.generators], lr=self.lr or 1.0)  # lr set at every step

    def rotations(self) -> Tensor:
        """The current R_k = B_k expm(S(A_k)), [T, n, n] (differentiable in A)."""
        lower = torch.tril(self.generators, diagonal=-1)
        return self.bases @ torch.linalg.matrix_exp(lower - lower.transpose(-1, -2))

    def task_views(self, representation: Tensor, n_tasks: int) -> list[Tensor]:
        """Each task's rotated view of z (the rotation detached: task losses do not train it)."""
        self.setup(n_tasks, representation.device, channels=representation.shape[1])
        with torch.enable_grad():
            self._step_rotations = self.rotations()  # reused by this step's rotation update
        rotations = self._step_rotations.detach()
        return [rotate(representation, rotations[k]) for k in range(n_tasks)]

    def aggregate(self, jacobian: Tensor, context: StepContext | None) -> Tensor:
        representation = self._require(context, "representation")
        if self.generators is None:
            self.setup(jacobian.shape[0], jacobian.device, channels=representation.shape[1])
        n_tasks = jacobian.shape[0]
        grads = jacobian.view(n_tasks, *representation.shape)  # g_k w.r.t. the un-rotated z
        norms = jacobian.norm(dim=1).clamp_min(1e-15)
        self._train_rotations(grads, norms, self.rotation_lr(context))
        if not self.scale_magnitudes:
            return jacobian.sum(0)
        if self.reference_norms is None or self.calls == self.burn_in + 1:
            self.reference_norms = norms.clone()
        ratios = norms / self.reference_norms
        alpha = ratios / ratios.sum().clamp_min(1e-15)
        magnitude = (alpha * norms).sum()
        return ((magnitude / norms)[:, None] * jacobian).sum(0)

    def rotation_lr(self, context: StepContext | None) -> float:
        """This step's learning rate of the rotations."""
        if self.lr is not None:
            return self.lr
        return self.lr_factor * float(self._require(context, "learning_rate"))

    def _train_rotations(self, grads: Tensor, norms: Tensor, lr: float) -> None:
        mean = grads.mean(0)
        target = (grads * (mean.norm() / norms).view(-1, *[1] * (grads.dim() - 1))).mean(0)
        batch = grads.shape[1]
        with torch.enable_grad():
            rotations = self._step_rotations if self._step_rotations is not None else self.rotations()
            self._step_rotations = None
            with torch.no_grad():
                rotated_grads = torch.stack([rotate(grads[k], rotations[k]) for k in range(grads.shape[0])])
            loss = sum(
                ((rotate(target, rotations[k]) - rotated_grads[k]) ** 2).sum() / batch for k in range(grads.shape[0])
            )
            self._optimizer.zero_grad()
            loss.backward()
        for group in self._optimizer.param_groups:
            group["lr"] = lr
        self._optimizer.step()
        self.last_rotation_loss = float(loss)

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "generators": None if self.generators is None else self.generators.detach().clone(),
            "bases": None if self.bases is None else self.bases.clone(),
            "optimizer": None if self._optimizer is None else self._optimizer.state_dict(),
            "reference_norms": self.reference_norms,
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.reference_norms = state["reference_norms"]
        if state["generators"] is not None:
            self.bases = state["bases"].clone()
            self.generators = state["generators"].clone().requires_grad_(True)
            self._optimizer = torch.optim.Adam([self.generators], lr=self.lr or 1.0)
            self._optimizer.load_state_dict(state["optimizer"])
