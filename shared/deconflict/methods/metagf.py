"""Meta-GF: meta-learned gradient fusion (Sun, Li & Xu, *Meta-GF: Training Dynamic-Depth Neural Networks
Harmoniously*, ECCV 2022), DR-MGF's predecessor and its "Meta-GF" ablation (DR-MGF Sec. 4.3.1: the
meta-weighted fusion without disentangled routes).

Each epoch (:mod:`deconflict.methods.fusion`): every task trains one pass from θ0 on its own loss plus the
others' with a small auxiliary weight (L_k + aux Σ_{j≠k} L_j, the plain network), then the task results
are fused with meta-weights, θ = Σ_k a_k ⊙ θ_k / Σ_k a_k, a_k = σ(w_k) (or exp(T·w_k)), and the meta-weights w
minimise the summed losses of the fused network over a pass (a differentiable fusion); an exponential
moving average smooths w across epochs. Every shared parameter is fused; each task's own parameters
take its own result. The ECCV paper's text is not among the team's references; the procedure follows the
DR-MGF paper's description and the official code (``SYVAE/MetaGF``, team notes §1.7):

=================  ===========================================================================
option             official code
=================  ===========================================================================
``granularity``    ``layer`` (one weight per parameter tensor: ResNet-56, MSDNet, default),
                   ``channel`` (one per output channel: VGG-16), ``connection`` (one per output ×
                   input connection, per channel for vectors: the multi-task Meta-GF-V2 code)
``weighting``      ``sigmoid`` (σ(w), ResNet / MSDNet / V2) or ``exp`` (exp(T·w), VGG, T = 1 on
                   CIFAR-10, 0.1 on CIFAR-100: ``temperature``)
``init``           1.0 (layer-wise code; ``task_init`` gives single tasks another value — the VGG
                   code starts the last exit at 5); 0.0 in V2
``aux``            0.1 (every multi-exit script); 0.5 in V2's ``run_MetaGF.sh``
``ema``            0.9 (ResNet / MSDNet, V2 script), 0.1 (VGG)
``meta_optimizer`` Adam, lr 0.1 (ResNet / MSDNet, VGG on CIFAR-100; 0.001 VGG on CIFAR-10; V2 1e-4)
=================  ===========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from deconflict.errors import ConfigError
from deconflict.methods.fusion import FusionUpdate

if TYPE_CHECKING:  # pragma: no cover
    from deconflict.train.loop import Trainer

__all__ = ["GRANULARITIES", "MULTITASK_CODE", "WEIGHTINGS", "MetaGFUpdate", "meta_weight_shape"]

GRANULARITIES = ("layer", "channel", "connection")
WEIGHTINGS = ("sigmoid", "exp")


def meta_weight_shape(shape: torch.Size | tuple[int, ...], granularity: str) -> tuple[int, ...]:
    """The shape of one task's meta-weight for a parameter of ``shape`` (broadcastable to it)."""
    dims = len(shape)
    if granularity == "layer" or dims == 0:
        return (1,) * max(dims, 1)
    if granularity == "connection" and dims >= 2:
        return (shape[0], shape[1], *([1] * (dims - 2)))
    return (shape[0], *([1] * (dims - 1)))


#: the multi-task Meta-GF-V2 code's settings (``F0_QuicklyApplication_MetaGF_ForMultitask``: σ(w) per
#: connection from 0, aux 0.5 and EMA 0.9 of ``run_MetaGF.sh``, Adam at the network's 1e-4)
MULTITASK_CODE = {
    "granularity": "connection",
    "init": 0.0,
    "aux": 0.5,
    "ema": 0.9,
    "meta_optimizer": {"name": "adam", "lr": 1e-4},
}


class MetaGFUpdate(FusionUpdate):
    """Meta-GF's training procedure (module docstring) as an update rule.

    ``PRESETS`` name sets of options (a run's ``metagf: {settings: <name>}``): ``code`` (the defaults: the
    layer-wise ResNet-56 / MSDNet code) and ``multitask_code`` (:data:`MULTITASK_CODE`).

    Args:
        aux: the other tasks' weight in a task's pass.
        granularity, weighting, init, temperature, ema: module docstring.
        task_init: initial meta-weight of single tasks, by name (others: ``init``).
        meta_optimizer: the outer optimisation's optimizer (default Adam, lr 0.1).
        bn_stats, task_weights, lr_scale: :class:`~deconflict.methods.fusion.FusionUpdate`.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"code": {}, "multitask_code": MULTITASK_CODE}

    def __init__(
        self,
        aux: float = 0.1,
        granularity: str = "layer",
        weighting: str = "sigmoid",
        init: float = 1.0,
        temperature: float = 1.0,
        task_init: Mapping[str, float] | None = None,
        meta_optimizer: Mapping[str, Any] | None = None,
        ema: float | None = 0.9,
        ema_start: int = 0,
        bn_stats: str = "reestimate",
        task_weights: Mapping[str, float] | None = None,
        lr_scale: float = 1.0,
    ) -> None:
        if granularity not in GRANULARITIES:
            raise ConfigError(f"Meta-GF granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}.")
        if weighting not in WEIGHTINGS:
            raise ConfigError(f"Meta-GF weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}.")
        if not float(temperature) > 0:
            raise ConfigError(f"Meta-GF temperature must be > 0, got {temperature!r}.")
        meta_optimizer = dict(meta_optimizer or {"name": "adam", "lr": 0.1})
        super().__init__(
            aux, task_weights, meta_optimizer, ema=ema, bn_stats=bn_stats, lr_scale=lr_scale, ema_start=ema_start
        )
        self.granularity = granularity
        self.weighting = weighting
        self.init = float(init)
        self.temperature = float(temperature)
        self.task_init = dict(task_init or {})
        self.meta: dict[str, list[Tensor]] = {}

    def describe(self) -> str:
        options = {
            "aux": self.aux,
            "granularity": self.granularity,
            "weighting": self.weighting,
            "init": self.init,
            "temperature": self.temperature,
            "task_init": self.task_init,
            "meta_optimizer": self.fusion_optimizer_options,
            "ema": self.ema,
            "ema_start": self.ema_start,
            "bn_stats": self.bn_stats,
            "task_weights": self.task_weights,
            "lr_scale": self.lr_scale,
        }
        return f"MetaGFUpdate({options})"

    def build(self, trainer: Trainer) -> None:
        names = list(trainer.model.task_names)
        unknown = sorted(set(self.task_init) - set(names))
        if unknown:
            raise ConfigError(f"Meta-GF task_init names unknown tasks {unknown}; the tasks are {names}.")
        params = dict(trainer.model.named_parameters())
        for name in self.shared_names:
            param = params[name]
            shape = meta_weight_shape(param.shape, self.granularity)
            self.meta[name] = [
                torch.full(
                    shape, float(self.task_init.get(task, self.init)), dtype=param.dtype, device=param.device
                ).requires_grad_(True)
                for task in names
            ]

    def fusion_variables(self) -> list[Tensor]:
        return [w for name in self.meta for w in self.meta[name]]

    def fusion_weights(self, name: str) -> Tensor | None:
        weights = torch.stack(self.meta[name])
        if self.weighting == "exp":
            return torch.exp(self.temperature * weights)
        return torch.sigmoid(weights)
