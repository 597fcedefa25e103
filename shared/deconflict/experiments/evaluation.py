"""Evaluating a run on its tasks after every epoch: tidy rows of every metric at every averaging."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from deconflict.io import write_csv
from deconflict.tasks import Task
from deconflict.train import Callback, StepOutput, Trainer

__all__ = ["Evaluator", "TaskMeter", "duration"]


class TaskMeter:
    """Every metric of every task at every averaging its task supports, plus the mean task losses."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        self.tasks = tuple(tasks)
        self.metrics = {(t.name, r): t.metric(r) for t in self.tasks for r in t.reductions}
        self.loss_sums = {t.name: 0.0 for t in self.tasks}
        self.batches = 0

    def update(
        self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor], losses: Iterable[float]
    ) -> None:
        for task in self.tasks:
            prediction = task.prediction_for_metric(outputs[task.name])
            for reduction in task.reductions:
                self.metrics[(task.name, reduction)].update(prediction, targets[task.name])
        for task, loss in zip(self.tasks, losses):
            self.loss_sums[task.name] += float(loss)
        self.batches += 1

    def rows(self, epoch: int, split: str) -> list[dict[str, Any]]:
        rows = [
            {
                "epoch": epoch,
                "split": split,
                "task": task,
                "metric": "loss",
                "reduction": "per_batch",
                "value": total / max(self.batches, 1),
            }
            for task, total in self.loss_sums.items()
        ]
        for (task, reduction), metric in self.metrics.items():
            for name, value in metric.compute().items():
                rows.append(
                    {
                        "epoch": epoch,
                        "split": split,
                        "task": task,
                        "metric": name,
                        "reduction": reduction,
                        "value": value,
                    }
                )
        return rows


class Evaluator(Callback):
    """Records, after every epoch, the training metrics of that epoch and the test metrics.

    Rows are tidy (epoch, split, task, metric, reduction, value); they live in the callback's
    state, so a resumed run keeps the epochs it did before it was stopped, and are written to
    ``metrics_path`` (atomically) after every epoch. ``report`` receives one line per epoch: each
    task's headline test metric, the time elapsed and the run's ETA.
    """

    def __init__(
        self,
        test_batches: Callable[[], Iterable[Any]],
        tasks: Sequence[Task],
        metrics_path: Path | None = None,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.test_batches = test_batches
        self.tasks = tuple(tasks)
        self.metrics_path = metrics_path
        self.report = report
        self.rows: list[dict[str, Any]] = []
        self._train = TaskMeter(self.tasks)
        self._started: float | None = None
        self._first_epoch = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        self._started, self._first_epoch = time.perf_counter(), trainer.epoch

    def on_step_end(self, trainer: Trainer, output: StepOutput) -> None:
        if output.outputs is not None:
            self._train.update(output.outputs, output.targets, output.losses.tolist())

    def evaluate(self, trainer: Trainer) -> TaskMeter:
        """Test metrics of the model as it is now (eval mode, no gradients)."""
        meter = TaskMeter(self.tasks)
        device = next(trainer.model.parameters()).device
        was_training = trainer.model.training
        trainer.model.eval()
        with torch.no_grad():
            for inputs, targets in self.test_batches():
                inputs = inputs.to(device)
                targets = {k: v.to(device) for k, v in targets.items()}
                outputs = trainer.predict(inputs)
                losses = trainer.criterion(outputs, targets)
                meter.update(outputs, targets, [float(losses[t.name]) for t in self.tasks])
        trainer.model.train(was_training)
        return meter

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        self.rows += self._train.rows(epoch + 1, "train")
        self.rows += self.evaluate(trainer).rows(epoch + 1, "test")
        self._train = TaskMeter(self.tasks)
        if self.report is not None:
            self.report(self._epoch_line(trainer, epoch))
        if self.metrics_path is not None:
            write_csv(self.metrics_path, pd.DataFrame(self.rows))

    def _epoch_line(self, trainer: Trainer, epoch: int) -> str:
        done, total = epoch + 1, trainer.config.epochs
        elapsed = time.perf_counter() - (self._started or time.perf_counter())
        per_epoch = elapsed / max(done - self._first_epoch, 1)
        reduction = {t.name: "global" if "global" in t.reductions else t.reductions[0] for t in self.tasks}
        values = {
            (r["task"], r["metric"]): r["value"]
            for r in self.rows
            if r["epoch"] == done and r["split"] == "test" and r["reduction"] == reduction[r["task"]]
        }
        shown = ", ".join(f"{t.name} {t.headline.key} {values[(t.name, t.headline.key)]:.4g}" for t in self.tasks)
        return (
            f"epoch {done}/{total}: test {shown} | {duration(elapsed)} elapsed, "
            f"ETA {duration(per_epoch * (total - done))}"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state.get("rows", []))


def duration(seconds: float) -> str:
    """``1h02m`` or ``3m07s``."""
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
