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
from deconflict.grad import MultiTaskBackward, stack_losses
from deconflict.models.base import MultiTaskModel
from deconflict.train.callbacks import Callback, StepOutput
from deconflict.train.checkpoint import load_checkpoint, save_checkpoint
from deconflict.train.seeding import rng_state, set_rng_state

__all__ = ["TrainConfig", "TrainResult", "Trainer", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"
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
    """

    epochs: int = 1
    steps_per_epoch: int | None = None
    level: str = "parameter"
    jacobian_mode: str = "auto"
    log_every: int = 1
    checkpoint_every: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"epochs must be an integer ≥ 1, got {self.epochs!r}.")
        if self.steps_per_epoch is not None and (not isinstance(self.steps_per_epoch, int) or self.steps_per_epoch < 1):
            raise ConfigError(f"steps_per_epoch must be None or an integer ≥ 1, got {self.steps_per_epoch!r}.")
        if self.level not in ("parameter", "feature"):
            raise ConfigError(f"level must be 'parameter' or 'feature', got {self.level!r}.")
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


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(value, device) for value in batch)
    return batch


def _as_method(method: optim.Method | str | None, category: str) -> optim.Method | None:
    if method is None or isinstance(method, optim.Method):
        built = method
    else:
        built = optim.get(method)
    if built is not None and built.category != category:
        raise ConfigError(
            f"{built.name} is a{'n' if built.category == 'aggregator' else ''} {built.category}, "
            f"not a{'n' if category == 'aggregator' else ''} {category}: pass it as "
            f"{'aggregator=' if built.category == 'aggregator' else 'weighting='}."
        )
    return built


class Trainer:
    """Trains a :class:`~deconflict.models.MultiTaskModel` with a loss weighting and/or an aggregator.

    One step: forward (``encode`` then ``decode``), the criterion gives the T task losses, the loss
    weighting (default: equal weights) scales them, and then either

    * with an aggregator: the per-task gradients of the shared part (parameters, or the
      representation at ``level="feature"``) are aggregated into one direction and written into
      ``.grad`` while each task's own parameters get that task's gradient; or
    * without: one backward pass of Σ_t w_t L_t;

    then ``optimizer.step()``. Seeded runs are deterministic on the CPU; with a ``run_dir`` the
    loop logs metrics with dvclive, checkpoints atomically and resumes from the last checkpoint
    with the same final result as an uninterrupted run.
    """

    def __init__(
        self,
        model: MultiTaskModel,
        criterion: Criterion,
        optimizer: torch.optim.Optimizer,
        *,
        weighting: optim.LossWeighting | str | None = None,
        aggregator: optim.Aggregator | str | None = None,
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
        self.weighting = _as_method(weighting, "weighting") or optim.get("equal")
        self.aggregator = _as_method(aggregator, "aggregator")
        self.scheduler = scheduler
        self.config = config or TrainConfig()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.callbacks = list(callbacks)
        self.backward = MultiTaskBackward(self.config.jacobian_mode)
        self.epoch = 0  # epochs completed
        self.step = 0  # steps completed
        self._fingerprint = self._make_fingerprint(fingerprint or {})
        self._live = None

    # -- identity of a run -------------------------------------------------------------------
    def _make_fingerprint(self, extra: dict[str, Any]) -> str:
        description = {
            "config": {k: v for k, v in asdict(self.config).items() if k not in ("epochs", "progress", "log_every", "checkpoint_every")},
            "model": type(self.model).__name__,
            "shapes": [list(p.shape) for p in self.model.parameters()],
            "weighting": repr(self.weighting),
            "aggregator": repr(self.aggregator),
            "optimizer": type(self.optimizer).__name__,
            "extra": extra,
        }
        text = json.dumps(description, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / CHECKPOINT_NAME

    # -- one step ----------------------------------------------------------------------------
    def _losses(self, outputs: dict[str, Tensor], targets: Any) -> Tensor:
        losses = stack_losses(self.criterion(outputs, targets))
        names = self.model.task_names
        if names and losses.shape[0] != len(names):
            raise ShapeError(f"the criterion returned {losses.shape[0]} losses for {len(names)} tasks {names}.")
        finite = torch.isfinite(losses.detach())
        if not finite.all():
            bad = [names[i] if names else str(i) for i in torch.nonzero(~finite).flatten().tolist()]
            where = f" The last good checkpoint is {self.checkpoint_path}." if self.checkpoint_path else ""
            raise NonFiniteError(
                f"loss of task(s) {', '.join(bad)} is NaN/Inf at epoch {self.epoch + 1}, step {self.step + 1} "
                f"(losses: {[round(v, 6) if v == v else v for v in losses.detach().tolist()]}). Lower the "
                f"learning rate, check the data for NaN, or check the loss for log(0)/division by zero.{where}"
            )
        return losses

    def train_step(self, batch: Any) -> StepOutput:
        """Run one optimisation step on ``batch`` = (inputs, targets)."""
        device = next(self.model.parameters()).device
        inputs, targets = _to_device(batch, device)
        self.optimizer.zero_grad(set_to_none=True)
        representation = self.model.encode(inputs)
        outputs = self.model.decode(representation)
        losses = self._losses(outputs, targets)
        weights = self.weighting(losses)
        weighted = losses * weights
        result = None
        if self.aggregator is None:
            weighted.sum().backward()
        else:
            result = self.backward(
                weighted,
                self.model.shared_parameters(),
                self.model.task_parameters(),
                self.aggregator,
                representation=representation if self.config.level == "feature" else None,
                task_names=self.model.task_names,
            )
        self.optimizer.step()
        self.step += 1
        return StepOutput(epoch=self.epoch, step=self.step, losses=losses.detach(),
                          weights=weights.detach(), backward=result)

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
            "weighting": self.weighting.state_dict(),
            "aggregator": self.aggregator.state_dict() if self.aggregator is not None else None,
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
        self.weighting.load_state_dict(state["weighting"])
        if self.aggregator is not None:
            self.aggregator.load_state_dict(state["aggregator"])
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
