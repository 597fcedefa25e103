"""The papers' printed numbers: one CSV schema for every table and figure (``papers/<slug>/reference/``).

One row per printed cell::

    table_or_figure   the table or figure, as the paper names it ("Table 6", "Fig. 3")
    row               the row's label, unique within the table (a label printed several times, like
                      "w/ Recon [13]" under each method, is qualified: "MGDA [36] w/ Recon [13]")
    row_as_printed    the label as the paper prints it
    column            the column label as printed ("mIoU", "Abs Err", "Δm% ↓", "#P.")
    task              the task the column belongs to (lower case; "all" for Δm, "model size" for #P)
    value             the cell as printed (a string: signs, %, "—" kept)
    decimals          the printed number of decimals (rounding intervals in derived-number checks)
    std               the printed ± value, if any
    higher_is_better  True / False, empty where it does not apply
    marker            a printed marker (↑ ↓ –), if any
    kind              metric | derived | size | claim | bin_percent | relative_change | ranking_similarity | …
    source_line       the line of the paper's text (``../shared/papers/<slug>.txt``)
    note              anything a reader of the number should know

(row, task, column) identifies a cell. :func:`load_reference` reads and checks a file.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from deconflict.errors import ConfigError

__all__ = ["REFERENCE_COLUMNS", "load_reference", "printed_number"]

REFERENCE_COLUMNS = (
    "table_or_figure",
    "row",
    "row_as_printed",
    "column",
    "task",
    "value",
    "decimals",
    "std",
    "higher_is_better",
    "marker",
    "kind",
    "source_line",
    "note",
)


def load_reference(path: str | Path) -> pd.DataFrame:
    """The printed cells of one reference CSV (every column as a string), checked against the schema."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"reference file {path} is missing.")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if tuple(frame.columns) != REFERENCE_COLUMNS:
        raise ConfigError(
            f"{path}: the columns must be {', '.join(REFERENCE_COLUMNS)} (the reference schema, "
            f"deconflict/experiments/reference.py); found {', '.join(frame.columns)}."
        )
    duplicated = frame[frame.duplicated(["table_or_figure", "row", "task", "column"], keep=False)]
    if not duplicated.empty:
        first = duplicated.iloc[0]
        raise ConfigError(
            f"{path}: the cell ({first['row']!r}, {first['task']!r}, {first['column']!r}) of "
            f"{first['table_or_figure']} is given {len(duplicated)} times; row labels must be unique "
            "within a table (qualify repeated printed labels)."
        )
    return frame


def printed_number(text: str) -> float:
    """A printed cell as a float ("- 79.04" → −79.04, "1.5%" → 1.5); NaN for an empty cell or a dash."""
    cleaned = str(text).replace(" ", "").replace("%", "").replace("−", "-").replace("+", "")
    if cleaned in ("", "-", "—", "–"):
        return float("nan")
    return float(cleaned)
