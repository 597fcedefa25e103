"""A rendered table or figure: what a notebook opens with one call and then asks for, one artifact per call.

Every entry of a paper's ``tables`` (its params file) has a ``kind``; :func:`open_report` builds the
report of that kind, which knows where the table's inputs are and what artifacts it makes::

    report = open_report("../params.yaml", "table6_nyuv2", profile=profile, out_dir=out_dir,
                         metrics_path=metrics_path, plots_path=plots_path)
    report.rows()      # what each row is here (reproduced / later / not run)
    report.table()     # the paper's numbers beside ours
    report.curves()    # a figure
    report.close()     # the DVC metrics and plot files, and the manifest for the index

With ``out_dir=None`` (a notebook opened in JupyterLab, or run by nbval) nothing is written. A new
kind subclasses :class:`Report` and registers itself with ``@register_report``.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from deconflict.config import load_plugins, load_root_params, paper_tables, resolve_profile
from deconflict.errors import ConfigError, UnknownNameError
from deconflict.registry import Registry
from deconflict.reporting.artifacts import ArtifactWriter
from deconflict.reporting.style import profile_note, use_print_style

__all__ = ["BUILTIN_KINDS", "REPORTS", "Report", "load_builtin_kinds", "open_report", "register_report"]

#: every kind of table or figure, by the ``kind`` a paper's params give it
REPORTS: Registry[type[Report]] = Registry("table kind", error=UnknownNameError)


def register_report(cls: type[Report]) -> type[Report]:
    """Class decorator: make a kind of table or figure available to papers' params (``kind:``)."""
    return REPORTS.add(cls.kind, cls)


class Report:
    """Base class of every kind of rendered table or figure.

    Attributes:
        paper, table_id: whose table this is; ``section`` its declaration in the paper's params
            (resolved for the profile); ``folder`` the paper's folder, which relative paths start from.
        writer: the :class:`ArtifactWriter` its artifacts go through.
        plot_rows: rows of the DVC plot data collected so far (written by :meth:`close`).
        dvc: the DVC metrics collected so far (written by :meth:`close`).
    """

    kind: ClassVar[str] = ""

    def __init__(
        self,
        params_file: str | Path,
        table_id: str,
        section: dict[str, Any],
        *,
        profile: str,
        out_dir: str | Path | None = None,
        metrics_path: str | Path | None = None,
        plots_path: str | Path | None = None,
    ) -> None:
        self.params_file = Path(params_file)
        self.folder = self.params_file.parent
        self.paper = self.folder.resolve().name
        self.table_id = table_id
        self.section = section
        self.profile = profile
        self.writer = ArtifactWriter(
            out_dir,
            notebook=table_id,
            paper=self.paper,
            profile=profile,
            title=section.get("title", table_id),
            metrics_path=metrics_path,
            plots_path=plots_path,
        )
        self.dvc: dict[str, Any] = {}
        self.plot_rows: list[pd.DataFrame] = []
        use_print_style()

    @property
    def title(self) -> str:
        return self.section.get("title", self.table_id)

    @property
    def note(self) -> str:
        """Which profile made these numbers and what that means."""
        return profile_note(self.profile)

    def save_figure(self, fig: Any, suffix: str, caption: str, *plots: pd.DataFrame) -> Any:
        """Lay out ``fig``, write it as ``<table id>_<suffix>`` with ``caption``, keep ``plots`` (tidy
        ``x`` / ``value`` rows) for DVC's plot file, close it and return it (a notebook displays it)."""
        import matplotlib.pyplot as plt

        fig.tight_layout()
        self.writer.figure(fig, f"{self.table_id}_{suffix}", caption=caption)
        self.plot_rows.extend(plots)
        plt.close(fig)
        return fig

    def path(self, relative: str) -> Path:
        """A path of the table's declaration, relative to the paper's folder."""
        return self.folder / relative

    def close(self) -> None:
        """Write the DVC metrics and plot files and the manifest (nothing with ``out_dir=None``)."""
        self.writer.dvc_metrics(self.dvc)
        if self.plot_rows:
            self.writer.dvc_plot(pd.concat(self.plot_rows, ignore_index=True))
        else:
            self.writer.dvc_plot(pd.DataFrame(columns=["x", "row", "series", "value"]))
        self.writer.close()


#: the modules of the built-in kinds of table and figure (each registers itself in REPORTS when imported)
BUILTIN_KINDS = (
    "deconflict.reporting.run_tables",
    "deconflict.reporting.toy_figure",
    "deconflict.reporting.conflict_tables",
    "deconflict.reporting.sparse_tables",
    "deconflict.reporting.priority_figures",
    "deconflict.reporting.drmgf_figures",
)


def load_builtin_kinds() -> None:
    """Import the built-in kinds, so that :data:`REPORTS` knows them."""
    for module in BUILTIN_KINDS:
        import_module(module)


def open_report(
    params_file: str | Path,
    table_id: str,
    *,
    profile: str = "smoke",
    out_dir: str | Path | None = None,
    metrics_path: str | Path | None = None,
    plots_path: str | Path | None = None,
) -> Report:
    """The report of the table or figure ``table_id`` declared in a paper's params file (the root
    params' ``plugins`` are imported first, so that their kinds of table are known)."""
    load_plugins(load_root_params(Path(params_file).parent))
    tables = paper_tables(params_file)
    if table_id not in tables:
        raise ConfigError(f"{params_file} declares no table {table_id!r} under tables (it declares {sorted(tables)}).")
    section = resolve_profile(tables[table_id], profile)
    load_builtin_kinds()
    cls = REPORTS[section["kind"]]
    return cls(
        params_file,
        table_id,
        section,
        profile=profile,
        out_dir=out_dir,
        metrics_path=metrics_path,
        plots_path=plots_path,
    )
