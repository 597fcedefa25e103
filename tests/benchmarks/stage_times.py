"""The smoke budget: wall time of every stage of `dvc repro` from a clean state, per group, against the budget.

    python tests/benchmarks/stage_times.py                 # `dvc repro` in a fresh clone of HEAD
    python tests/benchmarks/stage_times.py --make          # `make repro` (install included), then `make test`
    python tests/benchmarks/stage_times.py --here          # this checkout as it is (only stale stages run)
    python tests/benchmarks/stage_times.py --csv times.csv

Timestamps the output of `dvc repro`: a stage's time runs from its "Running stage" line to the next
one (or the end), so it includes the stage's process start-up, imports and DVC's own bookkeeping.
Prints every stage, then the time of each group — each paper's own stages with the training runs only
its tables use, the runs several papers share with the synthetic data, the index — beside its budget
(``BUDGET_MINUTES``, also the table in README.md, which a test keeps equal), and whether the clone's
`git status` is clean after the run (the committed dvc.lock reproduced bit for bit). With ``--make``
the clone gets its own fresh `.venv` (what a new user's `make repro` does) and `make test` is timed
after it. Exits with status 1 over budget.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: the smoke pipeline's budget per group, in core-minutes (the wall times of a group's stages, summed), for all
#: five papers (the README's table; a test keeps the two equal). A paper's group: its own stages and the training
#: runs only its tables use; runs that several papers' tables share, and the synthetic data, are the shared group.
#: `make repro` trains WORKERS stages side by side, so the groups may sum to WORKERS times the wall budget of
#: `dvc repro` (they were halves of these while the stages ran one at a time).
BUDGET_MINUTES = {
    "shared: synthetic data and runs of several papers": 8.0,
    "drmgf": 8.0,
    "recon": 7.0,
    "sparse_training": 5.0,
    "task_priority": 2.0,
    "robust_mtl": 3.0,
    "index (root report)": 1.0,
}
#: stages side by side in `make repro` (the Makefile's WORKERS)
WORKERS = 2
#: all of `dvc repro` (DVC's own start-up and checks on top of the groups); install (~2.5 min) makes 20
TOTAL_MINUTES = 17.5
#: a fresh clone's `make repro` (install included) and the `make test` after it
MAKE_REPRO_MINUTES = 20.0
MAKE_TEST_MINUTES = 10.0
SHARED = next(iter(BUDGET_MINUTES))
STAGE = re.compile(r"Running stage '(?P<stage>[^']+)'")
LAUNCH, LAUNCHED = re.compile(r"^launch: training"), re.compile(r"^trained and recorded")
#: the pipeline a fresh checkout runs (the Makefile's PIPELINE, without the plan check)
PIPELINE = f"python pipelines/launch.py --workers {WORKERS} --wait && dvc repro"


def papers_of_runs(checkout: Path) -> dict[str, set[str]]:
    """Which papers' tables use each training run of the plan."""
    from deconflict.config import load_plugins, load_root_params
    from deconflict.experiments.tables import load_run_tables

    load_plugins(load_root_params(checkout))
    users: dict[str, set[str]] = {}
    for params in sorted((checkout / "papers").glob("*/params.yaml")):
        for table in load_run_tables(params):
            for run in table.runs:
                users.setdefault(run.name, set()).add(params.parent.name)
    return users


def group_of(stage: str, users: dict[str, set[str]]) -> str:
    if stage.startswith("pipelines/"):
        run = stage.split("train@", 1)[1] if "train@" in stage else None
        papers = users.get(run, set()) if run else set()
        return next(iter(papers)) if len(papers) == 1 else SHARED
    match = re.match(r"papers/([^/]+)/", stage)
    return match.group(1) if match else "index (root report)"


def timed(
    command: list[str], checkout: Path, env: dict[str, str]
) -> tuple[list[tuple[str, float]], float, float, float]:
    """Run ``command``; (stage, seconds) of every DVC stage `dvc repro` ran, the time before the launcher
    or the first stage (a `make repro`'s install), the launcher's wall time (the training runs, side by
    side) and the total wall time."""
    started = time.monotonic()
    process = subprocess.Popen(
        command, cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    marks: list[tuple[str, float]] = []
    output = []
    launched: list[float] = []
    for line in process.stdout:  # type: ignore[union-attr]
        output.append(line)
        if LAUNCH.search(line) or LAUNCHED.search(line):
            launched.append(time.monotonic())
        match = STAGE.search(line)
        if match:
            marks.append((match.group("stage"), time.monotonic()))
    if process.wait() != 0:
        sys.stdout.write("".join(output[-40:]))
        raise SystemExit(f"{' '.join(command)} failed in {checkout}")
    ended = time.monotonic()
    stages = [
        (name, (marks[i + 1][1] if i + 1 < len(marks) else ended) - start) for i, (name, start) in enumerate(marks)
    ]
    first = launched[0] if launched else marks[0][1] if marks else ended
    launch = launched[1] - launched[0] if len(launched) > 1 else 0.0
    return stages, first - started, launch, ended - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--here", action="store_true", help="time this checkout instead of a fresh clone of HEAD")
    mode.add_argument("--make", action="store_true", help="a fresh clone's `make repro` with install, then `make test`")
    parser.add_argument("--csv", type=Path, help="also write every stage's time here")
    args = parser.parse_args()
    folder = None
    if args.here:
        checkout = REPO
    else:
        folder = Path(tempfile.mkdtemp(prefix="deconflict-budget-"))
        checkout = folder / "clone"
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(checkout)], check=True)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    if not args.make:  # this environment's packages, the clone's own library (not the editable install's)
        env["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(checkout / "shared"), os.environ.get("PYTHONPATH")]))
    else:  # nothing of this environment: the clone's Makefile builds its own
        env = {k: v for k, v in env.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env["PATH"] = ":".join(p for p in env["PATH"].split(":") if not p.startswith(str(REPO)))
    try:
        command = ["make", "repro"] if args.make else ["bash", "-c", PIPELINE]
        stages, install, launch_wall, total = timed(command, checkout, env)
        sys.path.insert(0, str(checkout / "shared"))
        from deconflict.experiments.launch import stage_seconds

        stages = [*stage_seconds(checkout).items(), *stages]  # the launched runs, then what dvc repro ran
        users = papers_of_runs(checkout)
        clean = subprocess.run(["git", "status", "--porcelain"], cwd=checkout, capture_output=True, text=True).stdout
        test_minutes = timed(["make", "test"], checkout, env)[3] / 60 if args.make else None
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    for name, seconds in stages:
        print(f"{seconds:7.1f} s  {name}")
    totals: dict[str, float] = {}
    for name, seconds in stages:
        totals[group_of(name, users)] = totals.get(group_of(name, users), 0.0) + seconds
    print(f"\ntraining runs side by side (2 workers): {launch_wall / 60:.2f} min of wall time")
    print("\n| group (core-minutes: its stages' wall times, summed) | measured (min) | budget (min) |\n|---|---|---|")
    over = False
    for group, budget in BUDGET_MINUTES.items():
        measured = totals.get(group, 0.0) / 60
        over |= measured > budget
        print(f"| {group} | {measured:.2f} | {budget:.1f} |")
    repro = (total - install) / 60 if args.make else total / 60
    print(f"| all of `dvc repro` | {repro:.2f} | {TOTAL_MINUTES:.1f} |")
    over |= repro > TOTAL_MINUTES
    if args.make:
        print(f"| `make repro`, fresh clone, install included | {total / 60:.2f} | {MAKE_REPRO_MINUTES:.1f} |")
        print(f"| `make test` after it | {test_minutes:.2f} | {MAKE_TEST_MINUTES:.1f} |")
        over |= total / 60 > MAKE_REPRO_MINUTES or test_minutes > MAKE_TEST_MINUTES
    print(
        "\ngit status after the run: "
        + ("clean (the committed dvc.lock reproduced)" if not clean.strip() else f"changed:\n{clean}")
    )
    if args.csv:
        rows = "".join(f"{n},{group_of(n, users)},{s:.2f}\n" for n, s in stages)
        args.csv.write_text("stage,group,seconds\n" + rows)
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
