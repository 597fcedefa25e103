"""Stage entry point: Recon's scan — the pre-run whose per-layer gradient conflicts choose the layers.

    python pipelines/scan_conflicts.py --scan cityscapes-split-equal-lr5e-05     # a scan of pipelines/runs.yaml

Trains the scan's pre-run (Recon's base method on the run's model and data) for the profile's scan
length (``recon_scan.epochs`` in pipelines/params.yaml; in the full profile Recon's App. B length for
the dataset; a ``-whole_run`` scan as long as the run, Recon Table 13) with the first seed, recording
every step's task-gradient cosines per shared layer, and
writes ``--out`` (default ``pipelines/scans/<name>``): ``gradient_pairs.csv`` and ``layers.json``.
Every Recon run of that pre-run (``recon:`` in a paper's table rows) reads them. Checkpoints go to
``--work`` (default ``pipelines/work/scans/<name>``): a killed scan resumes.
The scan itself is :func:`deconflict.experiments.scans.train_scan`.
"""

from __future__ import annotations

from deconflict.portable import pin_process

if __name__ == "__main__":
    pin_process()  # the smoke profile's portable numerics, before NumPy and PyTorch are imported

import argparse
from pathlib import Path

from deconflict.cli import entrypoint
from deconflict.config import load_plugins, load_root_params, load_yaml, resolve_device, resolve_profile
from deconflict.errors import ConfigError
from deconflict.experiments import RunSpec, family_settings
from deconflict.experiments.runs import plan_entry
from deconflict.experiments.scans import train_scan
from deconflict.experiments.surgery import scan_epochs, scan_suffix
from deconflict.portable import apply_torch_settings

PIPELINES = Path(__file__).resolve().parent


@entrypoint
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scan", required=True, help="a scan name from --runs (its `scans` section)")
    parser.add_argument("--runs", type=Path, default=PIPELINES / "runs.yaml", help="the run plan (pipelines/runs.yaml)")
    parser.add_argument("--params", type=Path, default=PIPELINES / "params.yaml", help="pipelines/params.yaml")
    parser.add_argument("--out", type=Path, help="scan folder (default: pipelines/scans/<name>)")
    parser.add_argument("--work", type=Path, help="checkpoint folder (default: pipelines/work/scans/<name>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    root = load_root_params(args.params.resolve().parent)
    load_plugins(root)
    entry = plan_entry(args.runs, "scans", args.scan)
    recon_settings = entry.pop("settings", "paper")
    prerun = entry.pop("prerun", "recon")
    scan = RunSpec.from_dict(entry)
    if scan.name + scan_suffix(recon_settings, prerun) != args.scan:
        raise ConfigError(f"{args.runs}: scan {args.scan!r} is out of date: `python pipelines/plan_runs.py --write`.")
    profile_epochs = resolve_profile(load_yaml(args.params).get("recon_scan") or {}, root.profile).get("epochs")
    settings = family_settings(args.params, scan.family.name, root.profile)
    apply_torch_settings()
    train_scan(
        scan,
        settings,
        root.seeds[0],
        scan_epochs(scan, recon_settings, profile_epochs, prerun, run_epochs=settings.epochs),
        out=args.out or PIPELINES / "scans" / args.scan,
        work=args.work or PIPELINES / "work" / "scans" / args.scan,
        data_base=settings.data_base(root.repo_root, root.data_root),
        device=resolve_device(root.device),
        progress=not args.no_progress,
        log=lambda line: print(line, flush=True),
    )


if __name__ == "__main__":
    raise SystemExit(main())
