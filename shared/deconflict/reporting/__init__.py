"""Layer 9 — rendering the papers' tables and figures (``deconflict.reporting``).

A notebook opens its table or figure with :func:`open_report` (the kind named in the paper's
params: ``run_table``, ``drmgf_toy``) and asks it for one artifact per call; artifacts (CSV +
Markdown tables, PNG + PDF figures, JSON metrics) are written atomically by an
:class:`ArtifactWriter`, with a ``manifest.json`` that the root ``report`` stage turns into the
index of every table and figure, and the DVC metrics and plot files of the stage.
"""

from deconflict.reporting.artifacts import ArtifactWriter, read_manifest
from deconflict.reporting.report import REPORTS, Report, open_report, register_report
from deconflict.reporting.run_tables import RunTableReport
from deconflict.reporting.style import SMOKE_NOTE, profile_note, use_print_style
from deconflict.reporting.toy_figure import ToyFigureReport

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
