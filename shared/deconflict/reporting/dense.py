"""What the NYUv2 / CityScapes table notebooks show: the table beside the paper's, and the curves."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from deconflict.errors import ConfigError
from deconflict.experiments.dense import METRICS, PRIMARY_METRIC, load_run
from deconflict.experiments.dense_tables import (
    COLUMNS, TableSpec, column_label, format_table, load_reference, load_tables, reproduce_table,
)

__all__ = ["load_table", "row_overview", "dense_table", "curves_figure"]


def load_table(params_file: str | Path, table_id: str) -> TableSpec:
    """The table ``table_id`` of a paper's params file."""
    for table in load_tables(params_file):
        if table.table_id == table_id:
            return table
    raise ConfigError(f"{params_file} declares no dense table {table_id!r} under dense_tables.")


def row_overview(table: TableSpec) -> pd.DataFrame:
    """Each row: what it is here (reproduced / later / not run), its runs, and the paper's Δm."""
    reference = load_reference(table)
    delta = column_label(reference, "Δm")
    records = []
    for row in table.rows:
        printed = reference[(reference["row"] == row.label) & (reference["column"] == delta)]["value"]
        records.append({
            "row": row.label,
            "here": row.status,
            "why": row.reason,
            "runs": ", ".join(run.name for run in row.runs) or "–",
            f"paper {delta}" if delta else "paper Δm": printed.iloc[0] if len(printed) else "",
        })
    return pd.DataFrame.from_records(records)


def dense_table(table: TableSpec, runs_dir: str | Path, profile: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(values as floats, printable strings) of the table: paper and reproduction, row by row."""
    reference = load_reference(table)
    values = reproduce_table(table, runs_dir, profile, reference)
    return values, format_table(table, values, reference)


def curves_figure(table: TableSpec, runs_dir: str | Path, profile_label: str):
    """Test curves (first metric of each task, global reduction, mean over seeds) of the reproduced rows."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    runs_dir = Path(runs_dir)
    frames = []
    for row in table.rows:
        for run in row.runs:
            _, metrics = load_run(runs_dir / run.name)
            frames.append(metrics.assign(row=row.label))
    data = pd.concat(frames, ignore_index=True)
    data = data[(data["split"] == "test") & (data["reduction"] == "global")
                & (data["metric"] == data["task"].map(PRIMARY_METRIC))]
    tasks = [t for t in METRICS if t in set(data["task"])]
    labels = {metric: column for column, (_, metric, _) in COLUMNS.items()}
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    rows = [row.label for row in table.rows if row.runs]
    palette = dict(zip(rows, sns.color_palette("colorblind", len(rows))))
    for ax, task in zip(axes[0], tasks):
        sns.lineplot(data=data[data["task"] == task], x="epoch", y="value", hue="row", hue_order=rows,
                     palette=palette, estimator="mean", errorbar=None, ax=ax, legend=ax is axes[0][-1])
        metric = PRIMARY_METRIC[task]
        ax.set(title=task, xlabel="epoch", ylabel=f"test {labels.get(metric, metric)} ({metric})")
    if axes[0][-1].get_legend() is not None:
        axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, title=None)
    fig.suptitle(f"{table.title}: test curves ({profile_label})", fontsize=11)
    fig.tight_layout()
    return fig
