"""Compare the regenerated tables' numbers with the committed ones (``make verify``).

The DVC metrics of every rendered table (each reproduced row's headline numbers and Δm, committed in
``papers/<slug>/metrics/``) are compared between a git revision (the committed claim, default
``HEAD``) and the workspace (what ``dvc repro`` just regenerated), with ``dvc metrics diff``.
:func:`compare` turns that diff into one line per table, row and number, and says which are outside
the tolerance |new − old| ≤ atol + rtol·|old|. On an x86-64 machine with AVX2 whose CPU comes from
the vendor that made the committed numbers (``papers/reproduced_on.json``) the smoke profile
reproduces them bit for bit (:mod:`deconflict.portable`), so the tolerance there is 0;
:func:`tolerance_for` picks the cross-vendor tolerance the project measured (``pipelines/verify.py``) on
another vendor's CPU. On another
architecture or a GPU, state one (e.g. ``make verify RTOL=0.05``).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

__all__ = ["committed_vendor", "compare", "metrics_diff", "tolerance_for"]

COLUMNS = ["table", "row", "number", "committed", "regenerated", "difference", "within"]
#: where the index stage records the CPU vendor that made the committed numbers
MACHINE_FILE = "papers/reproduced_on.json"


def _split(path: str, key: str) -> tuple[str, str, str]:
    """("papers/recon/metrics/table3_cityscapes.json", "CAGrad.mIoU") → (recon/table3_cityscapes, CAGrad, mIoU)."""
    parts = path.split("/")
    table = f"{parts[1]}/{parts[-1].removesuffix('.json')}" if len(parts) >= 4 else path
    row, _, number = key.rpartition(".")
    return table, row or key, number


def compare(diff: dict[str, dict[str, dict[str, Any]]], rtol: float = 0.0, atol: float = 0.0) -> pd.DataFrame:
    """One line per (table, row, number) of a ``dvc metrics diff --json`` result: the committed and
    regenerated values, their difference and whether it is within ``atol + rtol·|committed|``.
    A number present on one side only is never within."""
    records = []
    for path, numbers in sorted(diff.items()):
        for key, change in sorted(numbers.items()):
            table, row, number = _split(path, key)
            old, new = change.get("old"), change.get("new")
            if isinstance(old, (int, float)) and isinstance(new, (int, float)):
                difference = float(new) - float(old)
                within = abs(difference) <= atol + rtol * abs(float(old)) or (
                    math.isnan(float(old)) and math.isnan(float(new))
                )
            else:
                difference, within = math.nan, old == new
            records.append(
                {
                    "table": table,
                    "row": row,
                    "number": number,
                    "committed": old,
                    "regenerated": new,
                    "difference": difference,
                    "within": bool(within),
                }
            )
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def metrics_diff(revision: str = "HEAD", cwd: str | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """``dvc metrics diff --json --all <revision>``: every number of every metrics file, committed and now."""
    import json
    import subprocess

    result = subprocess.run(
        ["dvc", "metrics", "diff", "--json", "--all", revision], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        from deconflict.errors import ConfigError

        raise ConfigError(f"`dvc metrics diff {revision}` failed: {result.stderr.strip()[-500:]}")
    return json.loads(result.stdout or "{}")


def committed_vendor(revision: str = "HEAD", cwd: str | None = None) -> str | None:
    """The CPU vendor recorded with the numbers of ``revision`` (None if it records none)."""
    import json
    import subprocess

    result = subprocess.run(
        ["git", "show", f"{revision}:{MACHINE_FILE}"], cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return None
    try:
        return str(json.loads(result.stdout)["cpu_vendor"])
    except (ValueError, KeyError, TypeError):
        return None


def tolerance_for(committed: str | None, here: str, cross_vendor_rtol: float) -> tuple[float, str]:
    """(rtol, why) for comparing numbers made on a ``committed`` vendor's CPU with numbers made ``here``:
    0 on the same vendor (or when none is recorded), ``cross_vendor_rtol`` on another."""
    if committed is None or committed == here:
        made = f"a {committed}" if committed else "an unrecorded"
        return 0.0, f"bit for bit: the committed numbers were made on {made} CPU, this is {here}"
    other = (
        f"the committed numbers were made on a {committed} CPU and this is {here}: "
        "bit-identity holds within one vendor only"
    )
    if math.isinf(cross_vendor_rtol):
        return (
            cross_vendor_rtol,
            f"{other}, and the smoke numbers of two vendors are not comparable: only that every number is there",
        )
    return (
        cross_vendor_rtol,
        f"{other}, so the tolerance is the one measured between two vendors (rtol {cross_vendor_rtol:g})",
    )
