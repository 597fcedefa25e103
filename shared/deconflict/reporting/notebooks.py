"""Executed notebooks that are the same bytes wherever they run.

papermill and the kernel stamp an executed notebook with when and where it ran: start and end times
and durations of the run and of every cell, the kernel's message timestamps, the absolute input and
output paths, the exact Python version. None of it is a result, and all of it would make the
executed notebook — a DVC output — differ from one run, checkout folder or machine to the next.
Neither would the random id papermill gives the parameters cell it injects.
"""

from __future__ import annotations

from typing import Any

__all__ = ["strip_run_metadata"]

#: papermill's tag of the cell it injects, which also becomes that cell's id here (papermill draws a random one)
INJECTED = "injected-parameters"
_RUN_KEYS = ("duration", "start_time", "end_time", "input_path", "output_path", "environment_variables")


def strip_run_metadata(notebook: Any) -> Any:
    """Remove the timing, paths and patch version from an executed notebook (an ``nbformat`` node, in
    place), and give the injected parameters cell a fixed id."""
    papermill = notebook.metadata.get("papermill")
    if papermill is not None:
        for key in _RUN_KEYS:
            papermill.pop(key, None)
    language = notebook.metadata.get("language_info")
    if language is not None and "version" in language:
        language["version"] = ".".join(str(language["version"]).split(".")[:2])
    for cell in notebook.cells:
        if INJECTED in cell.metadata.get("tags", ()) and "id" in cell:
            cell.id = INJECTED
        cell.metadata.pop("execution", None)
        cell_papermill = cell.metadata.get("papermill")
        if cell_papermill is not None:
            for key in _RUN_KEYS:
                cell_papermill.pop(key, None)
    return notebook
