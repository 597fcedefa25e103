"""Benchmark (not a test; needs a CUDA GPU): the dense-prediction CUDA path at the papers' size.

    python tests/benchmarks/bench_dense_cuda.py [--steps 10] [--epoch] [--device cuda]

1. One training step of SegNet-MTAN at full width and full resolution (NYUv2 288×384, batch 2) for
   joint training and each gradient-aggregation family (PCGrad, CAGrad, MGDA, Nash-MTL, IMTL-G):
   median step time (ms) after warm-up and peak GPU memory, and the ratio to joint training.
2. With ``--epoch``: one epoch of the ``full`` profile's training (Adam, augmentation, evaluation
   on the test split) on synthetic full-size NYUv2 (795 train / 654 test items written to a
   temporary folder), through the same code path as ``pipelines/train.py``.

CI never runs this (no GPU there); it exists to prove and time the CUDA path where one is available.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from deconflict import optim
from deconflict.data import NYUv2
from deconflict.experiments import RunSpec, TrainingSettings, train_seed
from deconflict.models import SegNetMTAN
from deconflict.tasks import TaskLoss
from deconflict.train import TrainConfig, Trainer

METHODS = [("equal", {}), ("pcgrad", {}), ("cagrad", {"c": 0.4}), ("mgda", {}), ("nash_mtl", {}), ("imtl_g", {})]
NYU = {"segmentation": 13, "depth": 1, "normal": 3}


def batch(device: torch.device, size=(288, 384), items: int = 2):
    generator = torch.Generator().manual_seed(0)
    h, w = size
    targets = {
        "segmentation": torch.randint(-1, 13, (items, h, w), generator=generator),
        "depth": torch.rand(items, 1, h, w, generator=generator) * 5,
        "normal": torch.nn.functional.normalize(torch.randn(items, 3, h, w, generator=generator), dim=1),
    }
    return (torch.rand(items, 3, h, w, generator=generator).to(device), {k: v.to(device) for k, v in targets.items()})


def step_times(device: torch.device, steps: int) -> None:
    data = batch(device)
    print("| method | step (ms, median) | / joint | peak memory (GiB) |\n|---|---|---|---|")
    joint = None
    for name, hparams in METHODS:
        torch.manual_seed(0)
        model = SegNetMTAN(NYU).to(device)
        trainer = Trainer(
            model,
            TaskLoss(model.tasks),
            torch.optim.Adam(model.parameters(), 1e-4),
            optim.get(name, **hparams),
            config=TrainConfig(progress=False, log_every=0),
        )
        for _ in range(2):
            trainer.train_step(data)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(steps):
            torch.cuda.synchronize(device)
            start = time.perf_counter()
            trainer.train_step(data)
            torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        median = statistics.median(times) * 1e3
        joint = joint or median
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        print(f"| {name} | {median:.1f} | {median / joint:.2f} | {peak:.2f} |")
        del trainer, model
        torch.cuda.empty_cache()


def one_epoch(device: torch.device) -> None:
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        start = time.perf_counter()
        NYUv2.write_synthetic(base / "nyuv2", seed=0, train=795, val=654, size=(288, 384))
        print(f"synthetic full-size NYUv2 written in {time.perf_counter() - start:.0f} s")
        settings = TrainingSettings(
            model_options={"width": 1.0},
            epochs=1,
            batch_size={"nyuv2": 2},
            last_k=1,
            workers=2,
            schedule={"name": "step", "step_size": 100, "gamma": 0.5},
        )
        torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        metrics = train_seed(
            RunSpec("nyuv2", "mtan"), settings, 0, data_base=base, work_dir=base / "work", device=device, progress=True
        )
        seconds = time.perf_counter() - start
        test = metrics[(metrics["split"] == "test") & (metrics["reduction"] == "global")]
        print(
            f"one full-profile epoch (398 steps + evaluation of 654 images): {seconds:.0f} s, "
            f"peak memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
        )
        print(test[["task", "metric", "value"]].to_string(index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--epoch", action="store_true", help="also time one full-profile epoch")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type != "cuda" or not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU (CI and the CPU machines have none).")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(device)}\n")
    print("## SegNet-MTAN, full width, NYUv2 288×384, batch 2, one training step\n")
    step_times(device, args.steps)
    if args.epoch:
        print("\n## One epoch of the full profile on synthetic full-size NYUv2\n")
        one_epoch(device)


if __name__ == "__main__":
    main()
