"""Stage entry point: train one NYUv2 / CityScapes run (every seed of the profile) into a run folder.

    python pipelines/train.py --run nyuv2-mtan-cagrad-c0p4          # a run of pipelines/params.yaml
    python pipelines/train.py --dataset nyuv2 --model mtan --method cagrad --hparam c=0.4 \
        --out my_runs/cagrad                                           # any run, defined on the command line

The run folder (``--out``, default ``pipelines/runs/<name>``) receives, atomically:
``summary.json`` (what defines the run, the profile, the model's size, the mean of the last
``last_k`` epochs per seed and over seeds), ``metrics.csv`` (every epoch: train and test metrics
of every task at every reduction, every seed) and ``curves.csv`` (per-epoch curves for
``dvc plots show``). Checkpoints and dvclive logs go to the work folder (``--work``, default
``pipelines/work/<name>``): a killed run started again resumes from its last checkpoint and ends
with the same numbers as an uninterrupted one; a change of settings or code starts afresh.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from deconflict.cli import entrypoint
from deconflict.config import load_root_params, load_yaml, resolve_device, resolve_profile
from deconflict.errors import ConfigError
from deconflict.experiments.dense import DenseRun, DenseSettings, model_size, summarise_run, train_seed
from deconflict.experiments.runs import code_version, prune_runs, run_key
from deconflict.io import write_csv, write_json

PIPELINES = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="a run name from the `runs` of --params")
    parser.add_argument("--params", type=Path, default=PIPELINES / "params.yaml", help="pipelines/params.yaml")
    parser.add_argument("--dataset", help="nyuv2 | cityscapes (instead of --run)")
    parser.add_argument("--model", help="single | split | mtan | cross_stitch")
    parser.add_argument("--task", help="the task of a single-task model")
    parser.add_argument("--method", default="equal", help="a deconflict.optim method (default: equal)")
    parser.add_argument("--hparam", action="append", default=[], metavar="KEY=VALUE",
                        help="a hyperparameter of the method (repeatable), e.g. c=0.4")
    parser.add_argument("--level", default="parameter", help="parameter | feature")
    parser.add_argument("--lr", type=float, help="Adam's initial learning rate at full scale (default 1e-4)")
    parser.add_argument("--out", type=Path, help="run folder (default: pipelines/runs/<name>)")
    parser.add_argument("--work", type=Path, help="checkpoint folder (default: pipelines/work/<name>)")
    parser.add_argument("--profile", help="override the root params.yaml profile (smoke | full)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (a line per epoch, with the run's ETA, is still printed)")
    return parser.parse_args(argv)


def _value(text: str) -> Any:
    return yaml.safe_load(text)


def run_from_args(args: argparse.Namespace, params: dict[str, Any]) -> DenseRun:
    if args.run:
        runs = params.get("runs") or {}
        if args.run not in runs:
            raise ConfigError(f"no run {args.run!r} in {args.params}; run `python pipelines/plan_runs.py --write` "
                              f"after adding it to a paper's dense_tables (known: {len(runs)} runs).")
        run = DenseRun.from_dict(runs[args.run])
        if run.name != args.run:
            raise ConfigError(f"{args.params}: run {args.run!r} is defined as {run.name!r}; regenerate the runs "
                              "with `python pipelines/plan_runs.py --write`.")
        return run
    if not args.dataset or not args.model:
        raise ConfigError("give --run NAME, or --dataset and --model (and --method, --hparam KEY=VALUE …).")
    hparams = {}
    for item in args.hparam:
        if "=" not in item:
            raise ConfigError(f"--hparam takes KEY=VALUE, got {item!r}.")
        key, text = item.split("=", 1)
        hparams[key] = _value(text)
    spec = {"dataset": args.dataset, "model": args.model, "task": args.task, "method": args.method,
            "hparams": hparams, "level": args.level}
    if args.lr is not None:
        spec["lr"] = args.lr
    return DenseRun.from_dict(spec)


def curves(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch curves (mean over seeds): losses, and the test metrics at the global reduction."""
    keep = (metrics["metric"] == "loss") | ((metrics["split"] == "test") & (metrics["reduction"] == "global"))
    frame = metrics[keep].assign(column=lambda f: f["split"] + "/" + f["task"] + "/" + f["metric"])
    return frame.pivot_table(index="epoch", columns="column", values="value", aggfunc="mean").reset_index()


@entrypoint
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    root = load_root_params(PIPELINES)
    profile = args.profile or root.profile
    params = load_yaml(args.params)
    if "dense" not in params:
        raise ConfigError(f"{args.params} has no `dense` section (the profile's sizes and schedule).")
    settings = DenseSettings.from_params(resolve_profile(params["dense"], profile))
    run = run_from_args(args, params)
    out = args.out or PIPELINES / "runs" / run.name
    work = args.work or PIPELINES / "work" / run.name
    device = resolve_device(root.device)
    data_base = settings.data_base(root.repo_root, root.data_root)

    keys = {seed: f"seed{seed}-{run_key({'run': run.to_dict(), 'settings': repr(settings), 'seed': seed})}"
            for seed in root.seeds}
    prune_runs(work, set(keys.values()))
    frames = []
    for seed, key in keys.items():
        print(f"{run.name}: seed {seed} ({profile} profile, {settings.epochs} epochs, device {device})", flush=True)
        frames.append(train_seed(run, settings, seed, data_base=data_base, work_dir=work / key, device=device,
                                 progress=not args.no_progress,
                                 report=lambda line, seed=seed: print(f"{run.name} seed {seed}: {line}", flush=True)))
    metrics = pd.concat(frames, ignore_index=True)
    summary = summarise_run(metrics, settings.last_k)
    write_csv(out / "metrics.csv", metrics)
    write_csv(out / "curves.csv", curves(metrics))
    write_json(out / "summary.json", {
        "name": run.name,
        "run": run.to_dict(),
        "profile": profile,
        "seeds": list(root.seeds),
        "epochs": settings.epochs,
        "last_k": settings.last_k,
        "width": settings.width,
        "size": model_size(run, settings.width),
        "code_version": code_version(),
        "last_k_mean": summary.to_dict(orient="records"),
    })
    test = summary[summary["reduction"] == "global"].set_index(["task", "metric"])["mean"]
    print(f"{run.name}: mean of the last {settings.last_k} epochs (test, global): "
          + ", ".join(f"{task}/{metric} {value:.4g}" for (task, metric), value in test.items()))


if __name__ == "__main__":
    raise SystemExit(main())
