"""Tables of training runs (kind ``run_table``): the paper's numbers beside ours, and the runs' curves."""

from __future__ import annotations

from typing import Any

import pandas as pd

from deconflict.config import load_yaml
from deconflict.experiments.reference import load_reference
from deconflict.experiments.runner import load_run
from deconflict.experiments.tables import (
    RUN_TABLE,
    RunTable,
    column_label,
    format_table,
    load_run_table,
    reproduce_table,
)
from deconflict.reporting.report import Report, register_report
from deconflict.reporting.style import profile_note

__all__ = ["RunTableReport", "curves_figure", "row_overview"]


def row_overview(table: RunTable, reference: pd.DataFrame) -> pd.DataFrame:
    """Each row: what it is here (reproduced / later / not run), its runs, and the paper's Δm."""
    delta = column_label(reference, "Δm")
    records = []
    for row in table.rows:
        printed = reference[(reference["row"] == row.label) & (reference["column"] == delta)]["value"]
        records.append(
            {
                "row": row.label,
                "here": row.status,
                "why": row.reason,
                "runs": ", ".join(run.name for run in row.runs) or "–",
                f"paper {delta}" if delta else "paper Δm": printed.iloc[0] if len(printed) else "",
            }
        )
    return pd.DataFrame.from_records(records)


def curve_data(table: RunTable, runs_dir) -> pd.DataFrame:
    """Test curves of the reproduced rows: each task's headline metric at the table's averaging,
    per epoch, mean over seeds — tidy (``x`` = epoch, ``row``, ``series`` = task and metric, ``value``)."""
    frames = []
    for row in table.rows:
        for run in row.runs:
            _, metrics = load_run(runs_dir / run.name)
            for task in run.tasks:
                metric = task.headline.key
                picked = metrics[
                    (metrics["split"] == "test")
                    & (metrics["task"] == task.name)
                    & (metrics["metric"] == metric)
                    & (metrics["reduction"] == table.reduction(task.name))
                ]
                curve = picked.groupby("epoch")["value"].mean().reset_index()
                frames.append(
                    pd.DataFrame(
                        {
                            "x": curve["epoch"],
                            "row": row.label,
                            "series": f"{task.name} {task.headline.label or metric}",
                            "value": curve["value"],
                        }
                    )
                )
    return pd.concat(frames, ignore_index=True)


def curves_figure(data: pd.DataFrame, rows: list[str], title: str):
    """One panel per series (task and metric), one line per row."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    series = list(dict.fromkeys(data["series"]))
    fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.6), squeeze=False)
    palette = dict(zip(rows, sns.color_palette("colorblind", len(rows))))
    for ax, name in zip(axes[0], series):
        sns.lineplot(
            data=data[data["series"] == name],
            x="x",
            y="value",
            hue="row",
            hue_order=rows,
            palette=palette,
            errorbar=None,
            ax=ax,
            legend=ax is axes[0][-1],
        )
        ax.set(title=name, xlabel="epoch", ylabel=f"test {name}")
    if axes[0][-1].get_legend() is not None:
        axes[0][-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, title=None)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


@register_report
class RunTableReport(Report):
    """A paper's table of training runs (see :mod:`deconflict.experiments.tables`)."""

    kind = RUN_TABLE

    def __init__(self, params_file, table_id, section, **options: Any) -> None:
        super().__init__(params_file, table_id, section, **options)
        evaluation = dict(load_yaml(self.params_file).get("evaluation") or {})
        self.spec = load_run_table(self.params_file, table_id, section, evaluation)
        self.reference = load_reference(self.spec.reference)
        self.runs_dir = self.path(section.get("input", "../../pipelines/runs"))

    def rows(self) -> None:
        """Print what each row of the paper's table is here, with its runs."""
        print(self.note)
        print(row_overview(self.spec, self.reference).to_string(index=False))

    def table(self) -> pd.DataFrame:
        """The table: the paper's printed numbers, then ours (mean over seeds of the paper's reporting
        window, at the averaging its code used), Δm in the paper's convention, #P from the models."""
        values = reproduce_table(self.spec, self.runs_dir, self.profile, self.reference)
        shown = format_table(values, self.reference)
        self.writer.table(
            shown,
            self.table_id,
            caption=f"{self.title}: paper vs. reproduction ({profile_note(self.profile, short=True)})",
            source=f"Paper: papers/{self.paper}/{self.section['reference']}. Reproduction: pipelines/runs "
            "(stages: pipelines/train/*/dvc.yaml).",
        )
        self.dvc = self._headlines(values)
        return shown

    def _headlines(self, values: pd.DataFrame) -> dict[str, Any]:
        """Each reproduced row's headline numbers (each task's first printed column, and Δm)."""
        delta = column_label(self.reference, "Δm")
        headline_columns = []
        for task in dict.fromkeys(spec.task for spec in self.spec.columns.values()):
            first = next(
                (c for c in values.columns if c in self.spec.columns and self.spec.columns[c].task == task), None
            )
            if first:
                headline_columns.append(first)
        reproduced = values[(values["source"] == "reproduced") & (values["status"] == "reproduced")]
        metrics = {}
        for _, row in reproduced.iterrows():
            entry = {column: row[column] for column in headline_columns}
            if delta and delta in row and pd.notna(row[delta]):
                entry["Δm"] = row[delta]
            metrics[_key(row["row"])] = {_key(k): (None if pd.isna(v) else float(v)) for k, v in entry.items()}
        return metrics

    def curves(self):
        """Test curves of the reproduced rows (each task's headline metric per epoch)."""
        import matplotlib.pyplot as plt

        data = curve_data(self.spec, self.runs_dir)
        rows = [row.label for row in self.spec.rows if row.runs]
        fig = curves_figure(data, rows, f"{self.title}: test curves ({profile_note(self.profile, short=True)})")
        self.writer.figure(fig, f"{self.table_id}_curves", caption=f"{self.title}: test curves of the reproduced rows")
        self.plot_rows.append(data)
        plt.close(fig)
        return fig


def _key(text: str) -> str:
    """A metrics key DVC can show (it splits nested keys on dots)."""
    return str(text).replace(".", "·")
