"""Layer 9 — rendering the papers' tables and figures (``deconflict.reporting``).

A notebook opens its table or figure with :func:`open_report` (the kind named in the paper's
params: ``run_table``, ``drmgf_toy``) and asks it for one artifact per call; artifacts (CSV +
Markdown tables, PNG + PDF figures, JSON metrics) are written atomically by an
:class:`ArtifactWriter`, with a ``manifest.json`` that the root ``report`` stage turns into the
index of every table and figure, and the DVC metrics and plot files of the stage.
"""

from importlib import import_module
from typing import Any

# Imported on first use (PEP 562), so that a stage that only needs the light modules — the notebook
# runner (notebooks), make verify (verify) — does not pay for PyTorch and the models at start-up.
_LIGHT = {
    "ArtifactWriter": "artifacts",
    "read_manifest": "artifacts",
    "SMOKE_NOTE": "style",
    "profile_note": "style",
    "use_print_style": "style",
}
_KINDS = {
    "REPORTS": "report",
    "Report": "report",
    "open_report": "report",
    "register_report": "report",
    "RunTableReport": "run_tables",
    "ToyFigureReport": "toy_figure",
}


def __getattr__(name: str) -> Any:
    if name in _LIGHT:
        module = import_module(f"deconflict.reporting.{_LIGHT[name]}")
    elif name in _KINDS:
        import_module("deconflict.reporting.report").load_builtin_kinds()
        module = import_module(f"deconflict.reporting.{_KINDS[name]}")
    else:
        raise AttributeError(f"module 'deconflict.reporting' has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "REPORTS",
    "SMOKE_NOTE",
    "ArtifactWriter",
    "Report",
    "RunTableReport",
    "ToyFigureReport",
    "open_report",
    "profile_note",
    "read_manifest",
    "register_report",
    "use_print_style",
]
