"""Train the plan's stale runs in parallel — on this machine's GPUs or on a SLURM cluster — then record them.

    python pipelines/launch.py --gpus 0,1,2,3                  # one worker per GPU on this machine
    python pipelines/launch.py --slurm --partition gpu --timeout-min 2880 --paper drmgf
    python pipelines/launch.py --status                        # what the jobs of earlier launches are doing
    python pipelines/launch.py --collect && dvc repro          # record finished runs; dvc repro then only renders
    python pipelines/launch.py --workers 2 --wait && dvc repro  # CPU workers side by side, recorded (make repro)

Every training stage of pipelines/dvc.yaml that DVC finds stale (of the given papers, or all) goes to
submitit, which runs the stage's own command; runs resume from their checkpoints, so a requeued or
relaunched job continues where it stopped, and launching again never submits a run twice while a job
is on it (:mod:`deconflict.experiments.launch`). On a cluster, the checkout must be on a file system
the nodes share. Use the full profile for real work (`dvc exp run -S profile=full` edits params.yaml
the same way `profile: full` does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deconflict.cli import entrypoint
from deconflict.config import load_plugins, load_root_params
from deconflict.errors import ConfigError
from deconflict.experiments.launch import collect, job_status, launch, run_here
from deconflict.experiments.tables import load_run_tables

REPO = Path(__file__).resolve().parents[1]


def runs_of(papers: list[str]) -> list[str]:
    runs = []
    for paper in papers:
        params = REPO / "papers" / paper / "params.yaml"
        if not params.is_file():
            known = sorted(p.parent.name for p in (REPO / "papers").glob("*/params.yaml"))
            raise ConfigError(f"no paper {paper!r}; the papers are {', '.join(known)}.")
        runs += [run.name for table in load_run_tables(params) for run in table.runs]
    return sorted(set(runs))


@entrypoint
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout (default: this one)")
    parser.add_argument(
        "--paper", action="append", default=[], help="only the runs of this paper's tables (repeatable)"
    )
    parser.add_argument("--run", action="append", default=[], help="only this run (repeatable)")
    parser.add_argument("--gpus", help="local: one worker per GPU id, e.g. 0,1,2,3")
    parser.add_argument("--workers", type=int, default=1, help="local without GPUs: number of CPU workers")
    parser.add_argument("--slurm", action="store_true", help="submit to SLURM (one job per run, a job array)")
    parser.add_argument("--partition", help="SLURM partition")
    parser.add_argument("--timeout-min", type=int, default=60 * 24, help="SLURM time limit per job (minutes)")
    parser.add_argument("--gpus-per-job", type=int, default=1, help="SLURM GPUs per job (0 for CPU jobs)")
    parser.add_argument("--cpus-per-job", type=int, default=4)
    parser.add_argument("--mem-gb", type=int, default=32)
    parser.add_argument("--status", action="store_true", help="show the jobs of earlier launches")
    parser.add_argument("--collect", action="store_true", help="record the finished runs in dvc.lock")
    parser.add_argument(
        "--wait", action="store_true", help="local: wait for the workers, record their runs, launch what then can start"
    )
    args = parser.parse_args(argv)
    load_plugins(load_root_params(args.repo))
    if args.status:
        from deconflict.experiments.launch import read_ledger

        for run, entry in sorted(read_ledger(args.repo).items()):
            print(f"{job_status(entry):7s} {entry['executor']:5s} job {entry['job_id']:>10s}  {run}")
        return
    if args.collect:
        report = collect(args.repo)
        for key, runs in report.items():
            print(f"{key}: {len(runs)}" + (f" ({', '.join(runs)})" if runs else ""))
        if report["recorded"]:
            print("now `dvc repro` renders the tables (the recorded runs are up to date).")
        return
    selected = sorted(set(args.run) | set(runs_of(args.paper))) if (args.run or args.paper) else None
    if args.wait:
        if args.slurm or args.gpus:
            raise ConfigError(
                "--wait trains here with CPU workers (--workers N); for GPUs or SLURM use --collect later."
            )
        print(f"launch: training the plan's stale runs with {args.workers} local worker(s)", flush=True)
        totals = run_here(args.repo, args.workers, selected)
        print(f"trained and recorded {len(totals['recorded'])} run(s) with {args.workers} worker(s)")
        if totals["failed"]:
            print(f"failed (dvc repro runs them again and shows why): {', '.join(totals['failed'])}")
        return
    slurm = {
        "timeout_min": args.timeout_min,
        "gpus_per_node": args.gpus_per_job,
        "cpus_per_task": args.cpus_per_job,
        "mem_gb": args.mem_gb,
        **({"slurm_partition": args.partition} if args.partition else {}),
    }
    report = launch(
        args.repo,
        executor="slurm" if args.slurm else "local",
        runs=selected,
        gpus=[int(g) for g in args.gpus.split(",")] if args.gpus else (),
        workers=args.workers,
        slurm=slurm if args.slurm else None,
    )
    for key, runs in report.items():
        print(f"{key}: {len(runs)}" + (f" ({', '.join(runs)})" if runs and key != "up_to_date" else ""))
    if report["submitted"] or report["in_flight"]:
        print("when the jobs are done: `python pipelines/launch.py --collect && dvc repro`.")
    if report["waiting_for_scan"]:
        print("Recon runs wait for their scans: after `--collect`, launch again to submit them.")


if __name__ == "__main__":
    sys.exit(main())
