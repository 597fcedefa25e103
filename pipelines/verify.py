"""Reviewers' check: do the regenerated tables give the committed numbers?

    make verify                     # dvc repro, then this: every table's numbers against HEAD, tolerance 0
    make verify RTOL=0.05           # on another architecture or a GPU: state a relative tolerance
    python pipelines/verify.py --revision v1.0 --rtol 0 --atol 0

Compares the DVC metrics of every rendered table (each reproduced row's headline numbers and Δm)
between ``--revision`` (the committed claim) and the workspace (:mod:`deconflict.reporting.verify`),
prints the numbers that differ, table by table and row by row, and exits with status 1 if any is
outside |new − old| ≤ atol + rtol·|old| (or is missing on one side).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deconflict.cli import entrypoint
from deconflict.reporting.verify import compare, metrics_diff

REPO = Path(__file__).resolve().parents[1]


@entrypoint
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--revision", default="HEAD", help="the committed numbers to compare with (default HEAD)")
    parser.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (default 0: bit for bit)")
    parser.add_argument("--atol", type=float, default=0.0, help="absolute tolerance (default 0)")
    args = parser.parse_args(argv)
    lines = compare(metrics_diff(args.revision, cwd=str(REPO)), rtol=args.rtol, atol=args.atol)
    if lines.empty:
        print("no DVC metrics to compare: run `dvc repro` first.", file=sys.stderr)
        raise SystemExit(1)
    changed = lines[lines["difference"].fillna(1.0) != 0]
    outside = lines[~lines["within"]]
    tolerance = f"rtol {args.rtol:g}, atol {args.atol:g}"
    for table, group in changed.groupby("table", sort=True):
        print(f"{table}:")
        print(group.drop(columns="table").to_string(index=False))
    tables = lines["table"].nunique()
    print(
        f"{len(lines)} numbers in {tables} tables against {args.revision}: {len(lines) - len(changed)} identical, "
        f"{len(changed) - len(outside)} within the tolerance ({tolerance}), {len(outside)} outside."
    )
    if len(outside):
        raise SystemExit(1)


if __name__ == "__main__":
    raise SystemExit(main())
