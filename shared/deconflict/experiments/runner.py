"""Training one run of any family: every seed, checkpointed and resumable, then its summary.

:func:`train_seed` trains one seed with the engine, evaluating every epoch on the test split (every
metric at every averaging its task supports, so each paper's table can pick the one its numbers
used) and recording the training metrics of the same epoch. :func:`train_run` trains every seed of
the profile into a run folder — ``metrics.csv`` (tidy, every epoch), ``curves.csv`` (for ``dvc plots
show``) and ``summary.json`` (what defines the run, the profile, the model's size and the mean of the
last epochs per seed and over seeds) — with checkpoints in a work folder, so that a killed run
started again resumes and ends with the numbers of an uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader, Subset

from deconflict import data
from deconflict.errors import ConfigError
from deconflict.experiments.evaluation import Evaluator
from deconflict.experiments.runs import inputs_fingerprint, prune_runs, run_key
from deconflict.experiments.settings import TrainingSettings
from deconflict.experiments.spec import RunSpec
from deconflict.experiments.surgery import prepare_model, run_scan_files, shaped_model
from deconflict.io import read_json, write_csv, write_json
from deconflict.models import MultiTaskModel
from deconflict.tasks import TaskLoss
from deconflict.train import Callback, GradientMonitor, TrainConfig, Trainer, seed_everything

__all__ = [
    "CONFLICT_FILES",
    "PROCEDURE_FILE",
    "RUN_FILES",
    "conflict_monitor",
    "curves",
    "fp32_mib",
    "load_run",
    "model_size",
    "summarise_run",
    "train_run",
    "train_seed",
]

#: what a finished run folder holds
RUN_FILES = ("summary.json", "metrics.csv", "curves.csv")
#: the task-gradient tables of a run (GradientMonitor's pairs and summary of every seed)
CONFLICT_FILES = ("conflict_pairs.csv", "conflict_summary.csv")
#: what a run's training procedure recorded (connection strength: each step's phase and losses, each
#: epoch's top-priority shares), one table for all seeds; empty for a method of deconflict.optim
PROCEDURE_FILE = "procedure.csv"


def fp32_mib(parameters: int) -> float:
    """The size in MiB of ``parameters`` fp32 numbers (Recon's "#P (MB)")."""
    return parameters * 4 / 2**20


def model_size(
    spec: RunSpec, settings: TrainingSettings, recon_layers: Sequence[str] | None = None
) -> dict[str, float]:
    """Parameter counts of the run's model under ``settings`` and their fp32 size in MiB (built on
    the meta device: no memory, no initialisation); with ``recon_layers``, of the model those layers
    are branched in (Recon's "#P")."""
    with torch.device("meta"):
        model = shaped_model(spec, spec.build_model(**settings.model_options), recon_layers or ())
    total = sum(p.numel() for p in model.parameters())
    return {"parameters": total, "shared": sum(p.numel() for p in model.shared_parameters()), "mib": fp32_mib(total)}


def _loader(
    dataset: Any, batch_size: int, shuffle: bool, seed: int, epoch: int, workers: int, limit: int | None
) -> DataLoader:
    if limit is not None and limit < len(dataset):
        dataset = Subset(dataset, range(limit))
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
    )


def train_seed(
    spec: RunSpec,
    settings: TrainingSettings,
    seed: int,
    *,
    data_base: Path,
    work_dir: Path | None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    callbacks: Iterable[Callback] = (),
    report: Callable[[str], None] | None = None,
    scans: Path | None = None,
) -> pd.DataFrame:
    """Train ``spec`` with ``seed`` under ``settings``; return its tidy per-epoch metrics.

    ``progress``: a progress bar per epoch; ``report``: receives one line after every epoch (test
    metrics, time elapsed, ETA of the run). With a ``work_dir`` the run checkpoints every
    ``checkpoint_every`` epochs and resumes from there when started again (the metrics of finished
    epochs come back with the checkpoint). ``scans``: the folder of Recon's scans (a Recon run reads
    its layers there).

    The frame's ``attrs`` carry what else the seed produced: ``"surgery"`` (Recon's layers, sparse
    training's mask share: :func:`~deconflict.experiments.surgery.prepare_model`) and, when
    ``settings.conflict_every`` is set, ``"conflict_pairs"`` / ``"conflict_summary"`` (the task-gradient
    tables of :class:`~deconflict.train.GradientMonitor`).
    """
    dataset_cls = data.DATASETS[spec.dataset]
    root = data_base / spec.dataset
    train_set = dataset_cls(root, "train", augment=settings.augment, seed=seed)
    test_set = dataset_cls(root, dataset_cls.test_split)
    seed_everything(seed)
    model, hooks, surgery, update = prepare_model(
        spec, spec.build_model(**settings.model_options), scans, k_scale=settings.sparse_k_scale
    )
    model = model.to(device)
    monitor = conflict_monitor(settings, model)
    batch = settings.batch(spec.dataset)
    optimizer = settings.build_optimizer(model.parameters(), spec.learning_rate)
    scheduler = settings.build_scheduler(optimizer)
    evaluator = Evaluator(
        lambda: _loader(test_set, batch, False, seed, 0, settings.workers, settings.max_test_items),
        spec.tasks,
        None if work_dir is None else work_dir / "metrics.csv",
        report=report,
    )

    def epoch_batches(epoch: int) -> DataLoader:
        train_set.set_epoch(epoch)
        return _loader(train_set, batch, True, seed, epoch, settings.workers, settings.max_train_items)

    trainer = Trainer(
        model,
        TaskLoss(spec.tasks),
        optimizer,
        spec.build_method(),
        update=update,
        scheduler=scheduler,
        config=TrainConfig(
            epochs=settings.epochs,
            level=spec.level,
            shared=spec.shared,
            head_gradients=spec.head_gradients,
            jacobian_mode=settings.jacobian_mode,
            checkpoint_every=settings.checkpoint_every,
            progress=progress,
            log_every=settings.log_every,
        ),
        run_dir=work_dir,
        callbacks=[evaluator, *([monitor] if monitor else []), *callbacks],
        hooks=hooks,
        fingerprint={"run": spec.to_dict(), "settings": asdict(settings), "seed": seed},
    )
    started = time.perf_counter()
    trainer.fit(epoch_batches)
    if update is not None:  # analyses of the trained model that need the procedure's state (DR-MGF's pruning)
        update.after_fit(trainer, lambda: evaluator.evaluate(trainer).rows(trainer.epoch, "test"))
    frame = pd.DataFrame(evaluator.rows)
    frame.insert(0, "seed", seed)
    frame.attrs["surgery"] = surgery
    if update is not None and hasattr(update, "records"):
        frame.attrs["procedure"] = update.records()
    if monitor is not None:
        frame.attrs["conflict_pairs"] = monitor.pairs().assign(seed=seed)
        frame.attrs["conflict_summary"] = monitor.summary().assign(seed=seed)
    if work_dir is not None:
        write_json(work_dir / "timing.json", {"seconds": time.perf_counter() - started, "device": str(device)})
    return frame


def conflict_monitor(settings: TrainingSettings, model: MultiTaskModel) -> GradientMonitor | None:
    """The task-gradient monitor of a run (None when ``conflict_every`` is off or the model has one
    task): per-pair cosines per shared layer and over the whole shared part every N steps, at the
    levels of ``conflict_levels`` the model has (a model without one shared representation, e.g.
    Recon's branched models, has no feature level)."""
    if not settings.conflict_every or model.num_tasks < 2:
        return None
    levels = [level for level in settings.conflict_levels if level == "parameter" or model.shared_representation]
    return GradientMonitor(every=settings.conflict_every, levels=levels, per_layer=True) if levels else None


def summarise_run(metrics: pd.DataFrame, last_k: int, split: str = "test") -> pd.DataFrame:
    """Mean of the last ``last_k`` epochs per seed, then mean and std over seeds.

    Returns one row per (task, metric, reduction) with columns ``mean``, ``std`` (0 with one seed),
    ``seeds`` and one column per seed.
    """
    frame = metrics[metrics["split"] == split]
    last_epoch = frame.groupby("seed")["epoch"].transform("max")
    frame = frame[frame["epoch"] > last_epoch - last_k]
    per_seed = frame.groupby(["task", "metric", "reduction", "seed"])["value"].mean().unstack("seed")
    out = pd.DataFrame(
        {
            "mean": per_seed.mean(axis=1),
            "std": per_seed.std(axis=1, ddof=1).fillna(0.0) if per_seed.shape[1] > 1 else 0.0,
            "seeds": per_seed.shape[1],
        }
    )
    for seed in per_seed.columns:
        out[f"seed{seed}"] = per_seed[seed]
    return out.reset_index()


def curves(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch curves (mean over seeds): losses, and the test metrics at the global reduction."""
    keep = (metrics["metric"] == "loss") | ((metrics["split"] == "test") & (metrics["reduction"] == "global"))
    frame = metrics[keep].assign(column=lambda f: f["split"] + "/" + f["task"] + "/" + f["metric"])
    return frame.pivot_table(index="epoch", columns="column", values="value", aggfunc="mean").reset_index()


def train_run(
    spec: RunSpec,
    settings: TrainingSettings,
    seeds: Sequence[int],
    *,
    out: Path,
    work: Path,
    data_base: Path,
    profile: str,
    device: torch.device | str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
    scans: Path | None = None,
) -> dict[str, Any]:
    """Train every seed of ``spec`` into the run folder ``out`` (checkpoints under ``work``); return its summary.

    Besides :data:`RUN_FILES` the folder gets :data:`CONFLICT_FILES`, the task-gradient tables of every
    seed (empty when the settings record none), and :data:`PROCEDURE_FILE` (empty for most methods).

    Each seed's work folder is keyed by what defines it, the library's code version and what it
    reads (the dataset folder; a Recon run's scan): a killed run resumes its seeds, a changed one
    (settings, code, regenerated data, a new scan) starts afresh, and stale folders are removed.
    """
    inputs = inputs_fingerprint(data_base / spec.dataset, run_scan_files(spec, scans))
    definition = {"run": spec.to_dict(), "settings": repr(settings), "inputs": inputs}
    keys = {seed: f"seed{seed}-{run_key({**definition, 'seed': seed})}" for seed in seeds}
    prune_runs(work, set(keys.values()))
    frames = []
    for seed, key in keys.items():
        log(f"{spec.name}: seed {seed} ({profile} profile, {settings.epochs} epochs, device {device})")
        frames.append(
            train_seed(
                spec,
                settings,
                seed,
                data_base=data_base,
                work_dir=work / key,
                device=device,
                progress=progress,
                report=lambda line, seed=seed: log(f"{spec.name} seed {seed}: {line}"),
                scans=scans,
            )
        )
    surgery = [frame.attrs.get("surgery") or {} for frame in frames]
    for name, key in zip(CONFLICT_FILES, ("conflict_pairs", "conflict_summary")):
        tables = [frame.attrs[key] for frame in frames if key in frame.attrs]
        write_csv(out / name, pd.concat(tables, ignore_index=True) if tables else pd.DataFrame())
    procedure = [
        pd.DataFrame(rows).assign(record=kind, seed=seed)
        for seed, frame in zip(seeds, frames)
        for kind, rows in (frame.attrs.get("procedure") or {}).items()
        if rows
    ]
    write_csv(out / PROCEDURE_FILE, pd.concat(procedure, ignore_index=True) if procedure else pd.DataFrame())
    metrics = pd.concat([pd.DataFrame(frame) for frame in frames], ignore_index=True)
    summary = summarise_run(metrics, settings.last_k)
    write_csv(out / "metrics.csv", metrics)
    write_csv(out / "curves.csv", curves(metrics))
    record = {
        "name": spec.name,
        "run": spec.to_dict(),
        "family": spec.family.name,
        "profile": profile,
        "seeds": list(seeds),
        "epochs": settings.epochs,
        "last_k": settings.last_k,
        "model_options": dict(settings.model_options),
        "size": model_size(spec, settings, surgery[0].get("recon", {}).get("layers")),
        "last_k_mean": summary.to_dict(orient="records"),
    }
    if any(surgery):
        record["surgery"] = {str(seed): part for seed, part in zip(seeds, surgery)}
    write_json(out / "summary.json", record)
    test = summary[summary["reduction"] == "global"].set_index(["task", "metric"])["mean"]
    log(
        f"{spec.name}: mean of the last {settings.last_k} epochs (test, global): "
        + ", ".join(f"{task}/{metric} {value:.4g}" for (task, metric), value in test.items())
    )
    return record


def load_run(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """A finished run folder's ``summary.json`` and tidy ``metrics.csv``, with a clear error if absent."""
    summary_path, metrics_path = run_dir / "summary.json", run_dir / "metrics.csv"
    if not summary_path.is_file() or not metrics_path.is_file():
        raise ConfigError(
            f"run {run_dir.name!r} has no results in {run_dir} (summary.json, metrics.csv): run `dvc repro` "
            "(or `python pipelines/plan_runs.py --write` first if a paper's params added a run)."
        )
    return read_json(summary_path), pd.read_csv(metrics_path)
