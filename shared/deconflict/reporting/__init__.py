"""Top layer — what notebooks use to write their results (``deconflict.reporting``).

Each notebook writes its tables (CSV + Markdown), figures (PNG + PDF) and metrics (JSON) as
separate files through an :class:`ArtifactWriter`, which also writes a ``manifest.json`` that the
root ``report`` stage turns into the index of every table and figure.
"""

from deconflict.reporting.artifacts import ArtifactWriter, read_manifest
from deconflict.reporting.style import SMOKE_NOTE, profile_note, use_print_style

__all__ = ["ArtifactWriter", "SMOKE_NOTE", "profile_note", "read_manifest", "use_print_style"]
