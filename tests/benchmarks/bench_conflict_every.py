"""What recording gradient conflict in a run costs: train_seed's wall time with and without it.

    python tests/benchmarks/bench_conflict_every.py                  # smoke settings, 3 rounds
    python tests/benchmarks/bench_conflict_every.py --every 1 --rounds 5

Trains the same seed of a split-SegNet and a SegNet-MTAN run (the smoke profile's settings and data,
``dvc repro`` of the synthetic data first) without the monitor, with it at parameter level, and with
it at both levels, interleaved, and prints the median time of each and its ratio to the run without.
"""

from __future__ import annotations

from deconflict.portable import pin_process

if __name__ == "__main__":
    pin_process()

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

from deconflict.experiments import RunSpec, family_settings, train_seed
from deconflict.portable import apply_torch_settings

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--every", type=int, help="conflict_every (default: the smoke profile's)")
    args = parser.parse_args()
    apply_torch_settings()
    settings = family_settings(REPO / "pipelines" / "params.yaml", "dense", "smoke")
    every = args.every or settings.conflict_every
    variants = {
        "no monitor": {"conflict_every": None},
        "parameter level": {"conflict_every": every, "conflict_levels": ("parameter",)},
        "both levels": {"conflict_every": every, "conflict_levels": ("parameter", "feature")},
    }
    print(f"conflict_every={every}, {settings.epochs} epochs; median of {args.rounds} rounds")
    for run in (RunSpec("nyuv2", "split", method="pcgrad"), RunSpec("nyuv2", "mtan", method="pcgrad")):
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, change in variants.items():
                started = time.perf_counter()
                train_seed(
                    run,
                    dataclasses.replace(settings, **change),
                    0,
                    data_base=REPO / "data" / "synthetic",
                    work_dir=None,
                    progress=False,
                )
                times[name].append(time.perf_counter() - started)
        base = statistics.median(times["no monitor"])
        for name, values in times.items():
            median = statistics.median(values)
            print(f"{run.name:24s} {name:16s} {median:6.2f} s  ×{median / base:.2f}")


if __name__ == "__main__":
    main()
