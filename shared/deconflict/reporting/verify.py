"""Compare the regenerated tables' numbers with the committed ones (``make verify``).

The DVC metrics of every rendered table (each reproduced row's headline numbers and Δm, committed in
``papers/<slug>/metrics/``) are compared between a git revision (the committed claim, default
``HEAD``) and the workspace (what ``dvc repro`` just regenerated), with ``dvc metrics diff``.
:func:`compare` turns that diff into one line per table, row and number, and says which are outside
the tolerance |new − old| ≤ atol + rtol·|old|. On any x86-64 machine with AVX2 the smoke profile
reproduces its numbers bit for bit (:mod:`deconflict.portable`), so the default tolerance is 0;
on another architecture or a GPU, state one (e.g. ``make verify RTOL=0.05``).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

__all__ = ["compare", "metrics_diff"]

COLUMNS = ["table", "row", "number", "committed", "regenerated", "difference", "within"]


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
