"""Benchmark (not a test): the cost of the gradient monitor per training step, side by side.

    python tests/benchmarks/bench_monitors.py [--rounds 15]

On a small 3-task CNN (synthetic 3×32×32 images, batch 16) it times training steps without a
monitor and with ``GradientMonitor`` measuring every step and every 10 steps, at parameter level
(whole shared part and per layer) and at feature level, interleaved, and prints the median step
time of each as a ratio to the unmonitored step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from deconflict.models import MultiTaskModel
from deconflict.train import GradientMonitor, TrainConfig, Trainer


class SmallCNN(MultiTaskModel):
    task_names = ("t0", "t1", "t2")

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.heads = nn.ModuleList(nn.Linear(64, 1) for _ in self.task_names)

    def encode(self, x):
        return self.trunk(x)

    def decode(self, z):
        return {name: head(z).squeeze(-1) for name, head in zip(self.task_names, self.heads)}

    def shared_parameters(self):
        return list(self.trunk.parameters())

    def task_parameters(self):
        return [list(h.parameters()) for h in self.heads]


def criterion(outputs, targets):
    return [((o - targets[:, i]) ** 2).mean() for i, o in enumerate(outputs.values())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    torch.manual_seed(0)
    batch = (torch.randn(16, 3, 32, 32), torch.randn(16, 3))
    variants = {
        "no monitor": [],
        "parameter level, every step": [GradientMonitor(every=1)],
        "parameter level, every 10 steps": [GradientMonitor(every=10)],
        "feature level, every step": [GradientMonitor(every=1, levels=("feature",))],
        "feature level, every 10 steps": [GradientMonitor(every=10, levels=("feature",))],
    }
    trainers = {}
    for name, callbacks in variants.items():
        torch.manual_seed(0)
        model = SmallCNN()
        trainers[name] = Trainer(
            model,
            criterion,
            torch.optim.SGD(model.parameters(), lr=0.01),
            config=TrainConfig(progress=False, log_every=0),
            callbacks=callbacks,
        )
    times = {name: [] for name in trainers}
    for trainer in trainers.values():  # warm-up
        for _ in range(3):
            trainer.train_step(batch)
    for _ in range(args.rounds):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            for _ in range(10):  # 10 steps, so that "every 10 steps" is measured on its average
                trainer.train_step(batch)
            times[name].append((time.perf_counter() - start) / 10)
    base = statistics.median(times["no monitor"])
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; median of {args.rounds} rounds of 10 steps"
    )
    print("| monitor | step (ms) | over an unmonitored step |\n|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {1e3 * median:.2f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
