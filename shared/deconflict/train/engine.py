"""The training loop every model, loss weighting, aggregator and method plugs into."""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from deconflict import optim
from deconflict.errors import CheckpointError, ConfigError, NonFiniteError, ShapeError
from deconflict.grad import MultiTaskBackward, loss_rows, stack_losses
from deconflict.grad import jacobian as grad_jacobian
from deconflict.models.base import MultiTaskModel
from deconflict.train.callbacks import Callback, StepOutput
from deconflict.train.checkpoint import load_checkpoint, save_checkpoint
from deconflict.train.seeding import rng_state, set_rng_state

__all__ = ["TrainConfig", "TrainResult", "Trainer", "CHECKPOINT_NAME", "check_weights_task_gradients"]

CHECKPOINT_NAME = "checkpoint.pt"
SHARED_SPLITS = ("model", "all_but_heads")
HEAD_GRADIENTS = ("own", "weighted")
_FORMAT = 1
Criterion = Callable[[dict[str, Tensor], Any], Tensor | Sequence[Tensor]]


@dataclass
class TrainConfig:
    """How to train (not what: model, data and methods are given to :class:`Trainer`).

    Attributes:
        epochs: number of passes over the data.
        steps_per_epoch: cap on the batches per epoch (required for endless iterables).
        level: ``"parameter"`` (per-task gradients of the shared parameters) or ``"feature"``
            (per-task gradients of the shared representation) for the aggregator.
        jacobian_mode: ``"auto"``, ``"batched"`` or ``"loop"`` (see :mod:`deconflict.grad`).
        log_every: write a row of step metrics to dvclive every N steps (0: no step log).
        checkpoint_every: checkpoint every N epochs (0: only at the end).
        progress: show a progress bar per epoch.
        shared: which parameters an aggregator treats as shared (parameter level): ``"model"``
            (the model's own ``shared_parameters()``: the split of the CAGrad, Recon and DR-MGF
            code) or ``"all_but_heads"`` (every parameter except the output heads,
            ``head_parameters()``: the split of the Nash-MTL / FAMO code lineage, in which e.g.
            every task's MTAN attention modules enter the Jacobian and so the Gramian's diagonal).
        head_gradients: what each task's own parameters receive with an aggregator: ``"own"``
            (its own gradient, unweighted) or ``"weighted"`` (times the aggregator's
            ``loss_weights``: the Nash-MTL / FAMO code back-propagates Σ_t α_t L_t, so task t's
            head gets α_t times its gradient — Nash-MTL, IMTL-G, MGDA there).
    """

    epochs: int = 1
    steps_per_epoch: int | None = None
    level: str = "parameter"
    jacobian_mode: str = "auto"
    log_every: int = 1
    checkpoint_every: int = 1
    progress: bool = True
    shared: str = "model"
    head_gradients: str = "own"

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"epochs must be an integer ≥ 1, got {self.epochs!r}.")
        if self.steps_per_epoch is not None and (not isinstance(self.steps_per_epoch, int) or self.steps_per_epoch < 1):
            raise ConfigError(f"steps_per_epoch must be None or an integer ≥ 1, got {self.steps_per_epoch!r}.")
        if self.level not in ("parameter", "feature"):
            raise ConfigError(f"level must be 'parameter' or 'feature', got {self.level!r}.")
        if self.shared not in SHARED_SPLITS:
            raise ConfigError(f"shared must be one of {', '.join(SHARED_SPLITS)}, got {self.shared!r}.")
        if self.head_gradients not in HEAD_GRADIENTS:
            raise ConfigError(f"head_gradients must be one of {', '.join(HEAD_GRADIENTS)}, got {self.head_gradients!r}.")
        if self.shared != "model" and self.level != "parameter":
            raise ConfigError(f"shared={self.shared!r} chooses shared parameters, so it needs level='parameter'.")
        if self.jacobian_mode not in ("auto", "batched", "loop"):
            raise ConfigError(f"jacobian_mode must be 'auto', 'batched' or 'loop', got {self.jacobian_mode!r}.")
        for name in ("log_every", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer ≥ 0, got {value!r}.")


@dataclass
class TrainResult:
    """Where a run ended."""

    epochs: int
    steps: int
    final_losses: list[float]
    resumed_from_epoch: int | None = None
    run_dir: Path | None = None
    history: list[list[float]] = field(default_factory=list)  # per-epoch mean task losses


def check_weights_task_gradients(method: optim.Method | None) -> None:
    """``head_gradients="weighted"`` needs an aggregator whose direction weights the task gradients."""
    if not isinstance(method, optim.GramianAggregator):
        valid = [n for n in optim.available("aggregator") if issubclass(optim.method_class(n), optim.GramianAggregator)]
        raise ConfigError(
            "head_gradients='weighted' scales each task's own gradient by the aggregator's weights, so it needs "
            f"an aggregator that weights the task gradients ({', '.join(valid)}); "
            f"got {method.name if method is not None else 'no aggregator'}."
        )


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(value, device) for value in batch)
    return batch


class Trainer:
    """Trains a :class:`~deconflict.models.MultiTaskModel` with any method of :mod:`deconflict.optim`.

    ``method`` is a registered name or a method object of any kind (a loss weighting, an
    aggregator, a regularizer, or a combined method such as IMTL); ``weighting=``,
    ``aggregator=`` and ``regularizer=`` set the parts explicitly. One step: forward (``encode``
    then ``decode``), the criterion gives the T task losses, the loss weighting (default: equal
    weights) scales them (plus its penalty, if any), and then

    * with an aggregator: the per-task gradients of the shared part (parameters, or the
      representation at ``level="feature"``) are aggregated into one direction and written into
      ``.grad`` while each task's own parameters get that task's gradient;
    * with a regularizer: the per-task gradients are taken with a graph and its penalty is added
      to Σ_t w_t L_t before one backward pass;
    * otherwise: one backward pass of Σ_t w_t L_t;

    then ``optimizer.step()`` and the methods' ``after_step`` hooks (e.g. FAMO's update, GradNorm's
    renormalisation); at each epoch's end their ``end_epoch`` hooks (DWA). Learnable parameters of
    methods that train with the model (UW, IMTL-L, GradNorm's weights) join the optimizer's first
    parameter group (or a group of their own when the method sets its ``lr``). Seeded runs are deterministic on the CPU; with a ``run_dir`` the
    loop logs metrics with dvclive, checkpoints atomically and resumes from the last checkpoint
    with the same final result as an uninterrupted run.
    """

    def __init__(
        self,
        model: MultiTaskModel,
        criterion: Criterion,
        optimizer: torch.optim.Optimizer,
        method: optim.Method | str | None = None,
        *,
        weighting: optim.LossWeighting | str | None = None,
        aggregator: optim.Aggregator | str | None = None,
        regularizer: optim.Regularizer | str | None = None,
        scheduler: Any = None,
        config: TrainConfig | None = None,
        run_dir: str | Path | None = None,
        callbacks: Iterable[Callback] = (),
        fingerprint: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(model, MultiTaskModel):
            raise ConfigError(
                f"model must be a deconflict.models.MultiTaskModel (encode/decode/shared_parameters/"
                f"task_parameters), got {type(model).__name__}."
            )
        self.model = model
        self.criterion = criterion
        self.optimizer = optimizer
        self.methods = optim.resolve(method, weighting=weighting, aggregator=aggregator, regularizer=regularizer)
        level = (config or TrainConfig()).level
        # methods that give each task its own view of the representation (RotoGrad)
        self._viewers = [b for b in self.methods.all if type(b).task_views is not optim.Method.task_views]
        for built in self.methods.all:
            if level not in built.levels:
                raise ConfigError(f"{built.name} runs at {' or '.join(built.levels)} level only: set level="
                                  f"{built.levels[0]!r} in the training configuration.")
            if built in self._viewers and not model.supports_task_views:
                raise ConfigError(
                    f"{built.name} gives each task its own view of the shared representation, which "
                    f"{type(model).__name__} does not support (its representation has no single channel "
                    "dimension to transform); train it on a model with one shared feature map, e.g. SegNetSplit."
                )
        self.weighting = self.methods.weighting
        self.aggregator = self.methods.aggregator
        self.regularizer = self.methods.regularizer
        device = next(model.parameters()).device
        for built in self.methods.all:
            built.setup(model.num_tasks, device)
            params = built.parameters()
            if built.trained_with_model and params:
                if getattr(built, "lr", None) is None:  # same hyperparameters as the model's first group
                    optimizer.param_groups[0]["params"].extend(params)
                else:
                    optimizer.add_param_group({"params": params, "lr": built.lr})
        self.scheduler = scheduler
        self.config = config or TrainConfig()
        if self.config.head_gradients == "weighted":
            check_weights_task_gradients(self.aggregator)
        names = {id(param): name for name, param in model.named_parameters()}
        self._shared_layout = tuple((names.get(id(p), "?"), p.numel()) for p in self.parameter_split()[0])
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.callbacks = list(callbacks)
        # only callbacks that override before_backward are called there: no monitor, no cost
        self._watchers = [c for c in self.callbacks if type(c).before_backward is not Callback.before_backward]
        self.backward = MultiTaskBackward(self.config.jacobian_mode)
        self.epoch = 0  # epochs completed
        self.step = 0  # steps completed
        self._fingerprint = self._make_fingerprint(fingerprint or {})
        self._live = None

    def parameter_split(self) -> tuple[list[nn.Parameter], list[list[nn.Parameter]]]:
        """(shared parameters, each task's own parameters) as the configuration's ``shared`` says."""
        if self.config.shared == "model":
            return self.model.shared_parameters(), self.model.task_parameters()
        heads = self.model.head_parameters()
        head_ids = {id(p) for group in heads for p in group}
        return [p for p in self.model.parameters() if id(p) not in head_ids], heads

    # -- identity of a run -------------------------------------------------------------------
    def _make_fingerprint(self, extra: dict[str, Any]) -> str:
        description = {
            "config": {k: v for k, v in asdict(self.config).items() if k not in ("epochs", "progress", "log_every", "checkpoint_every")},
            "model": type(self.model).__name__,
            "shapes": [list(p.shape) for p in self.model.parameters()],
            "methods": self.methods.describe(),
            "optimizer": type(self.optimizer).__name__,
            "extra": extra,
        }
        text = json.dumps(description, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / CHECKPOINT_NAME

    # -- one step ----------------------------------------------------------------------------
    def _ordered(self, raw: Any) -> Any:
        """A criterion's dict of losses as a list in the model's task order (other forms as they are)."""
        if isinstance(raw, dict):
            return [raw[name] for name in self.model.task_names] if self.model.task_names else list(raw.values())
        return raw

    def _losses(self, outputs: dict[str, Tensor], targets: Any) -> tuple[list[Tensor], Tensor]:
        """The task losses as the criterion's own scalars (one backward branch each) and stacked."""
        rows = loss_rows(self._ordered(self.criterion(outputs, targets)))
        losses = torch.stack([row.detach() for row in rows])
        names = self.model.task_names
        if names and losses.shape[0] != len(names):
            raise ShapeError(f"the criterion returned {losses.shape[0]} losses for {len(names)} tasks {names}.")
        finite = torch.isfinite(losses)
        if not finite.all():
            bad = [names[i] if names else str(i) for i in torch.nonzero(~finite).flatten().tolist()]
            where = f" The last good checkpoint is {self.checkpoint_path}." if self.checkpoint_path else ""
            raise NonFiniteError(
                f"loss of task(s) {', '.join(bad)} is NaN/Inf at epoch {self.epoch + 1}, step {self.step + 1} "
                f"(losses: {[round(v, 6) if v == v else v for v in losses.detach().tolist()]}). Lower the "
                f"learning rate, check the data for NaN, or check the loss for log(0)/division by zero.{where}"
            )
        return rows, losses

    def _context(self, inputs: Any, targets: Any, rows: list[Tensor], losses: Tensor,
                 representation: Tensor) -> optim.StepContext:
        """The step's context; its expensive parts are computed only if a method asks for them."""
        level = self.config.level
        cache: dict[str, Tensor] = {}

        def task_gradients() -> Tensor:
            if "jacobian" not in cache:
                target = representation if level == "feature" else self.model.last_shared_parameters()
                cache["jacobian"] = self.backward.engine(rows, target, retain_graph=True).detach()
            return cache["jacobian"]

        def losses_after_step() -> Tensor:
            if "after" not in cache:
                with torch.no_grad():
                    cache["after"] = stack_losses(self._ordered(self.criterion(self.predict(inputs), targets))).detach()
            return cache["after"]

        return optim.StepContext(
            losses=losses, level=level, step=self.step + 1, epoch=self.epoch,
            task_gradients=task_gradients, losses_after_step=losses_after_step,
            representation=representation.detach() if level == "feature" else None,
            shared_layout=self._shared_layout if level == "parameter" else None,
            learning_rate=float(self.optimizer.param_groups[0]["lr"]),
        )

    def _decode(self, representation: Tensor) -> dict[str, Tensor]:
        for built in self._viewers:
            views = built.task_views(representation, self.model.num_tasks)
            if views is not None:
                return self.model.decode_tasks(views)
        return self.model.decode(representation)

    def predict(self, inputs: Any) -> dict[str, Tensor]:
        """The model's outputs as training sees them (e.g. through RotoGrad's rotations)."""
        return self._decode(self.model.encode(inputs))

    def _method_parameter_grads(self, objective: Tensor) -> None:
        """With an aggregator, the loss weighting's own parameters (UW's log-variances, IMTL-L's
        scales) get their gradient from the weighted objective, which no backward pass runs."""
        own = [p for p in self.weighting.parameters() if p.requires_grad]
        if not own or not objective.requires_grad:
            return
        grads = torch.autograd.grad(objective, own, retain_graph=True, allow_unused=True)
        for param, grad in zip(own, grads):
            if grad is not None:  # None: the method set its own gradient (GradNorm)
                param.grad = grad.detach() if param.grad is None else param.grad + grad.detach()

    def train_step(self, batch: Any) -> StepOutput:
        """Run one optimisation step on ``batch`` = (inputs, targets)."""
        device = next(self.model.parameters()).device
        inputs, targets = _to_device(batch, device)
        self.optimizer.zero_grad(set_to_none=True)
        representation = self.model.encode(inputs)
        outputs = self._decode(representation)
        rows, losses = self._losses(outputs, targets)
        for callback in self._watchers:
            callback.before_backward(self, rows, representation)
        context = self._context(inputs, targets, rows, losses, representation)
        weights = self.weighting(losses, context)
        penalty = self.weighting.penalty()
        level_target = representation if self.config.level == "feature" else None
        result = None
        if self.aggregator is None and self.regularizer is None:  # one backward pass of Σ_t w_t L_t
            objective = (torch.stack(rows) * weights).sum()
            (objective if penalty is None else objective + penalty).backward()
        else:
            weighted = [row * weight for row, weight in zip(rows, weights)]  # one branch per task
            objective = torch.stack(weighted).sum()
            if penalty is not None:
                objective = objective + penalty
            if self.aggregator is not None:
                self._method_parameter_grads(objective)
                shared, own = self.parameter_split()
                result = self.backward(
                    weighted, shared, own, self.aggregator,
                    representation=level_target, task_names=self.model.task_names, context=context,
                    downstream_shared=self.model.downstream_shared_parameters(),
                    task_weights=(lambda: self.aggregator.loss_weights) if self.config.head_gradients == "weighted" else None,
                )
            else:
                target = representation if level_target is not None else self.parameter_split()[0]
                jac = grad_jacobian(weighted, target, create_graph=True)
                (objective + self.regularizer(jac, context)).backward()
        self.optimizer.step()
        for built in self.methods.all:
            built.after_step(context)
        self.step += 1
        return StepOutput(epoch=self.epoch, step=self.step, losses=losses.detach(),
                          weights=weights.detach().clone(), backward=result,
                          outputs={name: out.detach() for name, out in outputs.items()} if isinstance(outputs, dict) else None,
                          targets=targets)

    # -- checkpoint / resume -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "fingerprint": self._fingerprint,
            "epoch": self.epoch,
            "step": self.step,
            "finished": self.epoch >= self.config.epochs,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "methods": [built.state_dict() for built in self.methods.all],
            "callbacks": [callback.state_dict() for callback in self.callbacks],
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("fingerprint") != self._fingerprint:
            raise CheckpointError(
                f"{self.checkpoint_path} belongs to a run with different settings (model, methods or "
                "hyperparameters changed). Delete the run folder to start afresh, or restore the settings."
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        for built, built_state in zip(self.methods.all, state["methods"]):
            built.load_state_dict(built_state)
        for callback, callback_state in zip(self.callbacks, state["callbacks"]):
            callback.load_state_dict(callback_state)
        set_rng_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])

    def save_checkpoint(self) -> None:
        if self.checkpoint_path is not None:
            save_checkpoint(self.checkpoint_path, self.state_dict())

    # -- logging -----------------------------------------------------------------------------
    def _open_log(self, resumed: bool) -> None:
        if self.run_dir is None or self.config.log_every == 0:
            return
        from dvclive import Live

        log_dir = self.run_dir / "dvclive"
        if resumed:
            _truncate_dvclive(log_dir, self.step)
        self._live = Live(dir=str(log_dir), resume=resumed, save_dvc_exp=False, dvcyaml=None, report=None)

    def _log_step(self, output: StepOutput) -> None:
        if self._live is None or output.step % self.config.log_every:
            return
        live = self._live
        live.step = output.step
        names = self.model.task_names or [str(i) for i in range(output.losses.shape[0])]
        for name, value in zip(names, output.losses.tolist()):
            live.log_metric(f"train/loss/{name}", value)
        live.log_metric("train/loss/total", float(output.losses.sum()))
        if output.weights is not None and self.weighting.name != "equal":
            for name, value in zip(names, output.weights.tolist()):
                live.log_metric(f"train/weight/{name}", value)
        live.log_metric("epoch", output.epoch + 1)
        live.next_step()

    # -- the loop ----------------------------------------------------------------------------
    def fit(self, data: Iterable[Any] | Callable[[int], Iterable[Any]]) -> TrainResult:
        """Train for ``config.epochs`` epochs, resuming from ``run_dir``'s checkpoint if there is one.

        ``data`` is an iterable of ``(inputs, targets)`` batches, iterated once per epoch, or a
        function ``epoch -> iterable``.
        """
        resumed_from = None
        if self.checkpoint_path is not None and self.checkpoint_path.exists():
            self.load_state_dict(load_checkpoint(self.checkpoint_path))
            resumed_from = self.epoch
        self._open_log(resumed=resumed_from is not None)
        for callback in self.callbacks:
            callback.on_fit_start(self)
        history: list[list[float]] = []
        try:
            while self.epoch < self.config.epochs:
                history.append(self._run_epoch(data))
                for built in self.methods.all:
                    built.end_epoch()
                self.epoch += 1
                if self.scheduler is not None:
                    self.scheduler.step()
                for callback in self.callbacks:
                    callback.on_epoch_end(self, self.epoch - 1)
                every = self.config.checkpoint_every
                if self.epoch >= self.config.epochs or (every and self.epoch % every == 0):
                    self.save_checkpoint()
        finally:
            if self._live is not None:
                self._live.end()
                self._live = None
        for callback in self.callbacks:
            callback.on_fit_end(self)
        final = history[-1] if history else []
        return TrainResult(epochs=self.epoch, steps=self.step, final_losses=final,
                           resumed_from_epoch=resumed_from, run_dir=self.run_dir, history=history)

    def _run_epoch(self, data: Iterable[Any] | Callable[[int], Iterable[Any]]) -> list[float]:
        batches = data(self.epoch) if callable(data) else data
        limit = self.config.steps_per_epoch
        if limit is not None:
            batches = itertools.islice(batches, limit)
        total = limit if limit is not None else (len(data) if hasattr(data, "__len__") else None)
        bar = tqdm(batches, total=total, desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
                   disable=not self.config.progress, leave=False, mininterval=1.0)
        self.model.train()
        sums: Tensor | None = None
        count = 0
        for batch in bar:
            output = self.train_step(batch)
            sums = output.losses.clone() if sums is None else sums + output.losses
            count += 1
            self._log_step(output)
            for callback in self.callbacks:
                callback.on_step_end(self, output)
        if count == 0:
            raise ConfigError(f"epoch {self.epoch + 1} had no batches: the training data is empty.")
        return (sums / count).tolist()


def _truncate_dvclive(log_dir: Path, last_step: int) -> None:
    """Drop metric rows logged after the checkpoint a run resumes from (they will be logged again)."""
    metrics_dir = log_dir / "plots" / "metrics"
    if not metrics_dir.is_dir():
        return
    from deconflict.io import atomic_path

    for path in metrics_dir.rglob("*.tsv"):
        with open(path, newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
        if not rows:
            continue
        header, body = rows[0], rows[1:]
        step_column = header.index("step") if "step" in header else None
        if step_column is None:
            continue
        kept = [row for row in body if int(row[step_column]) <= last_step]
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t")
            writer.writerow(header)
            writer.writerows(kept)
