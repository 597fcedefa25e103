"""Reviewers' check: do the regenerated tables give the committed numbers?

    make verify                     # dvc repro, then this: every table's numbers against HEAD
    make verify RTOL=0.05           # on another architecture or a GPU: state a relative tolerance
    python pipelines/verify.py --revision v1.0 --rtol 0 --atol 0

Compares the DVC metrics of every rendered table (each reproduced row's headline numbers and Δm)
between ``--revision`` (the committed claim) and the workspace (:mod:`deconflict.reporting.verify`),
prints the numbers that differ, table by table and row by row, and exits with status 1 if any is
outside |new − old| ≤ atol + rtol·|old| (or is missing on one side). The default ``--rtol auto`` is 0
(bit for bit) when this CPU's vendor is the one recorded with the committed numbers
(``papers/reproduced_on.json``); on another vendor's CPU only that every number is there (the smoke
numbers of two vendors are not comparable: see ``CROSS_VENDOR_RTOL``).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from deconflict.cli import entrypoint
from deconflict.portable import cpu_vendor
from deconflict.reporting.verify import committed_vendor, compare, metrics_diff, tolerance_for

REPO = Path(__file__).resolve().parents[1]
#: relative tolerance between the smoke numbers made on two CPU vendors' machines: none that means anything.
#: Measured on the whole smoke pipeline with the same code, data and pins (MKL at its COMPATIBLE branch) on an
#: Intel Xeon and an AMD EPYC: 106 of 695 numbers identical, the relative difference's median 0.9 %, its 90th
#: percentile 33 %, its 95th 100 % — a smoke run (8 steps on 16 images) turns last-bit differences into other
#: discrete outcomes (one of four conflict measurements changing sign moves a share from 0 to 25 %). So on
#: another vendor's CPU verify checks that every number is there (NaN where NaN), and prints how far they moved.
CROSS_VENDOR_RTOL = math.inf


@entrypoint
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--revision", default="HEAD", help="the committed numbers to compare with (default HEAD)")
    parser.add_argument(
        "--rtol",
        default="auto",
        help="relative tolerance, or auto (default): 0 on a CPU of the vendor that made the committed numbers, "
        "the measured cross-vendor tolerance on another",
    )
    parser.add_argument("--atol", type=float, default=0.0, help="absolute tolerance (default 0)")
    args = parser.parse_args(argv)
    if args.rtol == "auto":
        rtol, why = tolerance_for(committed_vendor(args.revision, cwd=str(REPO)), cpu_vendor(), CROSS_VENDOR_RTOL)
        print(f"tolerance: {why}")
    else:
        try:
            rtol = float(args.rtol)
        except ValueError:
            parser.error(f"--rtol must be a number or auto, got {args.rtol!r}")
    lines = compare(metrics_diff(args.revision, cwd=str(REPO)), rtol=rtol, atol=args.atol)
    if lines.empty:
        print("no DVC metrics to compare: run `dvc repro` first.", file=sys.stderr)
        raise SystemExit(1)
    changed = lines[lines["difference"].fillna(1.0) != 0]
    committed = pd.to_numeric(lines["committed"], errors="coerce").abs()
    moved = (lines["difference"].abs() / committed.where(committed > 0)).dropna()
    outside = lines[~lines["within"]]
    tolerance = f"rtol {rtol:g}, atol {args.atol:g}"
    for table, group in changed.groupby("table", sort=True):
        print(f"{table}:")
        print(group.drop(columns="table").to_string(index=False))
    tables = lines["table"].nunique()
    if len(moved) and (moved > 0).any():
        print(
            f"relative differences: median {moved.median():.3g}, 90th percentile {moved.quantile(0.9):.3g}, "
            f"largest {moved.max():.3g}"
        )
    print(
        f"{len(lines)} numbers in {tables} tables against {args.revision}: {len(lines) - len(changed)} identical, "
        f"{len(changed) - len(outside)} within the tolerance ({tolerance}), {len(outside)} outside."
    )
    if len(outside):
        raise SystemExit(1)


if __name__ == "__main__":
    raise SystemExit(main())
