"""DR-MGF: dynamic routes and meta-weighted gradient fusion (Sun et al., *Learning Task-preferred
Inference Routes for Gradient De-conflict in Multi-output DNNs*, Sec. 3.3, Eq. 5–10, Alg. 1).

Every shared convolution w ∈ ℝ^{m×n×s×s} gets, per task k, importance variables ν_k ∈ ℝ^{m×n}: one per
(output, input) connection. Task k's forward uses its routed filters (Eq. 5–6)

    ŵ_k = ν̂_k ⊙ w/‖w‖,   ν̂_{k,(i,j)} = ν_{k,(i,j)} / (ε + 0.1 Σ_j ν_{k,(i,j)})^{0.5},

the norm taken over each s×s filter. Each epoch (:mod:`deconflict.methods.fusion`): every task trains one
pass from w0 on f_k + Σ_{i≠k} β f_i + λ l_k, l_k = Σ ν_k² (Eq. 7, 10; β = 0.4, λ = 1e-4), w and ν_k
together; its expected gradient is g_k = w0 − ŵ_k* (Eq. 9, sign as in the fusion module's docstring);
then ν′_k = ν_k / Σ_j ν_{k,(i,j)} weight the fusion w = Σ_k ν′_k ŵ_k* / Σ_k ν′_k, and ν minimises the
summed losses of the fused network (Eq. 8, a differentiable inner update), one outer step per batch of
a pass. Routes act on the shared convolutions only; other shared parameters (BatchNorm, biases) take the
tasks' mean, each task's own parameters its own pass's result.

Readings where the paper is silent or loose (each documented in ``papers/drmgf/README.md``):

* ν enters through its magnitude |ν| (route, lateral normalisation and ν′): importance is a
  magnitude, Eq. 6's root and Eq. 8's ratio need non-negative sums, and the official code uses |ν|.
* ν is initialised with PyTorch's Kaiming normal (fan-in = n, ReLU gain: the scale of an s×s slice of a
  Kaiming-initialised filter), independently per task (Sec. 4.1.3, footnote 3); ε = 1e-5.
* ν's optimizer: SGD, lr 0.1, momentum 0.9, weight decay 1e-5, following the network's multi-step
  schedule (Sec. 4.1.3); the outer optimisation uses an optimizer of the same settings of its own.

The official NYUv2 code (``SYVAE/DR-MGF``, team notes §1.2–1.6) differs; each difference is an option:

==================  =====================================  ==========================================
option              paper (default)                        official code
==================  =====================================  ==========================================
``init``            ``kaiming``                            ``norm``: ν_k = ‖w_{(i,j)}‖ (exact at start)
``normalisation``   ``paper``: (ε + 0.1 Σ_j|ν|)^0.5         ``lrn``: (1 + 1e-4 Σ_j|ν|)^0.75
``mixing``          None: task k's own route               10: (10 p_k + Σ_{j≠k} p_j) / (10 + K − 1)
``route_epochs``    None: routes every epoch               100: plain forward after epoch 100
``fusion``          ``meta``: ν learned in the outer opt.  ``scaled``: ν′·|s|, s learned (init 1e-3)
``ema``             None                                   0.9 on ν and s (``ema_start``: 100)
``bn_stats``        (silent) ``reestimate`` over the fusion   ``mixture`` (Gaussian mixture, fusing_bn_new),
                    pass: the fused network's statistics    then carried at momentum 0.1 (``carry``)
``beta``            0.4                                    0.5 (``run.sh``)
``task_weights``    none                                   ``{normal: 10}``
``nu_optimizer``    SGD 0.1, m 0.9, wd 1e-5                Adam 1e-4 (the network's optimizer)
==================  =====================================  ==========================================

``fusion="average"`` is the paper's DR-avgF ablation (Sec. 4.3.1): routes in the disentanglement, plain
averaging of the task results, no outer optimisation. :meth:`DRMGFUpdate.after_fit` prunes the connections
each task's learned ν marks as its own and evaluates every task (Fig. 14(a)).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from deconflict.errors import ConfigError
from deconflict.methods.fusion import FusionUpdate

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    from deconflict.train.loop import Trainer

__all__ = [
    "FUSIONS",
    "NORMALISATIONS",
    "NYUV2_CODE",
    "ROUTE_INITS",
    "DRMGFUpdate",
    "fusion_normalise",
    "important_connections",
    "lateral_normalise",
    "route_shape",
    "routed_parameters",
    "routed_weight",
]

ROUTE_INITS = ("kaiming", "norm")
NORMALISATIONS = ("paper", "lrn")
#: ``meta`` (Eq. 8: ν learned by the outer optimisation), ``scaled`` (the official code: ν′·|s| with
#: separate learned scalars s) or ``average`` (DR-avgF: the plain mean, nothing learned)
FUSIONS = ("meta", "scaled", "average")
#: the official NYUv2 code's settings (``SYVAE/DR-MGF`` ``run.sh`` and trainer; team notes §1.2–1.6), one
#: keyword option each: ``DRMGFUpdate(**NYUV2_CODE)`` or ``drmgf: {settings: nyuv2_code}`` in a run's row
NYUV2_CODE = {
    "init": "norm",
    "normalisation": "lrn",
    "mixing": 10.0,
    "route_epochs": 100,
    "fusion": "scaled",
    "ema": 0.9,
    "ema_start": 100,
    "bn_stats": "mixture",
    "beta": 0.5,
    "task_weights": {"normal": 10.0},
    "nu_optimizer": {"name": "adam", "lr": 1e-4, "weight_decay": 0.0},
}
#: Sec. 4.1.3: "optimize them using SGD with a momentum of 0.9 and a weight decay of 10^-5 … 10^-1"
PAPER_NU_OPTIMIZER = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-5}


def route_shape(param: Tensor) -> tuple[int, int]:
    """(m, n): the connections of a parameter viewed as filters — outputs × inputs of a convolution
    (m × n × s × s) or linear layer (m × n, 1 × 1 filters); a vector is one filter (1 × 1)."""
    if param.dim() >= 2:
        return int(param.shape[0]), int(param.shape[1])
    return 1, 1


def routed_parameters(model: nn.Module, shared: Sequence[str]) -> list[str]:
    """The weights of the model's shared convolutions (DR-MGF's routed filters), in module order."""
    wanted = set(shared)
    return [
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.conv._ConvNd) and f"{name}.weight" in wanted
    ]


def lateral_normalise(magnitude: Tensor, normalisation: str = "paper", eps: float = 1e-5) -> Tensor:
    """ν̂ from |ν| (… × m × n) across each output's input connections: Eq. 6,
    |ν| / (ε + 0.1 Σ_j |ν|)^0.5 (``paper``), or the official code's LRN, |ν| / (1 + 1e-4 Σ_j |ν|)^0.75 (``lrn``)."""
    total = magnitude.sum(-1, keepdim=True)
    if normalisation == "lrn":
        return magnitude / (1.0 + 1e-4 * total).pow(0.75)
    return magnitude / (eps + 0.1 * total).pow(0.5)


def routed_weight(weight: Tensor, route: Tensor) -> Tensor:
    """Eq. 5: route ⊙ w/‖w‖, every s×s filter of ``weight`` normalised to unit L2 norm and scaled by its
    connection's route (m × n)."""
    m, n = route.shape
    filters = F.normalize(weight.reshape(m, n, -1), dim=-1, eps=1e-12)
    return (filters * route.unsqueeze(-1)).reshape(weight.shape)


def fusion_normalise(magnitude: Tensor, eps: float = 1e-12) -> Tensor:
    """ν′ = |ν| / Σ_j |ν| over each output's input connections (Eq. 8, first line)."""
    return magnitude / magnitude.sum(-1, keepdim=True).clamp_min(eps)


def important_connections(weights: Tensor, ratio: float = 1.0) -> Tensor:
    """Per connection (… × m × n of ``weights``: K × m × n), the task whose weight is largest — its
    "task-specific important" connection (Sec. 4.3.2) — or −1 where the largest is not above ``ratio``
    times the second (1.0: a strict maximum; the Meta-GF routing scripts use 1.1)."""
    top = weights.topk(2, dim=0) if weights.shape[0] > 1 else None
    winner = weights.argmax(0)
    if top is None:
        return winner
    first, second = top.values[0], top.values[1]
    return torch.where(first > ratio * second, winner, torch.full_like(winner, -1))


class DRMGFUpdate(FusionUpdate):
    """DR-MGF's training procedure (module docstring; Alg. 1) as an update rule.

    ``PRESETS`` name sets of options (a run's ``drmgf: {settings: <name>}``): ``paper`` (the defaults) and
    ``nyuv2_code`` (:data:`NYUV2_CODE`).

    Args:
        routed: names of the parameters that get routes (default: every shared convolution's weight).
        beta: β of Eq. 10 (0.4; the official ``run.sh`` 0.5).
        penalty: λ of Eq. 7 (1e-4).
        init, normalisation, mixing, route_epochs, fusion, ema, bn_stats, task_weights: the paper's
            choices or the official code's (module docstring).
        eps: ε of Eq. 6.
        scaling_init: the initial value of the code's fusion scalars s (``fusion="scaled"``).
        nu_optimizer: ν's optimizer in the disentanglement passes (default: the paper's SGD).
        fusion_optimizer: the outer optimisation's (default: like ``nu_optimizer``; for ``scaled``
            Adam 0.1 on s, the code's ``metalr``).
        lr_scale: multiplies both optimizers' learning rates.
        prune_ratio: the margin of :func:`important_connections` in :meth:`after_fit`.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"paper": {}, "nyuv2_code": NYUV2_CODE}

    def __init__(
        self,
        routed: Sequence[str] | None = None,
        beta: float = 0.4,
        penalty: float = 1e-4,
        init: str = "kaiming",
        normalisation: str = "paper",
        eps: float = 1e-5,
        mixing: float | None = None,
        route_epochs: int | None = None,
        fusion: str = "meta",
        scaling_init: float = 1e-3,
        nu_optimizer: Mapping[str, Any] | None = None,
        fusion_optimizer: Mapping[str, Any] | None = None,
        ema: float | None = None,
        ema_start: int = 0,
        bn_stats: str = "reestimate",
        task_weights: Mapping[str, float] | None = None,
        lr_scale: float = 1.0,
        prune_ratio: float = 1.0,
    ) -> None:
        for value, allowed, what in (
            (init, ROUTE_INITS, "init"),
            (normalisation, NORMALISATIONS, "normalisation"),
            (fusion, FUSIONS, "fusion"),
        ):
            if value not in allowed:
                raise ConfigError(f"DR-MGF {what} must be one of {', '.join(allowed)}, got {value!r}.")
        if not float(penalty) >= 0 or not float(eps) > 0:
            raise ConfigError(f"DR-MGF needs penalty λ ≥ 0 and ε > 0, got {penalty!r} and {eps!r}.")
        if mixing is not None and not float(mixing) >= 1:
            raise ConfigError(f"DR-MGF mixing (the primary task's weight) must be ≥ 1 or None, got {mixing!r}.")
        if route_epochs is not None and (not isinstance(route_epochs, int) or route_epochs < 0):
            raise ConfigError(f"DR-MGF route_epochs must be an integer ≥ 0 or None, got {route_epochs!r}.")
        if not float(scaling_init) > 0 or not float(prune_ratio) >= 1:
            raise ConfigError("DR-MGF needs scaling_init > 0 and prune_ratio ≥ 1.")
        self.nu_optimizer = dict(nu_optimizer or PAPER_NU_OPTIMIZER)
        if fusion_optimizer is None:
            fusion_optimizer = {"name": "adam", "lr": 0.1} if fusion == "scaled" else self.nu_optimizer
        super().__init__(
            beta, task_weights, fusion_optimizer, ema=ema, bn_stats=bn_stats, lr_scale=lr_scale, ema_start=ema_start
        )
        self.routed = None if routed is None else list(routed)
        self.penalty = float(penalty)
        self.init = init
        self.normalisation = normalisation
        self.eps = float(eps)
        self.mixing = None if mixing is None else float(mixing)
        self.route_epochs = route_epochs
        self.fusion = fusion
        self.scaling_init = float(scaling_init)
        self.prune_ratio = float(prune_ratio)
        self.nu: dict[str, list[Tensor]] = {}
        self.scales: dict[str, list[Tensor]] = {}
        self._pruning: list[dict[str, Any]] = []
        self._epoch = 0

    def describe(self) -> str:
        options = {
            "routed": self.routed,
            "beta": self.aux,
            "penalty": self.penalty,
            "init": self.init,
            "normalisation": self.normalisation,
            "eps": self.eps,
            "mixing": self.mixing,
            "route_epochs": self.route_epochs,
            "fusion": self.fusion,
            "scaling_init": self.scaling_init,
            "nu_optimizer": self.nu_optimizer,
            "fusion_optimizer": self.fusion_optimizer_options,
            "ema": self.ema,
            "ema_start": self.ema_start,
            "bn_stats": self.bn_stats,
            "task_weights": self.task_weights,
            "lr_scale": self.lr_scale,
        }
        return f"DRMGFUpdate({options})"

    # -- variables -------------------------------------------------------------------------------
    def build(self, trainer: Trainer) -> None:
        model = trainer.model
        params = dict(model.named_parameters())
        names = self.routed if self.routed is not None else routed_parameters(model, self.shared_names)
        not_shared = [name for name in names if name not in set(self.shared_names)]
        if not_shared:
            raise ConfigError(
                f"DR-MGF routes shared parameters only; {not_shared} are not among the model's shared parameters."
            )
        if not names:
            raise ConfigError(
                f"DR-MGF: {type(model).__name__} has no shared convolution to route (pass routed=[...] names)."
            )
        self.routed = list(names)
        for name in self.routed:
            weight = params[name].detach()
            m, n = route_shape(weight)
            tasks = []
            for _ in range(model.num_tasks):
                if self.init == "norm":
                    value = weight.reshape(m, n, -1).norm(dim=-1).clone()
                else:
                    value = torch.empty(m, n, dtype=weight.dtype, device=weight.device)
                    nn.init.kaiming_normal_(value, mode="fan_in", nonlinearity="relu")
                tasks.append(value.requires_grad_(True))
            self.nu[name] = tasks
            if self.fusion == "scaled":
                self.scales[name] = [
                    torch.full((m, n), self.scaling_init, dtype=weight.dtype, device=weight.device).requires_grad_(True)
                    for _ in range(model.num_tasks)
                ]

    def task_variables(self) -> list[Tensor]:
        return [nu for name in self.nu for nu in self.nu[name]]

    def task_optimizer_options(self) -> Mapping[str, Any]:
        return self.nu_optimizer

    def fusion_variables(self) -> list[Tensor]:
        if self.fusion == "meta":
            return self.task_variables()
        if self.fusion == "scaled":
            return [s for name in self.scales for s in self.scales[name]]
        return []

    # -- the routes ------------------------------------------------------------------------------
    def routes_active(self) -> bool:
        """Whether this epoch's disentanglement runs through the routes (``route_epochs``)."""
        return self.route_epochs is None or self._epoch < self.route_epochs

    def route(self, name: str, task: int) -> Tensor:
        """ν̂ of task ``task`` for the parameter ``name`` (Eq. 6; with ``mixing``, the code's mix of all tasks')."""
        if self.mixing is None:
            return lateral_normalise(self.nu[name][task].abs(), self.normalisation, self.eps)
        routes = [lateral_normalise(nu.abs(), self.normalisation, self.eps) for nu in self.nu[name]]
        others = sum(r for j, r in enumerate(routes) if j != task)
        return (self.mixing * routes[task] + others) / (self.mixing + len(routes) - 1)

    def start_epoch(self, trainer: Trainer) -> None:
        self._epoch = trainer.epoch
        super().start_epoch(trainer)

    def task_overrides(self, trainer: Trainer, task: int) -> dict[str, Tensor]:
        if not self.routes_active():
            return {}
        params = dict(trainer.model.named_parameters())
        return {name: routed_weight(params[name], self.route(name, task)) for name in self.routed}

    def task_penalty(self, task: int) -> Tensor | None:
        if not self.routes_active() or self.penalty == 0:
            return None
        return self.penalty * sum(self.nu[name][task].pow(2).sum() for name in self.routed)

    def bake(self, trainer: Trainer, task: int) -> dict[str, Tensor]:
        """Eq. 9: the pass's filters with task ``task``'s routes baked in (ν̂_k* w_k*/‖w_k*‖)."""
        result = super().bake(trainer, task)
        if self.routes_active():
            with torch.no_grad():
                for name in self.routed:
                    result[name] = routed_weight(result[name], self.route(name, task))
        return result

    # -- fusion ---------------------------------------------------------------------------------
    def connection_weights(self, name: str) -> Tensor:
        """ν′ of every task for ``name`` (K × m × n, Eq. 8)."""
        return torch.stack([fusion_normalise(nu.abs()) for nu in self.nu[name]])

    def fusion_weights(self, name: str) -> Tensor | None:
        if self.fusion == "average" or name not in self.nu:
            return None
        weights = self.connection_weights(name)
        if self.fusion == "scaled":
            weights = weights.detach() * torch.stack([s.abs() for s in self.scales[name]])
        shape = self._stacked[name].shape if self._stacked is not None else None
        return _expand(weights, shape)

    # -- Fig. 14(a): pruning by the learned importance ------------------------------------------
    def importance(self) -> dict[str, Tensor]:
        """Per routed parameter, each connection's task-specific important task (or −1): the task with the
        largest ν′ (Sec. 4.3.2), by ``prune_ratio``."""
        with torch.no_grad():
            return {
                name: important_connections(self.connection_weights(name), self.prune_ratio) for name in self.routed
            }

    @contextlib.contextmanager
    def pruned(self, model: nn.Module, task: int) -> Iterator[int]:
        """Inside: the routed filters of connections important to ``task`` set to zero (yields how many)."""
        params = dict(model.named_parameters())
        saved, count = {}, 0
        with torch.no_grad():
            for name, owner in self.importance().items():
                mask = owner == task
                count += int(mask.sum())
                param = params[name]
                saved[name] = param.detach().clone()
                m, n = route_shape(param)
                param.view(m, n, -1)[mask] = 0.0
        try:
            yield count
        finally:
            with torch.no_grad():
                for name, value in saved.items():
                    params[name].copy_(value)

    def after_fit(self, trainer: Trainer, evaluate: Callable[[], list[dict[str, Any]]]) -> None:
        """Fig. 14(a): for each task in turn (from the first), prune the connections it has the largest ν′
        on and evaluate every task; ``records()["pruning"]`` keeps each metric beside the unpruned one."""
        names = list(trainer.model.task_names)
        baseline = {(r["task"], r["metric"], r["reduction"]): r["value"] for r in evaluate()}
        total = sum(int(nu[0].numel()) for nu in self.nu.values())
        self._pruning = []
        for task, pruned_task in enumerate(names):
            with self.pruned(trainer.model, task) as count:
                rows = evaluate()
            for row in rows:
                key = (row["task"], row["metric"], row["reduction"])
                self._pruning.append(
                    {
                        "pruned": pruned_task,
                        "connections_pruned": count,
                        "connections_percent": 100.0 * count / max(total, 1),
                        "task": row["task"],
                        "metric": row["metric"],
                        "reduction": row["reduction"],
                        "value": row["value"],
                        "unpruned": baseline.get(key),
                    }
                )

    def records(self) -> dict[str, list[dict[str, Any]]]:
        """``passes`` (:class:`~deconflict.methods.fusion.FusionUpdate`) and, after training, ``pruning``
        (Fig. 14(a): per pruned task and evaluated task metric, the value beside the unpruned one)."""
        return {**super().records(), "pruning": list(self._pruning)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "pruning": list(self._pruning)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._pruning = list(state.get("pruning", []))


def _expand(weights: Tensor, shape: torch.Size | None) -> Tensor:
    """K × m × n connection weights broadcast over each connection's filter entries (K × ``shape``)."""
    if shape is None:
        return weights
    k, m, n = weights.shape
    entries = int(torch.Size(shape[1:]).numel()) // (m * n)
    return weights.unsqueeze(-1).expand(k, m, n, entries).reshape(shape)
