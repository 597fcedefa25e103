"""Scale-out through existing engines: the plan's stale runs go to submitit (this machine's workers, or a
real single-node SLURM started here), resume from checkpoints, are never submitted twice while a job is on
them, and come back into dvc.lock so that `dvc repro` has nothing left to train."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from deconflict.experiments.launch import collect, launch, train_stages
from tests.toy_repo import write_user_repo

REPO = Path(__file__).resolve().parents[1]
BIN = str(Path(os.path.abspath(sys.executable)).parent)
RUNS = {
    "toyreg-toymlp-equal": {"family": "toy", "dataset": "toyreg", "model": "toy_mlp"},
    "toyreg-toymlp-toymean": {"family": "toy", "dataset": "toyreg", "model": "toy_mlp", "method": "toy_mean"},
    "toyreg-toymlp-pcgrad": {"family": "toy", "dataset": "toyreg", "model": "toy_mlp", "method": "pcgrad"},
}
PLAN = f"""vars:
  - runs.yaml
stages:
  synthetic:
    cmd: python {REPO}/pipelines/synthetic_data.py --params params.yaml --out ../data/synthetic
    params: [synthetic]
    outs: [../data/synthetic]
  train:
    foreach: ${{runs}}
    do:
      cmd: >-
        python {REPO}/pipelines/train.py --run ${{key}} --runs runs.yaml --params params.yaml
        --out runs/${{key}} --work work/${{key}} --no-progress
      deps:
        - ../data/synthetic/${{item.dataset}}
      params:
        - training.${{item.family}}
        - runs.yaml:
            - runs.${{key}}
      outs:
        - runs/${{key}}/summary.json
        - runs/${{key}}/metrics.csv
"""


@pytest.fixture
def dvc_repo(tmp_path, monkeypatch) -> Path:
    """A git + DVC checkout with the user's toy family and a plan of three runs (seconds each)."""
    root = write_user_repo(tmp_path / "repo")
    shutil.rmtree(root / ".dvc")
    (root / "pipelines" / "runs.yaml").write_text(yaml.safe_dump({"runs": RUNS}))
    (root / "pipelines" / "dvc.yaml").write_text(PLAN)
    monkeypatch.setenv("PATH", f"{BIN}:{os.environ['PATH']}")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    for command in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "plan"],
    ):
        subprocess.run(command, cwd=root, check=True, capture_output=True)
    return root


def wait_for_jobs(repo: Path, timeout: float = 300) -> dict[str, list[str]]:
    """Collect until no job is active; what was recorded along the way, and what failed."""
    deadline, recorded = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        report = collect(repo)
        recorded += report["recorded"]
        if not report["active"]:
            return {**report, "recorded": sorted(recorded)}
        time.sleep(2)
    raise AssertionError(f"jobs still running after {timeout} s: {report}")


def test_local_workers_train_the_stale_runs_once_and_dvc_records_them(dvc_repo):
    assert all(stage.stale for stage in train_stages(dvc_repo))
    first = launch(dvc_repo, executor="local", workers=2)
    assert sorted(first["submitted"]) == sorted(RUNS)
    again = launch(dvc_repo, executor="local", workers=2)  # idempotent while the jobs run
    assert again["submitted"] == [] and sorted(again["in_flight"]) == sorted(RUNS)
    report = wait_for_jobs(dvc_repo)
    assert sorted(report["recorded"]) == sorted(RUNS) and report["failed"] == []
    assert not any(stage.stale for stage in train_stages(dvc_repo))  # dvc.lock has every run
    status = subprocess.run(["dvc", "status", "pipelines/dvc.yaml"], cwd=dvc_repo, capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout
    assert launch(dvc_repo, executor="local")["submitted"] == []  # nothing left to train


def test_a_killed_job_is_resubmitted_and_resumes_from_its_checkpoint(dvc_repo):
    run = "toyreg-toymlp-toymean"
    # an earlier job died after the first epochs: its checkpoint is there, the ledger says failed
    params = dvc_repo / "pipelines" / "params.yaml"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "pipelines" / "synthetic_data.py"),
            "--params",
            str(params),
            "--out",
            str(dvc_repo / "data" / "synthetic"),
        ],
        cwd=dvc_repo,
        check=True,
        capture_output=True,
    )
    short = yaml.safe_load(params.read_text())
    short["training"]["toy"]["smoke"]["epochs"] = 1
    short_params = dvc_repo / "short.yaml"
    short_params.write_text(yaml.safe_dump(short))
    work = dvc_repo / "pipelines" / "work" / run
    subprocess.run(
        [
            sys.executable,
            str(REPO / "pipelines" / "train.py"),
            "--run",
            run,
            "--runs",
            str(dvc_repo / "pipelines" / "runs.yaml"),
            "--params",
            str(short_params),
            "--out",
            str(dvc_repo / "scratch"),
            "--work",
            str(work),
            "--no-progress",
        ],
        cwd=dvc_repo / "pipelines",
        check=True,
        capture_output=True,
    )
    report = launch(dvc_repo, executor="local", runs=[run])
    assert report["submitted"] == [run]
    assert wait_for_jobs(dvc_repo)["recorded"] == [run]
    assert len(list(work.iterdir())) == 1  # the same work folder: a new key would have pruned the old one


def start_slurm(folder: Path) -> dict[str, str]:
    """A real single-node SLURM (Debian's slurm-wlm and munge) for this machine; skips with the reason
    when it cannot start."""
    needed = ["slurmctld", "slurmd", "munged", "sbatch", "squeue"]
    missing = [tool for tool in needed if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        pytest.skip(
            f"SLURM is not installed here (missing {', '.join(missing)}): `apt-get install slurm-wlm munge` "
            "(as root; .ci/run does) to run this test"
        )
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld, slurmd and munged needs root")
    host = socket.gethostname().split(".")[0]
    for sub in ("state", "spool", "log"):
        (folder / sub).mkdir(parents=True)
    config = folder / "slurm.conf"
    config.write_text(
        "\n".join(
            [
                "ClusterName=deconflict",
                f"SlurmctldHost={host}",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "ReturnToService=2",
                "SlurmUser=root",
                "SlurmdUser=root",
                f"SlurmctldPidFile={folder}/slurmctld.pid",
                f"SlurmdPidFile={folder}/slurmd.pid",
                f"SlurmdSpoolDir={folder}/spool",
                f"StateSaveLocation={folder}/state",
                f"SlurmctldLogFile={folder}/log/slurmctld.log",
                f"SlurmdLogFile={folder}/log/slurmd.log",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "MpiDefault=none",
                f"NodeName={host} CPUs={os.cpu_count()} RealMemory=2000 State=UNKNOWN",
                f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )
    env = {**os.environ, "SLURM_CONF": str(config)}
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
        for path in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
            Path(path).mkdir(parents=True, exist_ok=True)
            shutil.chown(path, "munge", "munge")
        started = subprocess.run(["runuser", "-u", "munge", "--", "munged", "--force"], capture_output=True, text=True)
        if started.returncode != 0:
            pytest.skip(f"munged cannot start: {started.stderr.strip()}")
    for daemon in ("slurmctld", "slurmd"):
        started = subprocess.run([daemon, "-f", str(config)], env=env, capture_output=True, text=True)
        if started.returncode != 0:
            pytest.skip(f"{daemon} cannot start: {started.stderr.strip()}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
        if info.stdout.strip() in ("idle", "mix", "alloc"):
            return env
        time.sleep(1)
    pytest.skip(f"the SLURM node did not come up: sinfo says {info.stdout.strip()!r} ({info.stderr.strip()})")


@pytest.fixture
def slurm(tmp_path):
    env = start_slurm(tmp_path / "slurm")
    yield env
    for daemon in ("slurmd", "slurmctld"):
        subprocess.run(["pkill", "-x", daemon], capture_output=True)


def test_a_real_slurm_runs_the_plan_as_a_job_array(dvc_repo, slurm, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm["SLURM_CONF"])
    report = launch(
        dvc_repo, executor="slurm", slurm={"gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 10}
    )
    assert sorted(report["submitted"]) == sorted(RUNS)
    assert launch(dvc_repo, executor="slurm")["in_flight"] or collect(dvc_repo)["recorded"]
    final = wait_for_jobs(dvc_repo, timeout=600)
    assert final["failed"] == [], final
    assert not any(stage.stale for stage in train_stages(dvc_repo))


def test_a_recon_run_waits_for_its_scan_and_the_scan_is_submitted_first():
    from deconflict.experiments.launch import TrainStage, triage

    def stage(run, stale=True, needs=None):
        return TrainStage(
            run=run, address=f"pipelines/dvc.yaml:x@{run}", cmd="true", wdir=".", stale=stale, needs=needs
        )

    stages = [
        stage("scan:nyuv2-split-equal"),
        stage("nyuv2-split-pcgrad-recon", needs="scan:nyuv2-split-equal"),
        stage("nyuv2-split-mgda-recon", stale=False, needs="scan:nyuv2-split-equal"),
        stage("nyuv2-split-pcgrad"),
        stage("nyuv2-split-equal"),
    ]
    stale = {s.run for s in stages if s.stale}
    report, todo = triage(stages, stale, active={"nyuv2-split-equal"})
    assert [s.run for s in todo] == ["scan:nyuv2-split-equal", "nyuv2-split-pcgrad"]
    assert report["waiting_for_scan"] == ["nyuv2-split-pcgrad-recon"]
    assert report["up_to_date"] == ["nyuv2-split-mgda-recon"] and report["in_flight"] == ["nyuv2-split-equal"]
    # once the scan is collected (no longer stale), the Recon run is submitted
    report, todo = triage(stages[1:], stale - {"scan:nyuv2-split-equal"}, active=set())
    assert "nyuv2-split-pcgrad-recon" in [s.run for s in todo] and not report["waiting_for_scan"]


def test_a_worker_trains_its_runs_in_one_process_with_the_bits_of_one_process_each(tmp_path):
    """make repro's local workers run consecutive training stages through pipelines/train_batch.py (one
    interpreter for all): the second run of a batch, trained after another in the same process, writes the
    same bytes as when it is trained alone, as `dvc repro` runs it."""
    from deconflict.experiments.launch import StageRunner, TrainStage

    if not (REPO / "data" / "synthetic" / "nyuv2").is_dir():
        pytest.skip("needs the smoke data: run `make repro` (or dvc repro pipelines/dvc.yaml:synthetic) first")
    runs = ["nyuv2-split-pcgrad", "cityscapes-single-depth"]

    def stage(run: str, where: Path) -> TrainStage:
        cmd = f"python train.py --run {run} --out {where / run} --work {where / 'work' / run} --no-progress"
        return TrainStage(run=run, address=f"train@{run}", cmd=cmd, wdir=str(REPO / "pipelines"), stale=True)

    env = {"PATH": f"{BIN}:{os.environ['PATH']}"}
    runner = StageRunner([stage(run, tmp_path / "batch") for run in runs], env)
    assert [len(group) for group in runner._groups()] == [2]  # one process for both
    batch = runner()
    assert batch["finished"] == runs and batch["failed"] == {}
    alone = StageRunner([stage(runs[1], tmp_path / "alone")], env)()
    assert alone["finished"] == runs[1:]
    for name in ("summary.json", "metrics.csv", "conflict_pairs.csv", "conflict_summary.csv", "curves.csv"):
        batched, single = tmp_path / "batch" / runs[1] / name, tmp_path / "alone" / runs[1] / name
        if single.exists() or batched.exists():
            assert batched.read_bytes() == single.read_bytes(), name
    assert (tmp_path / "batch" / runs[0] / "summary.json").is_file()


def test_a_failing_run_of_a_batch_does_not_stop_the_others(tmp_path):
    from deconflict.experiments.launch import StageRunner, TrainStage

    if not (REPO / "data" / "synthetic" / "nyuv2").is_dir():
        pytest.skip("needs the smoke data: run `make repro` (or dvc repro pipelines/dvc.yaml:synthetic) first")
    good = "cityscapes-single-depth"
    stages = [
        TrainStage(
            run="nonsense",
            address="train@nonsense",
            cmd="python train.py --run no-such-run --no-progress",
            wdir=str(REPO / "pipelines"),
            stale=True,
        ),
        TrainStage(
            run=good,
            address=f"train@{good}",
            cmd=f"python train.py --run {good} --out {tmp_path / good} --work {tmp_path / 'w'} --no-progress",
            wdir=str(REPO / "pipelines"),
            stale=True,
        ),
    ]
    report = StageRunner(stages, {"PATH": f"{BIN}:{os.environ['PATH']}"})()
    assert report["finished"] == [good] and list(report["failed"]) == ["nonsense"]
    assert set(report["seconds"]) == {"train@nonsense", f"train@{good}"}
