"""What the smoke profile's pinned kernels cost: a training stage's wall time pinned over unpinned.

    python tests/benchmarks/bench_pinning.py                      # 3 rounds of 3 runs of the plan
    python tests/benchmarks/bench_pinning.py --rounds 5 --run nyuv2-mtan-pcgrad

Runs `pipelines/train.py` for each run, alternating pinned (:mod:`deconflict.portable`, what every
smoke stage does) and unpinned (``DECONFLICT_UNPINNED=1``: this machine's fastest kernels and all
its cores), into a temporary folder, and prints the median wall time of each and their ratio. Whole
processes are timed, as DVC runs them: start-up and imports included. Needs `dvc repro` of the
synthetic data first (`data/synthetic/`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNS = ["cityscapes-single-depth", "nyuv2-split-pcgrad", "nyuv2-mtan-cagrad-c0p4"]


def timed_run(run: str, folder: Path, pinned: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k != "DECONFLICT_UNPINNED"}
    if not pinned:
        env["DECONFLICT_UNPINNED"] = "1"
    out, work = folder / f"{run}-{pinned}", folder / f"work-{run}-{pinned}-{time.monotonic_ns()}"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "train.py", "--run", run, "--out", str(out), "--work", str(work), "--no-progress"],
        cwd=REPO / "pipelines",
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="append", help=f"a run of pipelines/runs.yaml (default {', '.join(RUNS)})")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not (REPO / "data" / "synthetic").is_dir():
        raise SystemExit("no synthetic data: run `dvc repro pipelines/dvc.yaml:synthetic` first")
    print(f"{'run':45s} {'pinned (s)':>10s} {'unpinned (s)':>12s} {'ratio':>6s}")
    with tempfile.TemporaryDirectory() as tmp:
        for run in args.run or RUNS:
            times: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.rounds):
                for pinned in (True, False):
                    times[pinned].append(timed_run(run, Path(tmp), pinned))
            pinned, unpinned = statistics.median(times[True]), statistics.median(times[False])
            print(f"{run:45s} {pinned:10.2f} {unpinned:12.2f} {pinned / unpinned:6.2f}")


if __name__ == "__main__":
    main()
