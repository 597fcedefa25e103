"""Train the stale runs of the plan on several GPUs or on a SLURM cluster, then let DVC record them.

``dvc repro`` trains the plan's runs one after another. For the full profile (hundreds of GPU-days)
:func:`launch` hands every *stale* training stage (``pipelines/train/*/dvc.yaml``, and Recon's scans in
``pipelines/dvc.yaml``) — DVC says which — to
`submitit <https://github.com/facebookincubator/submitit>`_:

* ``executor="slurm"``: one SLURM job per run (submitted as one job array); SLURM schedules them;
* ``executor="local"``: one worker per GPU (or ``workers`` CPU workers) on this machine, each
  training its share of the runs one after another.

A job runs exactly the stage's own command (from ``dvc.yaml``) in the stage's folder, so what it
computes is what ``dvc repro`` would. Every run resumes from its checkpoint (``pipelines/work/``):
a job killed, pre-empted or timed out (submitit requeues it) continues where it stopped, and
launching again is idempotent — a run whose job is still pending or running is not submitted twice
(the ledger ``pipelines/launches/ledger.json`` remembers the jobs). When the jobs are done,
:func:`collect` records each finished run in ``dvc.lock`` (``dvc commit``) so that ``dvc repro``
only renders the tables. On a cluster the checkout must live on a file system the nodes share.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deconflict.config import load_yaml
from deconflict.errors import ConfigError
from deconflict.io import write_json

__all__ = [
    "LAUNCHES",
    "StageRunner",
    "TrainStage",
    "collect",
    "job_status",
    "launch",
    "read_ledger",
    "run_here",
    "stage_seconds",
    "train_stages",
    "triage",
]

#: submitit's job folders and the ledger, under the repository
LAUNCHES = Path("pipelines") / "launches"
PLAN_FILE = "pipelines/dvc.yaml"
#: the generated stage files of the runs, one per dataset and model (pipelines/plan_runs.py)
TRAIN_FILES = "pipelines/train/*/dvc.yaml"
_ACTIVE_SLURM_STATES = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED"}


@dataclass(frozen=True)
class TrainStage:
    """One ``train@<run>`` (or Recon's ``scan@<scan>``) stage of the plan: its DVC address, command,
    folder, whether it is stale, and the scan it needs first (``scan:<name>``; None for most runs).
    A scan's ``run`` is ``scan:<name>``."""

    run: str
    address: str
    cmd: str
    wdir: str
    stale: bool
    needs: str | None = None


def train_stages(repo: Path) -> list[TrainStage]:
    """Every scan stage of ``pipelines/dvc.yaml`` and training stage of ``pipelines/train/*/dvc.yaml``
    (or, in a plan of one file, of ``pipelines/dvc.yaml``) with DVC's verdict on whether it is up to
    date (scans first: Recon's runs read them)."""
    from dvc.repo import Repo

    plan_file = repo / "pipelines" / "runs.yaml"
    plan = (load_yaml(plan_file).get("runs") or {}) if plan_file.is_file() else {}
    files = [PLAN_FILE, *sorted(str(path.relative_to(repo)) for path in repo.glob(TRAIN_FILES))]
    with contextlib.chdir(repo), Repo(str(repo)) as dvc_repo:  # DVC resolves stage paths against the cwd
        stages = [
            s
            for prefix in ("scan", "train")
            for s in dvc_repo.index.stages
            if any(s.addressing.startswith(f"{file}:{prefix}@") for file in files)
        ]
        status = dvc_repo.status(targets=files)
        out = []
        for s in stages:
            name = s.addressing.split("@", 1)[1]
            is_scan = s.addressing.startswith(f"{PLAN_FILE}:scan@")
            scan = None if is_scan else (plan.get(name) or {}).get("scan")
            out.append(
                TrainStage(
                    run=f"scan:{name}" if is_scan else name,
                    address=s.addressing,
                    cmd=str(s.cmd),
                    wdir=str(s.wdir),
                    stale=s.addressing in status,
                    needs=f"scan:{scan}" if scan and scan != "none" else None,
                )
            )
        return out


#: a training stage's command as plan_runs.py writes it (``pipelines/train_stage.yaml``)
_TRAIN_COMMAND = "python train.py "


@dataclass
class StageRunner:
    """What a job runs: the commands of some training stages, in order, each in its own folder. A run
    that fails does not stop the others; the job reports what finished. Requeued after a timeout or
    a pre-emption, it starts again and every run resumes from its checkpoint.

    Consecutive ``python train.py …`` stages of one folder run in one process
    (``pipelines/train_batch.py``: the same ``train.main`` per run, the same bits) instead of one
    process each, which saves the interpreter's and PyTorch's start-up per run."""

    stages: list[TrainStage]
    environment: dict[str, str] = field(default_factory=dict)

    def __call__(self) -> dict[str, Any]:
        finished, failed, seconds = [], {}, {}
        env = {**os.environ, **self.environment}
        for group in self._groups():
            outcomes = _run_batch(group, env) if len(group) > 1 else [_run_alone(group[0], env)]
            for stage, status, elapsed, error in outcomes:
                seconds[stage.address] = elapsed
                if status == 0:
                    finished.append(stage.run)
                else:
                    failed[stage.run] = error or [f"exit status {status}"]
        return {"finished": finished, "failed": failed, "seconds": seconds}

    def _groups(self) -> list[list[TrainStage]]:
        """The stages in order, consecutive batchable training stages of one folder together."""
        groups: list[list[TrainStage]] = []
        for stage in self.stages:
            last = groups[-1][-1] if groups else None
            if last is not None and _batchable(last) and _batchable(stage) and last.wdir == stage.wdir:
                groups[-1].append(stage)
            else:
                groups.append([stage])
        return groups

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit calls this before requeueing a timed-out or pre-empted job: run the same again
        (every run resumes from its own checkpoint)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


#: what one stage's run gave: the stage, its exit status, its seconds, the last line of its error
_Outcome = tuple[TrainStage, int, float, list[str]]


def _batchable(stage: TrainStage) -> bool:
    """A ``python train.py …`` stage in a folder that has the batch runner (``pipelines/``)."""
    return stage.cmd.startswith(_TRAIN_COMMAND) and (Path(stage.wdir) / "train_batch.py").is_file()


def _run_alone(stage: TrainStage, env: dict[str, str]) -> _Outcome:
    """The stage's own command, in its own process (what ``dvc repro`` runs)."""
    import time

    started = time.perf_counter()
    result = subprocess.run(stage.cmd, shell=True, cwd=stage.wdir, env=env, capture_output=True, text=True)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return stage, result.returncode, time.perf_counter() - started, result.stderr.strip().splitlines()[-1:]


def _run_batch(group: list[TrainStage], env: dict[str, str]) -> list[_Outcome]:
    """Training stages of one folder through ``train_batch.py``, one process for all of them."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        arguments = [stage.cmd[len(_TRAIN_COMMAND) :] for stage in group]
        python = shutil.which("python", path=env.get("PATH")) or sys.executable  # the stages' own `python`
        command = [python, "train_batch.py", "--report", str(report), "--", *arguments]
        result = subprocess.run(command, cwd=group[0].wdir, env=env, capture_output=True, text=True)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        done = json.loads(report.read_text()) if report.is_file() else []
    outcomes = [(stage, int(entry["status"]), float(entry["seconds"]), []) for stage, entry in zip(group, done)]
    if len(done) < len(group):  # the process died before these
        crash = result.stderr.strip().splitlines()[-1:] or [f"train_batch.py exit status {result.returncode}"]
        outcomes += [(stage, 1, 0.0, crash) for stage in group[len(done) :]]
    return outcomes


def _ledger_path(repo: Path) -> Path:
    return repo / LAUNCHES / "ledger.json"


def read_ledger(repo: Path) -> dict[str, dict[str, Any]]:
    path = _ledger_path(repo)
    return json.loads(path.read_text()) if path.is_file() else {}


def job_status(entry: dict[str, Any]) -> str:
    """``done``, ``failed`` or ``active`` for a ledger entry (from submitit's result file, the
    scheduler's state, or the local worker's process)."""
    from submitit.core.utils import JobPaths, pickle_load

    paths = JobPaths(entry["folder"], job_id=entry["job_id"], task_id=0)
    if paths.result_pickle.exists():
        outcome, result = pickle_load(paths.result_pickle)
        return "done" if outcome == "success" and entry["run"] in result.get("finished", []) else "failed"
    if entry["executor"] == "slurm":
        import submitit

        state = submitit.SlurmJob(folder=entry["folder"], job_id=entry["job_id"]).state
        return "active" if state.split()[0] in _ACTIVE_SLURM_STATES or state == "UNKNOWN" else "failed"
    try:
        os.kill(int(entry["pid"]), 0)
    except (OSError, ValueError):
        return "failed"
    return "active"


def _executor(repo: Path, executor: str, options: dict[str, Any]) -> Any:
    import submitit

    folder = repo / LAUNCHES / "%j"
    if executor == "slurm":
        slurm = submitit.AutoExecutor(folder=folder, cluster="slurm")
        slurm.update_parameters(**options)
        return slurm
    if executor == "local":
        local = submitit.LocalExecutor(folder=folder)
        local.update_parameters(timeout_min=options.get("timeout_min", 60 * 24 * 7))
        return local
    raise ConfigError(f"executor must be 'local' or 'slurm', got {executor!r}.")


def triage(
    stages: Sequence[TrainStage], stale: set[str], active: set[str]
) -> tuple[dict[str, list[str]], list[TrainStage]]:
    """What a launch does with each stage: ``up_to_date``, ``in_flight`` (a job is on it: in ``active``),
    ``waiting_for_scan`` (a Recon run whose scan is still stale: it runs after the scan is collected),
    or submit it now (the second value). ``stale``: every stale stage's run, scans included."""
    report: dict[str, list[str]] = {"submitted": [], "in_flight": [], "up_to_date": [], "waiting_for_scan": []}
    todo = []
    for stage in stages:
        if not stage.stale:
            report["up_to_date"].append(stage.run)
        elif stage.run in active:
            report["in_flight"].append(stage.run)
        elif stage.needs in stale:
            report["waiting_for_scan"].append(stage.run)
        else:
            todo.append(stage)
    return report, todo


def launch(
    repo: str | Path,
    *,
    executor: str = "local",
    runs: Sequence[str] | None = None,
    gpus: Sequence[int] = (),
    workers: int = 1,
    slurm: dict[str, Any] | None = None,
) -> dict[str, list[str]]:
    """Submit every stale training run (of ``runs``, if given) that no job is working on.

    Returns what happened to each run: ``submitted``, ``in_flight`` (a job of an earlier launch is
    still on it), ``up_to_date``, ``waiting_for_scan`` (a Recon run whose pre-run scan is stale: it is
    submitted with it, and the run by the next launch after ``collect``). Scans count as runs
    ``scan:<name>``. ``gpus`` (local): one worker per GPU id; ``workers``: how many CPU
    workers without GPUs. ``slurm``: submitit's options (``slurm_partition``, ``timeout_min``,
    ``gpus_per_node``, ``cpus_per_task``, ``mem_gb``, ``slurm_additional_parameters``, …).
    """
    repo = Path(repo).resolve()
    subprocess.run(["dvc", "repro", f"{PLAN_FILE}:synthetic"], cwd=repo, check=True, capture_output=True)
    stages = train_stages_all = train_stages(repo)
    if runs is not None:
        unknown = sorted(set(runs) - {s.run for s in stages})
        if unknown:
            raise ConfigError(
                f"no training stage for run(s) {unknown} in {TRAIN_FILES}; run "
                "`python pipelines/plan_runs.py --write` if a paper's tables added them."
            )
        stages = [s for s in stages if s.run in set(runs)]
    ledger = read_ledger(repo)
    active = {run for run, entry in ledger.items() if job_status(entry) == "active"}
    report, todo = triage(stages, {stage.run for stage in train_stages_all if stage.stale}, active)
    if not todo:
        return report
    environment = {"PATH": os.environ.get("PATH", ""), "DVC_NO_ANALYTICS": "1"}
    if executor == "slurm":
        submitter = _executor(repo, "slurm", {"timeout_min": 60 * 24, "gpus_per_node": 1, **(slurm or {})})
        with submitter.batch():  # one job array
            jobs = [submitter.submit(StageRunner([stage], environment)) for stage in todo]
        for stage, job in zip(todo, jobs):
            ledger[stage.run] = {
                "run": stage.run,
                "executor": "slurm",
                "job_id": job.job_id,
                "folder": str(job.paths.folder),
            }
    else:
        slots = [{"CUDA_VISIBLE_DEVICES": str(gpu)} for gpu in gpus] or [{} for _ in range(max(1, workers))]
        submitter = _executor(repo, "local", slurm or {})
        for index, slot in enumerate(slots):
            share = todo[index :: len(slots)]
            if not share:
                continue
            job = submitter.submit(StageRunner(share, {**environment, **slot}))
            for stage in share:
                ledger[stage.run] = {
                    "run": stage.run,
                    "executor": "local",
                    "job_id": job.job_id,
                    "folder": str(job.paths.folder),
                    "pid": job.job_id,
                }
    report["submitted"] = [stage.run for stage in todo]
    write_json(_ledger_path(repo), ledger)
    return report


def collect(repo: str | Path) -> dict[str, list[str]]:
    """Record in ``dvc.lock`` every run a job has finished and DVC still finds stale (``dvc commit``),
    so that ``dvc repro`` then only renders. Returns ``recorded``, ``active`` and ``failed`` runs."""
    repo = Path(repo).resolve()
    ledger = read_ledger(repo)
    stale = {stage.run: stage for stage in train_stages(repo) if stage.stale}
    report: dict[str, list[str]] = {"recorded": [], "active": [], "failed": []}
    for run, entry in sorted(ledger.items()):
        if run not in stale:
            continue
        status = job_status(entry)
        report["recorded" if status == "done" else status].append(run)
    if report["recorded"]:  # one DVC process for all of them (each start of DVC costs seconds)
        addresses = [stale[run].address for run in report["recorded"]]
        subprocess.run(["dvc", "commit", "--force", *addresses], cwd=repo, check=True, capture_output=True)
    return report


def stage_seconds(repo: str | Path) -> dict[str, float]:
    """Every finished job's wall time per stage (its DVC address → seconds), from submitit's results."""
    from submitit.core.utils import JobPaths, pickle_load

    seconds: dict[str, float] = {}
    for entry in read_ledger(Path(repo).resolve()).values():
        paths = JobPaths(entry["folder"], job_id=entry["job_id"], task_id=0)
        if paths.result_pickle.exists():
            outcome, result = pickle_load(paths.result_pickle)
            if outcome == "success":
                seconds.update(result.get("seconds", {}))
    return seconds


def wait_for(repo: str | Path, runs: Sequence[str], poll: float = 1.0) -> None:
    """Block until no job of the ledger is active on any of ``runs``."""
    import time

    repo = Path(repo).resolve()
    pending = set(runs)
    while pending:
        ledger = read_ledger(repo)
        pending = {run for run in pending if run in ledger and job_status(ledger[run]) == "active"}
        if pending:
            time.sleep(poll)


def run_here(repo: str | Path, workers: int, runs: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Train every stale run here with ``workers`` local CPU workers side by side, wait for them and record
    them (:func:`collect`), in rounds until nothing more can start (Recon's runs start once their scans are
    recorded). What ``make repro`` does before ``dvc repro``, which then only renders: the smoke profile's
    stages each run on one thread, so two workers use two cores. Returns every round's ``recorded`` and
    ``failed`` runs (a failed run is left to ``dvc repro``, which runs it again and shows its error)."""
    totals: dict[str, list[str]] = {"recorded": [], "failed": []}
    while True:
        report = launch(repo, executor="local", runs=runs, workers=workers)
        if not report["submitted"]:
            break
        wait_for(repo, report["submitted"])
        collected = collect(repo)
        totals["recorded"] += collected["recorded"]
        totals["failed"] += collected["failed"]
        if not collected["recorded"] or not report["waiting_for_scan"]:
            break
    return totals
