"""Stage entry point: train the DR-MGF toy network with several optimizers from the same starts.

    python pipelines/toy_trajectories.py --params papers/drmgf/params.yaml --section toy \
        --out papers/drmgf/results/toy --work papers/drmgf/work/toy

Writes ``trajectories.csv`` (one row per method × start × step), ``summary.csv`` and ``meta.json``
into ``--out`` (atomically). Each run keeps a checkpoint under ``--work``: a killed stage, started
again, resumes where it stopped; a change of settings or code starts afresh.
"""

from __future__ import annotations

from deconflict.portable import pin_process

if __name__ == "__main__":
    pin_process()  # the smoke profile's portable numerics, before NumPy and PyTorch are imported

import argparse
import sys
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from deconflict.cli import entrypoint
from deconflict.config import load_plugins, load_root_params, load_yaml, resolve_profile
from deconflict.errors import ConfigError
from deconflict.experiments.drmgf_toy import ToySettings, run_toy, sample_inits, summarise, toy_run_key
from deconflict.experiments.runs import prune_runs
from deconflict.io import atomic_path, write_json
from deconflict.portable import apply_torch_settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, required=True, help="the paper's params.yaml")
    parser.add_argument("--section", default="toy", help="section of the params file")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--work", type=Path, help="checkpoint folder (default: <out>/runs)")
    parser.add_argument("--profile", help="override the root params.yaml profile (smoke | full)")
    return parser.parse_args(argv)


@entrypoint
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    root = load_root_params(args.params.parent)
    load_plugins(root)
    profile = args.profile or root.profile
    params = load_yaml(args.params)
    if args.section not in params:
        raise ConfigError(f"{args.params} has no section {args.section!r}.")
    section = resolve_profile(params[args.section], profile)
    settings = ToySettings.from_params(section, seed=root.seeds[0])
    apply_torch_settings()

    runs_dir = args.work or args.out / "runs"
    inits = sample_inits(settings.n_inits, settings.seed, settings.init_low, settings.init_high)
    plan = [
        (method, index, toy_run_key(method, index, settings))
        for method in settings.methods
        for index in range(len(inits))
    ]
    prune_runs(runs_dir, {key for _, _, key in plan})

    frames, fallbacks = [], {}
    for method, index, key in tqdm(plan, desc=f"toy ({profile})", mininterval=1.0):
        frame, count = run_toy(method, inits[index], settings, run_dir=runs_dir / key)
        frame["init"] = index
        frames.append(frame)
        fallbacks[method.label] = fallbacks.get(method.label, 0) + count
    for label, count in fallbacks.items():
        if count:
            print(
                f"warning: {label}: the solver failed on {count} steps in all (weights of the previous "
                "step reused; see the 'solver fallbacks' column).",
                file=sys.stderr,
            )

    trajectories = pd.concat(frames, ignore_index=True)
    summary = summarise(trajectories, fallbacks, settings, [m.label for m in settings.methods])
    with atomic_path(args.out / "trajectories.csv") as tmp:
        trajectories.to_csv(tmp, index=False, float_format="%.17g")
    with atomic_path(args.out / "summary.csv") as tmp:
        summary.to_csv(tmp, index=False, float_format="%.17g")
    write_json(
        args.out / "meta.json",
        {
            "profile": profile,
            "seed": settings.seed,
            "settings": {k: v for k, v in section.items()},
            "inits": inits,
        },
    )
    print(summary.to_string(index=False))


if __name__ == "__main__":
    sys.exit(main())
