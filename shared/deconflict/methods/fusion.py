"""Disentangle, then fuse: the per-epoch training procedure that Meta-GF and DR-MGF share.

Both train a multi-output network epoch by epoch in two stages (DR-MGF, Sun et al., Alg. 1; Meta-GF,
Sun, Li & Xu, ECCV 2022):

1. **Disentanglement.** For every task k in turn the network starts from the epoch's weights θ0 and
   trains one pass over the epoch's batches on task k's objective: its own loss and the other tasks'
   with a small auxiliary weight β (DR-MGF Eq. 10: f_k + Σ_{i≠k} β_i f_i, + λ l_k), through the
   procedure's forward for task k (DR-MGF: task k's routes, Eq. 5–6; Meta-GF: the plain network).
   The pass leaves task k's result θ_k (DR-MGF: its routes baked into the filters, Eq. 9); the
   parameters then go back to θ0 for the next task. Task k's expected gradient is g_k = θ0 − θ_k.
2. **Fusion.** The loop's own pass over the same batches. The fused parameters

       θ(φ) = Σ_k a_k(φ) ⊙ θ_k / Σ_k a_k(φ)  =  θ0 − Σ_k a_k g_k / Σ_k a_k

   are a differentiable function of the procedure's fusion variables φ (DR-MGF: its importance
   variables ν through ν′, Eq. 8; Meta-GF: its meta-weights). On every batch the summed task losses of
   the model at θ(φ) are minimised over φ (the outer optimisation; the θ_k stay fixed). A task's own
   parameters take that task's result, shared parameters without fusion weights the tasks' mean.
3. The model takes θ(φ) with the final φ (Alg. 1, line 12) before it is evaluated.

DR-MGF writes its update as w0 − g with g = Σ ν′ g_k / Σ ν′ and g_k = ν̂_k w_k/‖w_k‖ − w0 (Eq. 8–9 and
Alg. 1, lines 6 and 12); taken literally the two signs move w0 *away* from every task's result. The
official code's comment calls its Δ_t = θ_t − θ0 "−g": the update is w0 + Σ a Δ / Σ a, the weighted mean
of the tasks' results, which is what is implemented (with g_k = θ0 − θ_k the printed w0 − g holds).

:class:`FusionUpdate` is that procedure as an :class:`~deconflict.train.UpdateRule`: the passes of
stage 1 run in :meth:`~FusionUpdate.start_epoch` over :meth:`~deconflict.train.Trainer.epoch_batches`
(the batches of the loop's own pass, in its order), the fusion in :meth:`~FusionUpdate.step` (one
outer step per batch, whose outputs are the fused model's: the run's training metrics) and
:meth:`~FusionUpdate.end_epoch`. The network's optimizer (with its state: shared by the task passes
and carried across epochs, as the official code does; the papers are silent) and its schedule are the
trainer's. Subclasses say how task k runs (:meth:`~FusionUpdate.task_overrides`,
:meth:`~FusionUpdate.task_penalty`, :meth:`~FusionUpdate.task_variables`), what a pass leaves
(:meth:`~FusionUpdate.bake`) and how the results are weighted (:meth:`~FusionUpdate.fusion_weights`,
:meth:`~FusionUpdate.fusion_variables`).

Cost: an epoch is K passes of the task objective (every task's loss, one backward pass) and one pass of
the fused model — about K + 1 epochs of joint training (``tests/benchmarks/bench_fusion_epoch.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from deconflict.errors import ConfigError
from deconflict.grad import loss_rows
from deconflict.train.callbacks import StepOutput
from deconflict.train.config import build_optimizer
from deconflict.train.update import UpdateRule

if TYPE_CHECKING:  # pragma: no cover
    from deconflict.train.loop import Trainer

__all__ = ["BN_STATS", "FusionUpdate", "fuse", "objective_coefficients"]

#: the BatchNorm running statistics of the fused model (the papers say nothing about BatchNorm):
#: ``reestimate`` (default) resets them before the fusion pass and estimates them over it as a
#: cumulative average — the statistics of the fused network alone; ``carry`` leaves them as the task
#: passes left them (never reset between passes: the official code's) and ``mixture`` sets them to the
#: equal-weight Gaussian mixture of the statistics each task pass ended with (the DR-MGF code's
#: ``fusing_bn_new``), the fusion pass then updating them at the layers' momentum. With the momentum 0.1
#: of a short pass (the smoke profile's two steps) carried statistics stay those of the routed task
#: networks, and a test-time forward with them diverges.
BN_STATS = ("carry", "mixture", "reestimate")


def objective_coefficients(names: Sequence[str], aux: float, task_weights: Mapping[str, float] | None = None) -> Tensor:
    """C[k, t]: the weight of task t's loss in task k's disentanglement objective — w_t for t = k and
    β·w_t otherwise (DR-MGF Eq. 10 with β_i = β; w: ``task_weights``, 1 by default; the DR-MGF code
    weights NYUv2's normal loss by 10)."""
    weights = dict(task_weights or {})
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ConfigError(f"task_weights name unknown tasks {unknown}; the tasks are {list(names)}.")
    w = torch.tensor([float(weights.get(name, 1.0)) for name in names], dtype=torch.float64)
    coefficients = torch.full((len(names), len(names)), float(aux), dtype=torch.float64) * w
    coefficients.diagonal().copy_(w)
    return coefficients


def fuse(results: Tensor, weights: Tensor | None) -> Tensor:
    """Σ_k a_k ⊙ θ_k / Σ_k a_k over the first dimension of ``results`` (K × …); ``weights`` (K × …,
    broadcastable) or None for the plain mean."""
    if weights is None:
        return results.mean(0)
    weights = weights.to(results.dtype)
    return (weights * results).sum(0) / weights.sum(0)


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None
    ]


class FusionUpdate(UpdateRule):
    """Disentangle-and-fuse training (see the module docstring); subclassed by DR-MGF and Meta-GF.

    Args:
        aux: β, the weight of the other tasks' losses in a task's disentanglement pass (Eq. 10).
        task_weights: optional multiplier of each task's loss in the disentanglement objectives, by task
            name (e.g. ``{"normal": 10}`` as the DR-MGF NYUv2 code).
        fusion_optimizer: the outer optimisation's optimizer, ``{"name": ..., "lr": ..., ...}``.
        ema: momentum m of an exponential moving average of the procedure's variables across epochs
            (after an epoch: v ← (1 − m)·v + m·v_at_the_epoch's_start), or None (none).
        ema_start: the first epoch (0-based) the average applies to (the DR-MGF code: once its routes
            stop, epoch 100).
        bn_stats: :data:`BN_STATS`.
        lr_scale: multiplies the procedure's learning rates (a profile that scales the network's lr
            scales these alike).
        follow_schedule: the procedure's learning rates follow the network's schedule (scaled by the
            network's current lr over its initial lr).
    """

    def __init__(
        self,
        aux: float,
        task_weights: Mapping[str, float] | None,
        fusion_optimizer: Mapping[str, Any],
        ema: float | None = None,
        bn_stats: str = "reestimate",
        lr_scale: float = 1.0,
        follow_schedule: bool = True,
        ema_start: int = 0,
    ) -> None:
        if not 0 <= float(aux) <= 1:
            raise ConfigError(f"{type(self).__name__}: aux (β) must be in [0, 1], got {aux!r}.")
        if ema is not None and not 0 <= float(ema) < 1:
            raise ConfigError(f"{type(self).__name__}: ema must be in [0, 1) or None, got {ema!r}.")
        if not isinstance(ema_start, int) or ema_start < 0:
            raise ConfigError(f"{type(self).__name__}: ema_start must be an integer ≥ 0, got {ema_start!r}.")
        if bn_stats not in BN_STATS:
            raise ConfigError(
                f"{type(self).__name__}: bn_stats must be one of {', '.join(BN_STATS)}, got {bn_stats!r}."
            )
        if not float(lr_scale) > 0:
            raise ConfigError(f"{type(self).__name__}: lr_scale must be > 0, got {lr_scale!r}.")
        self.aux = float(aux)
        self.task_weights = dict(task_weights or {})
        self.fusion_optimizer_options = dict(fusion_optimizer)
        self.ema = None if ema is None else float(ema)
        self.ema_start = ema_start
        self.bn_stats = bn_stats
        self.lr_scale = float(lr_scale)
        self.follow_schedule = bool(follow_schedule)
        self._records: list[dict[str, Any]] = []
        self._results: list[dict[str, Tensor]] | None = None
        self._stacked: dict[str, Tensor] | None = None
        self._momenta: list[float | None] = []

    # -- what subclasses define ---------------------------------------------------------------
    def build(self, trainer: Trainer) -> None:
        """Create the procedure's variables for ``trainer.model`` (called once, at setup)."""

    def task_overrides(self, trainer: Trainer, task: int) -> dict[str, Tensor]:
        """Parameters (by name) that task ``task``'s forward replaces, e.g. routed filters (default: none)."""
        return {}

    def task_penalty(self, task: int) -> Tensor | None:
        """A term added to task ``task``'s objective (e.g. λ l_k), or None."""
        return None

    def task_variables(self) -> list[Tensor]:
        """Variables the disentanglement passes train besides the network (e.g. ν)."""
        return []

    def task_optimizer_options(self) -> Mapping[str, Any] | None:
        """The optimizer of :meth:`task_variables`."""
        return None

    def bake(self, trainer: Trainer, task: int) -> dict[str, Tensor]:
        """What task ``task``'s pass leaves: the value of every fused parameter (detached). Default: the
        parameters as they are."""
        return {name: param.detach().clone() for name, param in trainer.model.named_parameters()}

    def fusion_weights(self, name: str) -> Tensor | None:
        """a_k for the shared parameter ``name`` (K × …, broadcastable to K × its shape), differentiable in
        :meth:`fusion_variables`; None: the tasks' mean."""
        return None

    def fusion_variables(self) -> list[Tensor]:
        """The variables the fusion pass optimises."""
        return []

    def describe(self) -> str:
        return type(self).__name__

    # -- setup ------------------------------------------------------------------------------
    def setup(self, trainer: Trainer) -> None:
        if trainer.methods.aggregator is not None or trainer.methods.regularizer is not None:
            raise ConfigError(
                f"{type(self).__name__} is its own update rule: train it with the equal weighting "
                "(method 'equal') and no aggregator or regularizer."
            )
        model = trainer.model
        if model.num_tasks < 2:
            raise ConfigError(f"{type(self).__name__} fuses the updates of several tasks; the model has one.")
        names = {id(p): n for n, p in model.named_parameters()}
        shared, own = trainer.parameter_split()
        self.shared_names = [names[id(p)] for p in shared]
        self.own_names = [[names[id(p)] for p in group] for group in own]
        self.coefficients = objective_coefficients(model.task_names, self.aux, self.task_weights)
        self.build(trainer)
        self._task_optimizer = None
        if self.task_variables():
            options = self.task_optimizer_options() or {"name": "sgd", "lr": 0.1}
            self._task_optimizer = build_optimizer(
                self.task_variables(), options, where=f"{self.describe()} ν optimizer"
            )
        self._fusion_optimizer = None
        if self.fusion_variables():
            self._fusion_optimizer = build_optimizer(
                self.fusion_variables(), self.fusion_optimizer_options, where=f"{self.describe()} fusion optimizer"
            )
        for opt in self._optimizers():
            for group in opt.param_groups:
                group["base_lr"] = group["lr"] * self.lr_scale
                group["lr"] = group["base_lr"]
        group = trainer.optimizer.param_groups[0]
        self._network_lr0 = float(group.get("initial_lr", group["lr"]))

    def _optimizers(self) -> list[torch.optim.Optimizer]:
        return [opt for opt in (self._task_optimizer, self._fusion_optimizer) if opt is not None]

    def _variables(self) -> list[Tensor]:
        seen, out = set(), []
        for variable in [*self.task_variables(), *self.fusion_variables()]:
            if id(variable) not in seen:
                seen.add(id(variable))
                out.append(variable)
        return out

    def _follow_schedule(self, trainer: Trainer) -> None:
        scale = float(trainer.optimizer.param_groups[0]["lr"]) / self._network_lr0 if self.follow_schedule else 1.0
        for opt in self._optimizers():
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * scale

    # -- stage 1: disentanglement ---------------------------------------------------------------
    def start_epoch(self, trainer: Trainer) -> None:
        self._follow_schedule(trainer)
        model = trainer.model
        theta0 = {name: param.detach().clone() for name, param in model.named_parameters()}
        self._epoch_start = [v.detach().clone() for v in self._variables()]
        results, statistics = [], []
        for task in range(model.num_tasks):
            self._disentangle(trainer, task)
            results.append(self.bake(trainer, task))
            statistics.append([(bn.running_mean.clone(), bn.running_var.clone()) for bn in _batch_norms(model)])
            with torch.no_grad():
                for name, param in model.named_parameters():
                    param.copy_(theta0[name])
        self._results = results
        self._stacked = {name: torch.stack([r[name] for r in results]) for name in self.shared_names}
        with torch.no_grad():
            weighted = {name for name in self.shared_names if self.fusion_weights(name) is not None}
        fixed = {name: fuse(self._stacked[name], None) for name in self.shared_names if name not in weighted}
        for task, names in enumerate(self.own_names):
            fixed.update({name: results[task][name] for name in names})
        self._fixed = fixed
        if self.bn_stats == "mixture":
            self._mix_statistics(model, statistics)
        self._momenta = []
        if self.bn_stats == "reestimate":
            for bn in _batch_norms(model):
                self._momenta.append(bn.momentum)
                bn.reset_running_stats()
                bn.momentum = None  # a cumulative average over the fusion pass

    def _disentangle(self, trainer: Trainer, task: int) -> None:
        """One pass over the epoch's batches on task ``task``'s objective (Eq. 10)."""
        model, names = trainer.model, list(trainer.model.task_names)
        coefficients = self.coefficients[task].tolist()
        model.train()
        totals, batches = None, 0
        for inputs, targets in trainer.epoch_batches():
            trainer.optimizer.zero_grad(set_to_none=True)
            for variable in self.task_variables():
                variable.grad = None
            overrides = self.task_overrides(trainer, task)
            outputs = functional_call(model, overrides, (inputs,)) if overrides else model(inputs)
            rows = loss_rows(trainer.ordered(trainer.criterion(outputs, targets)))
            losses = torch.stack([row.detach() for row in rows])
            trainer.check_finite(losses, names)
            objective = sum(c * row for c, row in zip(coefficients, rows))
            penalty = self.task_penalty(task)
            (objective if penalty is None else objective + penalty).backward()
            trainer.optimizer_step()
            if self._task_optimizer is not None:
                self._task_optimizer.step()
            totals = losses if totals is None else totals + losses
            batches += 1
        if batches == 0:
            raise ConfigError(f"epoch {trainer.epoch + 1} had no batches: the training data is empty.")
        for name, value in zip(names, (totals / batches).tolist()):
            self._records.append({"epoch": trainer.epoch, "stage": names[task], "task": name, "loss": value})

    def _mix_statistics(self, model: nn.Module, statistics: list[list[tuple[Tensor, Tensor]]]) -> None:
        """Running statistics ← the equal-weight mixture of the tasks' statistics:
        mean = Σ μ_t / K, var = Σ (σ²_t + μ_t²) / K − mean²."""
        with torch.no_grad():
            for index, bn in enumerate(_batch_norms(model)):
                means = torch.stack([stats[index][0] for stats in statistics])
                variances = torch.stack([stats[index][1] for stats in statistics])
                mean = means.mean(0)
                bn.running_mean.copy_(mean)
                bn.running_var.copy_((variances + means * means).mean(0) - mean * mean)

    # -- stage 2: fusion ---------------------------------------------------------------------
    def fused_parameters(self) -> dict[str, Tensor]:
        """θ(φ) for every fused parameter (differentiable in the fusion variables)."""
        if self._results is None:
            raise ConfigError("the fused parameters exist only between a fusion epoch's start and end.")
        fused = dict(self._fixed)
        for name in self.shared_names:
            if name not in fused:
                fused[name] = fuse(self._stacked[name], self.fusion_weights(name))
        return fused

    def step(self, trainer: Trainer, inputs: Any, targets: Any) -> StepOutput:
        learn = self._fusion_optimizer is not None
        if learn:
            self._fusion_optimizer.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(learn):
            outputs = functional_call(trainer.model, self.fused_parameters(), (inputs,))
            rows, losses = trainer.task_losses(outputs, targets)
            if learn:
                torch.stack(rows).sum().backward()  # the outer objective: Σ_k f_k at θ(φ), Eq. 8
                self._fusion_optimizer.step()
        return StepOutput(
            epoch=trainer.epoch,
            step=trainer.step + 1,
            losses=losses,
            weights=None,
            backward=None,
            outputs={name: out.detach() for name, out in outputs.items()},
            targets=targets,
        )

    def end_epoch(self, trainer: Trainer) -> None:
        with torch.no_grad():
            fused = self.fused_parameters()
            for name, param in trainer.model.named_parameters():
                if name in fused:
                    param.copy_(fused[name])
            if self.ema is not None and trainer.epoch >= self.ema_start:
                for variable, start in zip(self._variables(), self._epoch_start):
                    variable.mul_(1 - self.ema).add_(start, alpha=self.ema)
        for bn, momentum in zip(_batch_norms(trainer.model), self._momenta):
            bn.momentum = momentum
        self._results = self._stacked = self._fixed = None

    # -- records and state -------------------------------------------------------------------
    def records(self) -> dict[str, list[dict[str, Any]]]:
        """``passes``: per epoch, disentanglement pass (``stage``: its primary task) and task, the mean
        training loss of the pass."""
        return {"passes": list(self._records)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "variables": [v.detach().clone() for v in self._variables()],
            "optimizers": [opt.state_dict() for opt in self._optimizers()],
            "records": list(self._records),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for variable, value in zip(self._variables(), state["variables"]):
                variable.copy_(value)
        for opt, opt_state in zip(self._optimizers(), state["optimizers"]):
            opt.load_state_dict(opt_state)
        self._records = list(state["records"])
