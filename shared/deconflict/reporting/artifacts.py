"""Writing a notebook's tables, figures and metrics as separate files, atomically, with a manifest.

Besides the artifacts in its output folder, a rendered table also writes the two files its DVC stage
declares: ``metrics`` (a JSON of each reproduced row's headline numbers, for ``dvc metrics show`` /
``diff`` and ``dvc exp show``) and ``plots`` (a tidy CSV ``x, row, series, value`` for ``dvc plots
show``), at the paths the stage passes in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from deconflict.io import atomic_path, read_json, write_json, write_text

__all__ = ["MANIFEST_NAME", "ArtifactWriter", "read_manifest"]

MANIFEST_NAME = "manifest.json"


@dataclass
class ArtifactWriter:
    """Collects what one notebook produces and writes it under ``out_dir``.

    With ``out_dir=None`` (a notebook opened interactively, or run by nbval) nothing is written:
    exploring a notebook never overwrites the pipeline's results.

    Args:
        out_dir: the folder of this notebook's outputs, or None.
        notebook: the notebook's name (e.g. ``fig3_toy``), used in the manifest.
        paper: the paper's slug (e.g. ``drmgf``).
        profile: ``smoke`` or ``full`` — which settings made these results.
        title: a one-line description for the index.
        metrics_path: where to write the DVC metrics file (None: not written).
        plots_path: where to write the DVC plots file (None: not written).
    """

    out_dir: str | Path | None
    notebook: str
    paper: str
    profile: str
    title: str = ""
    metrics_path: str | Path | None = None
    plots_path: str | Path | None = None
    artifacts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return self.out_dir is not None

    def _path(self, name: str, suffix: str) -> Path:
        return Path(self.out_dir) / f"{name}{suffix}"

    def table(self, frame: pd.DataFrame, name: str, caption: str, source: str = "") -> None:
        """Write ``frame`` as ``<name>.csv`` and ``<name>.md`` (a Markdown table with its caption)."""
        if not self.enabled:
            return
        with atomic_path(self._path(name, ".csv")) as tmp:
            frame.to_csv(tmp, index=False)
        markdown = f"**{caption}**\n\n{frame.to_markdown(index=False)}\n"
        if source:
            markdown += f"\n{source}\n"
        write_text(self._path(name, ".md"), markdown)
        self.artifacts.append(
            {"kind": "table", "name": name, "caption": caption, "files": [f"{name}.csv", f"{name}.md"]}
        )

    def figure(self, fig: Any, name: str, caption: str) -> None:
        """Save a matplotlib figure as ``<name>.png`` and ``<name>.pdf`` (no timestamps inside)."""
        if not self.enabled:
            return
        with atomic_path(self._path(name, ".png")) as tmp:
            fig.savefig(tmp, format="png", metadata={"Software": None})
        with atomic_path(self._path(name, ".pdf")) as tmp:
            fig.savefig(tmp, format="pdf", metadata={"CreationDate": None, "ModDate": None, "Producer": None})
        self.artifacts.append(
            {"kind": "figure", "name": name, "caption": caption, "files": [f"{name}.png", f"{name}.pdf"]}
        )

    def metrics(self, values: dict[str, Any], name: str = "metrics") -> None:
        """Write ``values`` as ``<name>.json``; NaN becomes null (JSON has no NaN)."""
        if not self.enabled:
            return
        write_json(self._path(name, ".json"), _json_safe(values))
        self.artifacts.append({"kind": "metrics", "name": name, "caption": "metrics", "files": [f"{name}.json"]})

    def dvc_metrics(self, values: dict[str, Any]) -> None:
        """Write the stage's DVC metrics (nested mappings of numbers; NaN becomes null; floats to 6
        significant digits, what the tables show, so that diffs show changes, not float noise)."""
        if self.enabled and self.metrics_path is not None:
            write_json(self.metrics_path, _json_safe(values, significant=6))

    def dvc_plot(self, frame: pd.DataFrame) -> None:
        """Write the stage's DVC plot data: columns ``x``, ``row``, ``series``, ``value``."""
        if not self.enabled or self.plots_path is None:
            return
        missing = {"x", "row", "series", "value"} - set(frame.columns)
        if missing:
            raise ValueError(f"plot data lacks the column(s) {sorted(missing)}")
        with atomic_path(self.plots_path) as tmp:
            frame[["x", "row", "series", "value"]].to_csv(tmp, index=False, float_format="%.9g")

    def close(self) -> None:
        """Write ``manifest.json``: what was produced, by which notebook, with which profile."""
        if not self.enabled:
            return
        write_json(
            Path(self.out_dir) / MANIFEST_NAME,
            {
                "paper": self.paper,
                "notebook": self.notebook,
                "title": self.title,
                "profile": self.profile,
                "artifacts": self.artifacts,
            },
        )


def _json_safe(value: Any, significant: int | None = None) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v, significant) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, significant) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, float) and significant is not None:
        return float(f"{value:.{significant}g}")
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return _json_safe(value.item(), significant)
    return value


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """Read the manifest a notebook wrote into ``folder``."""
    return read_json(Path(folder) / MANIFEST_NAME)
