"""NYUv2 / CityScapes training runs: what defines a run, how it trains, what it records.

A :class:`DenseRun` is what defines an experiment, independent of the profile: dataset, model,
method and its hyperparameters, level, learning rate. Its :attr:`~DenseRun.name` is the key every
table uses, so a run needed by several papers' tables is trained once. :class:`DenseSettings` is
the profile's part (width, epochs, batch size, data folder, schedule). :func:`train_seed` trains
one seed with the engine, evaluating every epoch on the test split (all three metric reductions,
so each paper's table can pick the one its numbers used) and recording the training metrics of
the same epoch; :func:`summarise_run` reduces the seeds to the papers' "mean of the last 10
epochs", mean ± std over seeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader

from deconflict import optim
from deconflict.data import DATASETS
from deconflict.config import reject_unknown
from deconflict.errors import ConfigError
from deconflict.io import read_json, write_csv, write_json
from deconflict.metrics import REDUCTIONS, DepthMetric, Metric, NormalMetric, SegmentationMetric
from deconflict.models import DENSE_MODELS, DenseLoss, MultiTaskModel
from deconflict.train import Callback, StepOutput, TrainConfig, Trainer, check_weights_task_gradients, seed_everything

__all__ = [
    "DenseRun", "DenseSettings", "DenseEvaluator", "METRICS", "PRIMARY_METRIC", "HIGHER_IS_BETTER", "build_model",
    "dataset_tasks", "fp32_mib", "model_size", "train_seed", "summarise_run", "load_run",
]

#: the metrics each task reports, in the papers' column order, with "higher is better"
METRICS: dict[str, list[tuple[str, bool]]] = {
    "segmentation": [("miou", True), ("pixel_acc", True), ("mean_class_acc", True)],
    "depth": [("abs_err", False), ("rel_err", False), ("rmse", False)],
    "normal": [("mean", False), ("median", False), ("within_11.25", True), ("within_22.5", True), ("within_30", True)],
}
#: each task's headline metric (the first of its columns), e.g. segmentation → miou
PRIMARY_METRIC = {task: metrics[0][0] for task, metrics in METRICS.items()}
HIGHER_IS_BETTER = {metric: higher for metrics in METRICS.values() for metric, higher in metrics}
MODELS_WITH_OPTIONS = {"cross_stitch": ("stitch",)}
DEFAULT_LR = 1e-4


def dataset_tasks(dataset: str) -> dict[str, int]:
    """The tasks of ``dataset`` and their output channels, e.g. NYUv2 → segmentation 13, depth 1, normal 3."""
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dense dataset {dataset!r}; the datasets are {', '.join(DATASETS)}.")
    cls = DATASETS[dataset]
    channels = {"segmentation": cls.num_classes, **cls.channels}
    return {task: channels[task] for task in cls.folders if task != "image"}


def _format_number(value: Any) -> str:
    """A number as it can appear in a run name and a DVC params path (no dot: 0.4 → 0p4)."""
    text = format(value, "g") if isinstance(value, float) else str(value)
    return text.replace(".", "p")


@dataclass(frozen=True)
class DenseRun:
    """What defines a dense-prediction run (the profile decides sizes and lengths).

    Attributes:
        dataset: ``nyuv2`` or ``cityscapes``.
        model: ``single``, ``split``, ``mtan`` or ``cross_stitch`` (:data:`deconflict.models.DENSE_MODELS`).
        task: the task of a ``single`` model.
        method: a registered :mod:`deconflict.optim` method (``equal`` = joint training).
        hparams: the method's hyperparameters (e.g. CAGrad's ``c``).
        level: ``parameter`` or ``feature`` (where the method takes per-task gradients).
        lr: Adam's initial learning rate at full scale (the papers': 1e-4; Recon's CityScapes 5e-5).
        model_options: e.g. ``{"stitch": "mtan_code"}`` for Cross-Stitch.
        shared: ``model`` (the model's split: CAGrad / Recon / DR-MGF code) or ``all_but_heads``
            (the Nash-MTL / FAMO code: every parameter but the output heads is shared) — see
            :class:`~deconflict.train.TrainConfig`.
        head_gradients: ``own`` or ``weighted`` (heads scaled by the aggregator's weights, as the
            Nash-MTL / FAMO code's Σ α_t L_t does).
    """

    dataset: str
    model: str
    task: str | None = None
    method: str = "equal"
    hparams: tuple[tuple[str, Any], ...] = ()
    level: str = "parameter"
    lr: float = DEFAULT_LR
    model_options: tuple[tuple[str, Any], ...] = ()
    shared: str = "model"
    head_gradients: str = "own"

    def __post_init__(self) -> None:
        tasks = dataset_tasks(self.dataset)
        if self.model not in DENSE_MODELS:
            raise ConfigError(f"unknown dense model {self.model!r}; the models are {', '.join(DENSE_MODELS)}.")
        if (self.model == "single") != (self.task is not None):
            raise ConfigError("a 'single' model needs task: <one task>; the multi-task models take no task.")
        if self.task is not None and self.task not in tasks:
            raise ConfigError(f"{self.dataset} has no task {self.task!r}; its tasks are {', '.join(tasks)}.")
        if self.level not in ("parameter", "feature"):
            raise ConfigError(f"level must be 'parameter' or 'feature', got {self.level!r}.")
        if not isinstance(self.lr, (int, float)) or not 0 < self.lr < 1:
            raise ConfigError(f"lr must be a number in (0, 1), got {self.lr!r}.")
        allowed = MODELS_WITH_OPTIONS.get(self.model, ())
        unknown = [key for key, _ in self.model_options if key not in allowed]
        if unknown:
            raise ConfigError(f"model {self.model!r} has no option(s) {unknown}; its options: {list(allowed) or 'none'}.")
        method = optim.get(self.method, **dict(self.hparams))  # an unknown method or a bad hyperparameter fails here
        TrainConfig(level=self.level, shared=self.shared, head_gradients=self.head_gradients)  # valid values
        if self.head_gradients == "weighted":
            check_weights_task_gradients(method)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> DenseRun:
        spec = dict(spec)
        reject_unknown(spec, cls.__dataclass_fields__, "run setting")
        for key in ("hparams", "model_options"):
            spec[key] = tuple(sorted(dict(spec.get(key) or {}).items()))
        if "lr" in spec:
            spec["lr"] = float(spec["lr"])
        return cls(**spec)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["hparams"] = dict(self.hparams)
        out["model_options"] = dict(self.model_options)
        return out

    @property
    def tasks(self) -> dict[str, int]:
        tasks = dataset_tasks(self.dataset)
        return {self.task: tasks[self.task]} if self.task else tasks

    @property
    def name(self) -> str:
        """A readable key, unique for each definition: e.g. ``nyuv2-mtan-cagrad-c0p4`` (c = 0.4)."""
        parts = [self.dataset, self.model.replace("_", "")]
        if self.task:
            parts.append(self.task)
        parts += [f"{key}_{_format_number(value)}" for key, value in self.model_options]
        if self.method != "equal" or self.model != "single":
            parts.append(self.method.replace("_", ""))
        parts += [f"{key}{_format_number(value)}" for key, value in self.hparams]
        if self.level != "parameter":
            parts.append(self.level)
        if self.shared != "model":
            parts.append(self.shared.replace("_", ""))
        if self.head_gradients != "own":
            parts.append(f"heads{self.head_gradients}")
        if self.lr != DEFAULT_LR:
            parts.append(f"lr{_format_number(self.lr)}")
        return "-".join(parts)


@dataclass(frozen=True)
class DenseSettings:
    """The profile's part of a run (``dense`` section of ``pipelines/params.yaml``)."""

    data_dir: str | None = None  # folder of the dataset folders, relative to the repository; None: root data_root
    width: float = 1.0
    epochs: int = 200
    batch_size: Mapping[str, int] = field(default_factory=lambda: {"nyuv2": 2, "cityscapes": 8})
    lr_multiplier: float = 1.0  # smoke: larger steps so that a few epochs learn something
    lr_milestone: int = 100  # the learning rate is multiplied by lr_gamma after this many epochs
    lr_gamma: float = 0.5
    augment: bool = True
    last_k: int = 10
    workers: int = 0
    checkpoint_every: int = 1
    jacobian_mode: str = "auto"
    max_train_items: int | None = None
    max_test_items: int | None = None

    @classmethod
    def from_params(cls, section: Mapping[str, Any]) -> DenseSettings:
        reject_unknown(section, cls.__dataclass_fields__, "dense setting")
        settings = cls(**section)
        for name in ("epochs", "lr_milestone", "last_k"):
            value = getattr(settings, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"dense setting {name} must be an integer ≥ 1, got {value!r}.")
        if settings.last_k > settings.epochs:
            raise ConfigError(f"last_k ({settings.last_k}) cannot exceed epochs ({settings.epochs}).")
        return settings

    def data_base(self, repo_root: Path, data_root: Path) -> Path:
        """The folder holding ``nyuv2/`` and ``cityscapes/``: ``data_dir`` if set, else the root data_root."""
        return repo_root / self.data_dir if self.data_dir else data_root

    def batch(self, dataset: str) -> int:
        if dataset not in self.batch_size:
            raise ConfigError(f"no batch size for {dataset!r} in the dense settings ({dict(self.batch_size)}).")
        return int(self.batch_size[dataset])


def build_model(run: DenseRun, width: float) -> MultiTaskModel:
    """The run's model at ``width`` × the papers' filters."""
    cls = DENSE_MODELS[run.model]
    if run.model == "single":
        return cls(run.task, run.tasks[run.task], width=width)
    return cls(run.tasks, width=width, **dict(run.model_options))


def fp32_mib(parameters: int) -> float:
    """The size in MiB of ``parameters`` fp32 numbers (Recon's "#P (MB)")."""
    return parameters * 4 / 2**20


def model_size(run: DenseRun, width: float) -> dict[str, float]:
    """Parameter counts of the run's model at ``width`` and their fp32 size in MiB (built on the meta
    device: no memory, no initialisation)."""
    with torch.device("meta"):
        model = build_model(run, width)
    total = sum(p.numel() for p in model.parameters())
    return {"parameters": total, "shared": sum(p.numel() for p in model.shared_parameters()),
            "mib": fp32_mib(total)}


def _metric(task: str, classes: int, reduction: str) -> Metric:
    if task == "segmentation":
        return SegmentationMetric(classes, reduction=reduction)
    return DepthMetric(reduction=reduction) if task == "depth" else NormalMetric(reduction=reduction)


class _Meter:
    """Every metric of every task at every reduction, plus the mean task losses."""

    def __init__(self, tasks: Mapping[str, int]) -> None:
        self.tasks = dict(tasks)
        self.metrics = {(t, r): _metric(t, c, r) for t, c in self.tasks.items() for r in REDUCTIONS}
        self.loss_sums = dict.fromkeys(self.tasks, 0.0)
        self.batches = 0

    def update(self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor],
               losses: Iterable[float]) -> None:
        for task in self.tasks:
            prediction, target = outputs[task], targets[task]
            if task == "segmentation":
                prediction = prediction.argmax(1)
            for reduction in REDUCTIONS:
                self.metrics[(task, reduction)].update(prediction, target)
        for task, loss in zip(self.tasks, losses):
            self.loss_sums[task] += float(loss)
        self.batches += 1

    def rows(self, epoch: int, split: str) -> list[dict[str, Any]]:
        rows = [{"epoch": epoch, "split": split, "task": task, "metric": "loss", "reduction": "per_batch",
                 "value": total / max(self.batches, 1)} for task, total in self.loss_sums.items()]
        for (task, reduction), metric in self.metrics.items():
            for name, value in metric.compute().items():
                rows.append({"epoch": epoch, "split": split, "task": task, "metric": name,
                             "reduction": reduction, "value": value})
        return rows


class DenseEvaluator(Callback):
    """Records, after every epoch, the training metrics of that epoch and the test metrics.

    Rows are tidy (epoch, split, task, metric, reduction, value); they live in the callback's
    state, so a resumed run keeps the epochs it did before it was stopped, and are written to
    ``metrics_path`` (atomically) after every epoch.
    """

    def __init__(self, test_batches: Callable[[], Iterable[Any]], tasks: Mapping[str, int],
                 metrics_path: Path | None = None, report: Callable[[str], None] | None = None) -> None:
        self.test_batches = test_batches
        self.tasks = dict(tasks)
        self.metrics_path = metrics_path
        self.report = report  # receives one line per epoch: test metrics, elapsed time, ETA of the run
        self.rows: list[dict[str, Any]] = []
        self._train = _Meter(self.tasks)
        self._started: float | None = None
        self._first_epoch = 0

    def on_fit_start(self, trainer: Trainer) -> None:
        self._started, self._first_epoch = time.perf_counter(), trainer.epoch

    def on_step_end(self, trainer: Trainer, output: StepOutput) -> None:
        if output.outputs is not None:
            self._train.update(output.outputs, output.targets, output.losses.tolist())

    def evaluate(self, trainer: Trainer) -> _Meter:
        """Test metrics of the model as it is now (eval mode, no gradients)."""
        meter = _Meter(self.tasks)
        device = next(trainer.model.parameters()).device
        was_training = trainer.model.training
        trainer.model.eval()
        with torch.no_grad():
            for images, targets in self.test_batches():
                images = images.to(device)
                targets = {k: v.to(device) for k, v in targets.items()}
                outputs = trainer.predict(images)
                losses = trainer.criterion(outputs, targets)
                meter.update(outputs, targets, [float(losses[t]) for t in self.tasks])
        trainer.model.train(was_training)
        return meter

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        self.rows += self._train.rows(epoch + 1, "train")
        self.rows += self.evaluate(trainer).rows(epoch + 1, "test")
        self._train = _Meter(self.tasks)
        if self.report is not None:
            self.report(self._epoch_line(trainer, epoch))
        if self.metrics_path is not None:
            write_csv(self.metrics_path, pd.DataFrame(self.rows))

    def _epoch_line(self, trainer: Trainer, epoch: int) -> str:
        done, total = epoch + 1, trainer.config.epochs
        elapsed = time.perf_counter() - (self._started or time.perf_counter())
        per_epoch = elapsed / max(done - self._first_epoch, 1)
        first = {task: PRIMARY_METRIC[task] for task in self.tasks}
        values = {(r["task"], r["metric"]): r["value"] for r in self.rows
                  if r["epoch"] == done and r["split"] == "test" and r["reduction"] == "global"}
        shown = ", ".join(f"{task} {metric} {values[(task, metric)]:.4g}" for task, metric in first.items())
        return (f"epoch {done}/{total}: test {shown} | {_duration(elapsed)} elapsed, "
                f"ETA {_duration(per_epoch * (total - done))}")

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state.get("rows", []))


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def _loader(dataset: Any, batch_size: int, shuffle: bool, seed: int, epoch: int, workers: int,
            limit: int | None) -> DataLoader:
    if limit is not None and limit < len(dataset):
        dataset = torch.utils.data.Subset(dataset, range(limit))
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=workers,
                      pin_memory=torch.cuda.is_available())


def train_seed(run: DenseRun, settings: DenseSettings, seed: int, *, data_base: Path, work_dir: Path | None,
               device: torch.device | str = "cpu", progress: bool = True,
               callbacks: Iterable[Callback] = (), report: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Train ``run`` with ``seed`` under ``settings``; return its tidy per-epoch metrics.

    ``progress``: a progress bar per epoch (with the epoch's ETA); ``report``: receives one line
    after every epoch (test metrics, time elapsed, ETA of the whole run).

    With a ``work_dir`` the run checkpoints after every ``checkpoint_every`` epochs and resumes
    from there when started again (the metrics of finished epochs come back with the checkpoint).
    """
    root = data_base / run.dataset
    cls = DATASETS[run.dataset]
    train_set = cls(root, "train", augment=settings.augment, seed=seed)
    test_set = cls(root, "val")
    seed_everything(seed)
    model = build_model(run, settings.width).to(device)
    batch = settings.batch(run.dataset)
    optimizer = torch.optim.Adam(model.parameters(), lr=run.lr * settings.lr_multiplier)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.lr_milestone, gamma=settings.lr_gamma)
    evaluator = DenseEvaluator(
        lambda: _loader(test_set, batch, False, seed, 0, settings.workers, settings.max_test_items),
        run.tasks, None if work_dir is None else work_dir / "metrics.csv",
        report=report,
    )

    def epoch_batches(epoch: int) -> DataLoader:
        train_set.set_epoch(epoch)
        return _loader(train_set, batch, True, seed, epoch, settings.workers, settings.max_train_items)

    trainer = Trainer(
        model, DenseLoss(run.tasks), optimizer, optim.get(run.method, **dict(run.hparams)),
        scheduler=scheduler,
        config=TrainConfig(epochs=settings.epochs, level=run.level, shared=run.shared, head_gradients=run.head_gradients,
                           jacobian_mode=settings.jacobian_mode,
                           checkpoint_every=settings.checkpoint_every, progress=progress, log_every=10),
        run_dir=work_dir, callbacks=[evaluator, *callbacks],
        fingerprint={"run": run.to_dict(), "settings": asdict(settings), "seed": seed},
    )
    started = time.perf_counter()
    trainer.fit(epoch_batches)
    frame = pd.DataFrame(evaluator.rows)
    frame.insert(0, "seed", seed)
    if work_dir is not None:
        write_json(work_dir / "timing.json", {"seconds": time.perf_counter() - started, "device": str(device)})
    return frame


def summarise_run(metrics: pd.DataFrame, last_k: int, split: str = "test") -> pd.DataFrame:
    """Mean of the last ``last_k`` epochs per seed, then mean and std over seeds.

    Returns one row per (task, metric, reduction) with columns ``mean``, ``std`` (0 with one seed),
    ``seeds`` and one column per seed.
    """
    frame = metrics[metrics["split"] == split]
    last_epoch = frame.groupby("seed")["epoch"].transform("max")
    frame = frame[frame["epoch"] > last_epoch - last_k]
    per_seed = frame.groupby(["task", "metric", "reduction", "seed"])["value"].mean().unstack("seed")
    out = pd.DataFrame({"mean": per_seed.mean(axis=1),
                        "std": per_seed.std(axis=1, ddof=1).fillna(0.0) if per_seed.shape[1] > 1 else 0.0,
                        "seeds": per_seed.shape[1]})
    for seed in per_seed.columns:
        out[f"seed{seed}"] = per_seed[seed]
    return out.reset_index()


def load_run(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """A finished run folder's ``summary.json`` and tidy ``metrics.csv``, with a clear error if absent."""
    summary_path, metrics_path = run_dir / "summary.json", run_dir / "metrics.csv"
    if not summary_path.is_file() or not metrics_path.is_file():
        raise ConfigError(
            f"run {run_dir.name!r} has no results in {run_dir} (summary.json, metrics.csv): run `dvc repro` "
            "(or `python pipelines/plan_runs.py --write` first if a paper's params added a run)."
        )
    return read_json(summary_path), pd.read_csv(metrics_path)

