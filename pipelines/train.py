"""Stage entry point: train one run (every seed of the profile) into a run folder.

    python pipelines/train.py --run nyuv2-mtan-cagrad-c0p4          # a run of pipelines/runs.yaml
    python pipelines/train.py --dataset nyuv2 --model mtan --method cagrad --hparam c=0.4 \\
        --out my_runs/cagrad                                           # any run, defined on the command line

The run folder (``--out``, default ``pipelines/runs/<name>``) receives, atomically:
``summary.json`` (what defines the run, the profile, the model's size, the mean of the last
``last_k`` epochs per seed and over seeds), ``metrics.csv`` (every epoch: train and test metrics
of every task at every reduction, every seed) and ``curves.csv`` (per-epoch curves for
``dvc plots show``). Checkpoints and dvclive logs go to the work folder (``--work``, default
``pipelines/work/<name>``): a killed run started again resumes from its last checkpoint and ends
with the same numbers as an uninterrupted one; a change of settings or code starts afresh.
The training itself is :func:`deconflict.experiments.train_run`.
"""

from __future__ import annotations

from deconflict.portable import pin_process

if __name__ == "__main__":
    pin_process()  # the smoke profile's portable numerics, before NumPy and PyTorch are imported

import argparse
from pathlib import Path
from typing import Any

import yaml

from deconflict.cli import entrypoint
from deconflict.config import load_plugins, load_root_params, resolve_device
from deconflict.errors import ConfigError
from deconflict.experiments import RunSpec, family_settings, train_run
from deconflict.experiments.runs import plan_entry
from deconflict.portable import apply_torch_settings

PIPELINES = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="a run name from --runs")
    parser.add_argument("--runs", type=Path, default=PIPELINES / "runs.yaml", help="the run plan (pipelines/runs.yaml)")
    parser.add_argument("--params", type=Path, default=PIPELINES / "params.yaml", help="pipelines/params.yaml")
    parser.add_argument("--dataset", help="a registered dataset, e.g. nyuv2 (instead of --run)")
    parser.add_argument("--model", help="a registered model of the dataset's family, e.g. mtan")
    parser.add_argument("--task", help="the task of a single-task model")
    parser.add_argument("--method", default="equal", help="a deconflict.optim method (default: equal)")
    parser.add_argument(
        "--hparam",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a hyperparameter of the method (repeatable), e.g. c=0.4",
    )
    parser.add_argument("--level", default="parameter", help="parameter | feature")
    parser.add_argument("--lr", type=float, help="the initial learning rate at full scale (default: the family's)")
    parser.add_argument("--out", type=Path, help="run folder (default: pipelines/runs/<name>)")
    parser.add_argument("--work", type=Path, help="checkpoint folder (default: pipelines/work/<name>)")
    parser.add_argument("--profile", help="override the root params.yaml profile (smoke | full)")
    parser.add_argument(
        "--scans", type=Path, default=PIPELINES / "scans", help="Recon's scans (pipelines/scans, from the scan stage)"
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (a line per epoch, with the run's ETA, is still printed)",
    )
    return parser.parse_args(argv)


def run_from_args(args: argparse.Namespace) -> RunSpec:
    if args.run:
        entry = plan_entry(args.runs, "runs", args.run)
        entry.pop("scan", None)  # the scan folder the stage depends on (Recon runs), not part of the definition
        run = RunSpec.from_dict(entry)
        if run.name != args.run:
            raise ConfigError(
                f"{args.runs}: run {args.run!r} is defined as {run.name!r} ({run.family.name}); "
                "regenerate the plan with `python pipelines/plan_runs.py --write`."
            )
        return run
    if not args.dataset or not args.model:
        raise ConfigError("give --run NAME, or --dataset and --model (and --method, --hparam KEY=VALUE …).")
    hparams: dict[str, Any] = {}
    for item in args.hparam:
        if "=" not in item:
            raise ConfigError(f"--hparam takes KEY=VALUE, got {item!r}.")
        key, text = item.split("=", 1)
        hparams[key] = yaml.safe_load(text)
    return RunSpec.from_dict(
        {
            "dataset": args.dataset,
            "model": args.model,
            "task": args.task,
            "method": args.method,
            "hparams": hparams,
            "level": args.level,
            "lr": args.lr,
        }
    )


@entrypoint
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    root = load_root_params(args.params.resolve().parent)
    load_plugins(root)
    profile = args.profile or root.profile
    run = run_from_args(args)
    settings = family_settings(args.params, run.family.name, profile)
    apply_torch_settings()
    train_run(
        run,
        settings,
        root.seeds,
        out=args.out or PIPELINES / "runs" / run.name,
        work=args.work or PIPELINES / "work" / run.name,
        data_base=settings.data_base(root.repo_root, root.data_root),
        profile=profile,
        device=resolve_device(root.device),
        progress=not args.no_progress,
        log=lambda line: print(line, flush=True),
        scans=args.scans,
    )


if __name__ == "__main__":
    raise SystemExit(main())
