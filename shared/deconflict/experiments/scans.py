"""Recon's scan (Alg. 1, first loop): the pre-run that scores every shared layer.

:func:`train_scan` trains the scan's definition (:func:`~deconflict.experiments.surgery.scan_spec`:
the run's model and data with Recon's base method) for the pre-run's epochs, recording the cosine of
every task pair's gradients w.r.t. every shared layer at every step
(:class:`~deconflict.train.GradientMonitor`, ``every=1``), and writes the scan folder every Recon run
of that pre-run reads (:data:`~deconflict.experiments.surgery.SCAN_FILES`): ``gradient_pairs.csv``
(step × layer × pair) and ``layers.json`` (the layers in forward order with their sizes). Like a run,
it checkpoints and resumes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from deconflict.analysis import WHOLE_SHARED
from deconflict.experiments.runner import train_seed
from deconflict.experiments.runs import inputs_fingerprint, prune_runs, run_key
from deconflict.experiments.settings import TrainingSettings
from deconflict.experiments.spec import RunSpec
from deconflict.io import write_csv, write_json
from deconflict.methods import recon
from deconflict.train import GradientMonitor

__all__ = ["train_scan"]


def train_scan(
    scan: RunSpec,
    settings: TrainingSettings,
    seed: int,
    epochs: int,
    *,
    out: Path,
    work: Path,
    data_base: Path,
    device: torch.device | str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the pre-run ``scan`` for ``epochs`` epochs (the profile's sizes and schedule) and write
    its scan folder ``out``; return what ``layers.json`` holds."""
    settings = dataclasses.replace(settings, epochs=epochs, last_k=1, conflict_every=None)
    inputs = inputs_fingerprint(data_base / scan.dataset)
    definition = {"run": scan.to_dict(), "settings": repr(settings), "seed": seed, "inputs": inputs}
    key = f"scan-seed{seed}-{run_key(definition)}"
    prune_runs(work, {key})
    monitor = GradientMonitor(every=1, levels=("parameter",), per_layer=True)
    log(f"scan {scan.name}: the pre-run, {epochs} epoch(s), seed {seed}, every step's per-layer cosines")
    train_seed(
        scan,
        settings,
        seed,
        data_base=data_base,
        work_dir=work / key,
        device=device,
        progress=progress,
        callbacks=[monitor],
        report=lambda line: log(f"scan {scan.name}: {line}"),
    )
    pairs = monitor.pairs()
    pairs = pairs[pairs["layer"] != WHOLE_SHARED]
    with torch.device("meta"):
        model = scan.build_model(**settings.model_options)
    layers = recon.conflict_layers(model)
    record = {
        "scan": scan.to_dict(),
        "epochs": epochs,
        "seed": seed,
        "steps": int(pairs["step"].max()) if len(pairs) else 0,
        "layers": layers,
        "sizes": recon.layer_sizes(model, layers),
    }
    write_csv(out / "gradient_pairs.csv", pairs)
    write_json(out / "layers.json", record)
    return record
