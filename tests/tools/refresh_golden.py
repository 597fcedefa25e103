"""Re-execute notebooks on their smoke defaults and store only the checked cells' outputs.

    python tests/tools/refresh_golden.py papers/drmgf/notebooks/fig3_toy.ipynb [...]
    python tests/tools/refresh_golden.py --check papers/*/notebooks/*.ipynb

Notebooks are committed without outputs, except the cells marked ``# NBVAL_CHECK_OUTPUT``, whose
output is the golden reference nbval compares against (``pytest --nbval-lax``). Run this after
changing what such a cell prints, review the diff, and commit. ``--check`` only verifies that a
notebook is clean (no stray outputs), as tests/test_notebooks_layout.py does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
KERNEL = "deconflict"


def is_checked(cell) -> bool:
    return cell.cell_type == "code" and CHECK_MARK in cell.source


def strip(notebook) -> None:
    """Drop every output and execution count except those of checked cells."""
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        if not is_checked(cell):
            cell.outputs = []
            cell.execution_count = None
    notebook.metadata.pop("papermill", None)
    notebook.metadata.pop("widgets", None)


def problems(notebook) -> list[str]:
    """Why a committed notebook is not clean (empty list if it is)."""
    found = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and not is_checked(cell) and (cell.outputs or cell.execution_count is not None):
            found.append(f"cell {index} has outputs or an execution count")
        if is_checked(cell) and (cell.execution_count is None or not cell.outputs):
            found.append(f"checked cell {index} has no golden output")
    return found


def refresh(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, kernel_name=KERNEL, timeout=1800, resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    strip(notebook)
    nbformat.write(notebook, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--check", action="store_true", help="only report notebooks that are not clean")
    args = parser.parse_args()
    status = 0
    for path in args.notebooks:
        if args.check:
            for problem in problems(nbformat.read(path, as_version=4)):
                print(f"{path}: {problem}")
                status = 1
        else:
            refresh(path)
            print(f"refreshed {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
