"""Step metrics to dvclive, as a callback of the training loop (resumes without duplicate rows)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from deconflict.io import atomic_path
from deconflict.train.callbacks import Callback, StepOutput

if TYPE_CHECKING:  # pragma: no cover
    from deconflict.train.loop import Trainer

__all__ = ["DvcLiveLogger"]


class DvcLiveLogger(Callback):
    """Logs every ``every`` steps the task losses, their sum, the loss weights (unless the weighting
    is plain equal weighting) and the epoch into ``log_dir`` (dvclive's TSV files; ``dvc plots show`` draws them).

    A resumed run first drops the rows logged after the checkpoint it resumes from, so every step
    appears once. The :class:`~deconflict.train.Trainer` adds one when given a ``run_dir``
    (``TrainConfig.log_every``).
    """

    def __init__(self, log_dir: str | Path, every: int = 1) -> None:
        self.log_dir = Path(log_dir)
        self.every = int(every)
        self._live = None

    def on_fit_start(self, trainer: Trainer) -> None:
        from dvclive import Live

        resumed = trainer.resumed_from_epoch is not None
        if resumed:
            _truncate(self.log_dir, trainer.step)
        self._live = Live(dir=str(self.log_dir), resume=resumed, save_dvc_exp=False, dvcyaml=None, report=None)

    def on_step_end(self, trainer: Trainer, output: StepOutput) -> None:
        if self._live is None or output.step % self.every:
            return
        live = self._live
        live.step = output.step
        names = trainer.model.task_names or [str(i) for i in range(output.losses.shape[0])]
        for name, value in zip(names, output.losses.tolist()):
            live.log_metric(f"train/loss/{name}", value)
        live.log_metric("train/loss/total", float(output.losses.sum()))
        if output.weights is not None and trainer.methods.weighting.name != "equal":
            for name, value in zip(names, output.weights.tolist()):
                live.log_metric(f"train/weight/{name}", value)
        live.log_metric("epoch", output.epoch + 1)
        live.next_step()

    def on_fit_exit(self, trainer: Trainer) -> None:
        if self._live is not None:
            self._live.end()
            self._live = None


def _truncate(log_dir: Path, last_step: int) -> None:
    """Drop metric rows logged after the checkpoint a run resumes from (they will be logged again)."""
    metrics_dir = log_dir / "plots" / "metrics"
    if not metrics_dir.is_dir():
        return
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
