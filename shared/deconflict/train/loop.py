"""The training loop every model, method and update rule plugs into."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from deconflict import optim
from deconflict.errors import CheckpointError, ConfigError, NonFiniteError, ShapeError
from deconflict.grad import MultiTaskBackward, loss_rows
from deconflict.models.base import MultiTaskModel
from deconflict.train.callbacks import Callback, StepOutput
from deconflict.train.checkpoint import load_checkpoint, save_checkpoint
from deconflict.train.config import TrainConfig, TrainResult, check_weights_task_gradients
from deconflict.train.logging import DvcLiveLogger
from deconflict.train.seeding import rng_state, set_rng_state
from deconflict.train.update import UpdateHook, UpdateRule, method_update

__all__ = ["CHECKPOINT_NAME", "Trainer"]

CHECKPOINT_NAME = "checkpoint.pt"
_FORMAT = 2
Criterion = Callable[[dict[str, Tensor], Any], Tensor | Sequence[Tensor]]


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(value, device) for value in batch)
    return batch


class Trainer:
    """Trains a :class:`~deconflict.models.MultiTaskModel` with any method of :mod:`deconflict.optim`
    or any :class:`~deconflict.train.UpdateRule`.

    ``method`` is a registered name or a method object of any kind (a loss weighting, an
    aggregator, a regularizer, or a combined method such as IMTL); ``weighting=``,
    ``aggregator=`` and ``regularizer=`` set the parts explicitly. Each batch goes to the update
    rule — by default the one the methods need (:func:`~deconflict.train.update.method_update`:
    one backward pass of the weighted losses, an aggregated backward pass, or a regularized one) —
    and ``update=`` replaces it with another (the papers' training procedures, see
    :mod:`deconflict.train.update`). ``hooks`` act around every optimizer step (e.g. a fixed mask
    on the update). Learnable parameters of methods that train with the model (UW, IMTL-L,
    GradNorm's weights) join the optimizer's first parameter group (or a group of their own when
    the method sets its ``lr``).

    The loop runs ``config.epochs`` epochs; after each, the methods' and the rule's ``end_epoch``
    hooks (DWA, fusion at the end of an epoch), the scheduler, the callbacks and a checkpoint. Seeded
    runs are deterministic on the CPU; with a ``run_dir`` the loop logs step metrics with dvclive
    (:class:`~deconflict.train.DvcLiveLogger`), checkpoints atomically and resumes from the last
    checkpoint with the same final result as an uninterrupted run.
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
        update: UpdateRule | None = None,
        hooks: Iterable[UpdateHook] = (),
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
        self.config = config or TrainConfig()
        self.methods = optim.resolve(method, weighting=weighting, aggregator=aggregator, regularizer=regularizer)
        self._check_methods()
        self._join_method_parameters()
        self.scheduler = scheduler
        self.rule = update if update is not None else method_update(self.methods)
        self.hooks = list(hooks)
        names = {id(param): name for name, param in model.named_parameters()}
        self.shared_layout = tuple((names.get(id(p), "?"), p.numel()) for p in self.parameter_split()[0])
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.callbacks = list(callbacks)
        if self.run_dir is not None and self.config.log_every:
            self.callbacks.insert(0, DvcLiveLogger(self.run_dir / "dvclive", every=self.config.log_every))
        # only callbacks that override before_backward are called there: no monitor, no cost
        self._watchers = [c for c in self.callbacks if type(c).before_backward is not Callback.before_backward]
        self.backward = MultiTaskBackward(self.config.jacobian_mode)
        self.epoch = 0  # epochs completed
        self.step = 0  # steps (batches) completed
        self.resumed_from_epoch: int | None = None
        self._data: Iterable[Any] | Callable[[int], Iterable[Any]] | None = None  # what fit() trains on
        self.rule.setup(self)
        for hook in self.hooks:
            hook.setup(self)
        self._fingerprint = self._make_fingerprint(fingerprint or {})

    # -- the methods ---------------------------------------------------------------------------
    @property
    def weighting(self) -> optim.LossWeighting:
        return self.methods.weighting

    @property
    def aggregator(self) -> optim.Aggregator | None:
        return self.methods.aggregator

    @property
    def regularizer(self) -> optim.Regularizer | None:
        return self.methods.regularizer

    def _check_methods(self) -> None:
        level = self.config.level
        # methods that give each task its own view of the representation (RotoGrad)
        self._viewers = [b for b in self.methods.all if type(b).task_views is not optim.Method.task_views]
        if level == "feature" and not self.model.shared_representation:
            raise ConfigError(
                f"{type(self.model).__name__} has no single shared representation (each task reads its own "
                "stream): train it at level='parameter'."
            )
        for built in self.methods.all:
            if level not in built.levels:
                raise ConfigError(
                    f"{built.name} runs at {' or '.join(built.levels)} level only: set level="
                    f"{built.levels[0]!r} in the training configuration."
                )
            if built in self._viewers and not self.model.supports_task_views:
                raise ConfigError(
                    f"{built.name} gives each task its own view of the shared representation, which "
                    f"{type(self.model).__name__} does not support (its representation has no single channel "
                    "dimension to transform); train it on a model with one shared feature map, e.g. SegNetSplit."
                )
        if self.config.head_gradients == "weighted":
            check_weights_task_gradients(self.aggregator)

    def _join_method_parameters(self) -> None:
        device = next(self.model.parameters()).device
        for built in self.methods.all:
            built.setup(self.model.num_tasks, device)
            params = built.parameters()
            if built.trained_with_model and params:
                if getattr(built, "lr", None) is None:  # same hyperparameters as the model's first group
                    self.optimizer.param_groups[0]["params"].extend(params)
                else:
                    self.optimizer.add_param_group({"params": params, "lr": built.lr})

    def parameter_split(self) -> tuple[list[nn.Parameter], list[list[nn.Parameter]]]:
        """(shared parameters, each task's own parameters) as the configuration's ``shared`` says."""
        if self.config.shared == "model":
            return self.model.shared_parameters(), self.model.task_parameters()
        heads = self.model.head_parameters()
        head_ids = {id(p) for group in heads for p in group}
        return [p for p in self.model.parameters() if id(p) not in head_ids], heads

    # -- identity of a run -------------------------------------------------------------------
    def _make_fingerprint(self, extra: dict[str, Any]) -> str:
        skipped = ("epochs", "progress", "log_every", "checkpoint_every")
        description = {
            "config": {k: v for k, v in asdict(self.config).items() if k not in skipped},
            "model": type(self.model).__name__,
            "shapes": [list(p.shape) for p in self.model.parameters()],
            "methods": self.methods.describe(),
            "update": self.rule.describe(),
            "hooks": [type(hook).__name__ for hook in self.hooks],
            "optimizer": type(self.optimizer).__name__,
            "extra": extra,
        }
        text = json.dumps(description, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / CHECKPOINT_NAME

    # -- what update rules use -------------------------------------------------------------------
    def ordered(self, raw: Any) -> Any:
        """A criterion's dict of losses as a list in the model's task order (other forms as they are)."""
        if isinstance(raw, dict):
            return [raw[name] for name in self.model.task_names] if self.model.task_names else list(raw.values())
        return raw

    def task_losses(self, outputs: dict[str, Tensor], targets: Any) -> tuple[list[Tensor], Tensor]:
        """The task losses as the criterion's own scalars (one backward branch each) and stacked;
        a NaN or Inf loss stops training with a message that names the task and the step."""
        rows = loss_rows(self.ordered(self.criterion(outputs, targets)))
        losses = torch.stack([row.detach() for row in rows])
        names = self.model.task_names
        if names and losses.shape[0] != len(names):
            raise ShapeError(f"the criterion returned {losses.shape[0]} losses for {len(names)} tasks {names}.")
        self.check_finite(losses, list(names))
        return rows, losses

    def check_finite(self, losses: Tensor, names: list[str]) -> None:
        """Stop training with a message that names the task and the step if a loss is NaN or Inf
        (``names``: the tasks of ``losses``, in order; an update rule that computes its losses itself
        calls this too)."""
        finite = torch.isfinite(losses)
        if not finite.all():
            bad = [names[i] if names else str(i) for i in torch.nonzero(~finite).flatten().tolist()]
            where = f" The last good checkpoint is {self.checkpoint_path}." if self.checkpoint_path else ""
            raise NonFiniteError(
                f"loss of task(s) {', '.join(bad)} is NaN/Inf at epoch {self.epoch + 1}, step {self.step + 1} "
                f"(losses: {[round(v, 6) if v == v else v for v in losses.detach().tolist()]}). Lower the "
                f"learning rate, check the data for NaN, or check the loss for log(0)/division by zero.{where}"
            )

    def _decode(self, representation: Tensor) -> dict[str, Tensor]:
        for built in self._viewers:
            views = built.task_views(representation, self.model.num_tasks)
            if views is not None:
                return self.model.decode_tasks(views)
        return self.model.decode(representation)

    def forward(self, inputs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """(shared representation, outputs) of a training forward pass (through RotoGrad's rotations)."""
        representation = self.model.encode(inputs)
        return representation, self._decode(representation)

    def predict(self, inputs: Any) -> dict[str, Tensor]:
        """The model's outputs as training sees them (e.g. through RotoGrad's rotations)."""
        return self._decode(self.model.encode(inputs))

    def watch_before_backward(self, rows: list[Tensor], representation: Tensor) -> None:
        """Give the monitors the step's losses before any backward pass (see :class:`Callback`)."""
        for callback in self._watchers:
            callback.before_backward(self, rows, representation)

    def optimizer_step(self) -> None:
        """The optimizer step, with the update hooks around it."""
        for hook in self.hooks:
            hook.before_step(self)
        self.optimizer.step()
        for hook in self.hooks:
            hook.after_step(self)

    def train_step(self, batch: Any) -> StepOutput:
        """Run the update rule on ``batch`` = (inputs, targets)."""
        device = next(self.model.parameters()).device
        inputs, targets = _to_device(batch, device)
        output = self.rule.step(self, inputs, targets)
        self.step += 1
        return output

    def _epoch_data(self) -> Iterable[Any]:
        """The current epoch's batches as the loop iterates them (``steps_per_epoch`` applied)."""
        if self._data is None:
            raise ConfigError("the epoch's batches exist only while fit() runs.")
        batches = self._data(self.epoch) if callable(self._data) else self._data
        limit = self.config.steps_per_epoch
        return batches if limit is None else itertools.islice(batches, limit)

    def epoch_batches(self) -> Iterator[tuple[Any, Any]]:
        """The current epoch's batches again, as ``(inputs, targets)`` on the model's device: the same
        batches the loop gives the update rule this epoch, in the same order, when the training data is
        a function of the epoch (seeded shuffling and augmentation) or a re-iterable collection. For
        update rules that pass over the epoch more than once (per-task passes before a fusion pass:
        :mod:`deconflict.methods.fusion`)."""
        device = next(self.model.parameters()).device
        for batch in self._epoch_data():
            yield _to_device(batch, device)

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
            "update": self.rule.state_dict(),
            "hooks": [hook.state_dict() for hook in self.hooks],
            "callbacks": [callback.state_dict() for callback in self.callbacks],
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("fingerprint") != self._fingerprint or state.get("format") != _FORMAT:
            raise CheckpointError(
                f"{self.checkpoint_path} belongs to a run with different settings (model, methods, update rule or "
                "hyperparameters changed). Delete the run folder to start afresh, or restore the settings."
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        for built, built_state in zip(self.methods.all, state["methods"]):
            built.load_state_dict(built_state)
        self.rule.load_state_dict(state["update"])
        for hook, hook_state in zip(self.hooks, state["hooks"]):
            hook.load_state_dict(hook_state)
        for callback, callback_state in zip(self.callbacks, state["callbacks"]):
            callback.load_state_dict(callback_state)
        set_rng_state(state["rng"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])

    def save_checkpoint(self) -> None:
        if self.checkpoint_path is not None:
            save_checkpoint(self.checkpoint_path, self.state_dict())

    # -- the loop ----------------------------------------------------------------------------
    def fit(self, data: Iterable[Any] | Callable[[int], Iterable[Any]]) -> TrainResult:
        """Train for ``config.epochs`` epochs, resuming from ``run_dir``'s checkpoint if there is one.

        ``data`` is an iterable of ``(inputs, targets)`` batches, iterated once per epoch, or a
        function ``epoch -> iterable``.
        """
        if self.checkpoint_path is not None and self.checkpoint_path.exists():
            self.load_state_dict(load_checkpoint(self.checkpoint_path))
            self.resumed_from_epoch = self.epoch
        history: list[list[float]] = []
        self._data = data
        try:
            for callback in self.callbacks:
                callback.on_fit_start(self)
            while self.epoch < self.config.epochs:
                self.rule.start_epoch(self)
                history.append(self._run_epoch())
                self.rule.end_epoch(self)
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
            for callback in self.callbacks:
                callback.on_fit_end(self)
        finally:
            self._data = None
            for callback in self.callbacks:
                callback.on_fit_exit(self)
        final = history[-1] if history else []
        return TrainResult(
            epochs=self.epoch,
            steps=self.step,
            final_losses=final,
            resumed_from_epoch=self.resumed_from_epoch,
            run_dir=self.run_dir,
            history=history,
        )

    def _run_epoch(self) -> list[float]:
        batches = self._epoch_data()
        limit = self.config.steps_per_epoch
        total = limit if limit is not None else (len(self._data) if hasattr(self._data, "__len__") else None)
        bar = tqdm(
            batches,
            total=total,
            desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
            disable=not self.config.progress,
            leave=False,
            mininterval=1.0,
        )
        self.model.train()
        sums: Tensor | None = None
        count = 0
        for batch in bar:
            output = self.train_step(batch)
            sums = output.losses.clone() if sums is None else sums + output.losses
            count += 1
            for callback in self.callbacks:
                callback.on_step_end(self, output)
        if count == 0:
            raise ConfigError(f"epoch {self.epoch + 1} had no batches: the training data is empty.")
        return (sums / count).tolist()
