"""Tables of training runs (kind ``run_table``): the paper's numbers beside ours, and the runs' curves;
figures drawn from such rows: the training-loss curves of each row's run (kind ``loss_curves``, e.g.
DR-MGF Fig. 13(b)) and a table's rows as a scatter of Δm against model size (kind ``run_scatter``,
DR-MGF Fig. 1(b))."""

from __future__ import annotations

from typing import Any

import pandas as pd

from deconflict.config import load_yaml
from deconflict.errors import ConfigError
from deconflict.experiments.reference import load_reference
from deconflict.experiments.runner import PROCEDURE_FILE, load_run
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

__all__ = [
    "LossCurvesReport",
    "RunScatterReport",
    "RunTableReport",
    "curves_figure",
    "read_procedure",
    "row_overview",
    "training_losses",
]


def read_procedure(runs_dir, run_name: str, record: str, hint: str) -> pd.DataFrame:
    """The ``record`` rows of a run's ``procedure.csv`` (what its training procedure recorded), with a clear
    error naming ``hint`` (why a run may have none) when they are absent."""
    path = runs_dir / run_name / PROCEDURE_FILE
    if not path.is_file():
        raise ConfigError(f"run {run_name!r} has no {PROCEDURE_FILE} in {path.parent}: run `dvc repro`.")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:  # a run of a deconflict.optim method records nothing here
        frame = pd.DataFrame()
    if frame.empty or "record" not in frame or not (frame["record"] == record).any():
        raise ConfigError(f"run {run_name!r} recorded no {record!r} in {PROCEDURE_FILE}: {hint}.")
    return frame[frame["record"] == record].dropna(axis=1, how="all")


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


def training_losses(table: RunTable, runs_dir) -> pd.DataFrame:
    """Each reproduced row's training loss per task and epoch (mean over seeds; the losses of the model
    the procedure trains: for DR-MGF and Meta-GF the fused model's, on the fusion pass) — tidy (``x`` =
    epoch, ``row``, ``series`` = task, ``value``)."""
    frames = []
    for row in table.rows:
        for run in row.runs:
            _, metrics = load_run(runs_dir / run.name)
            losses = metrics[(metrics["split"] == "train") & (metrics["metric"] == "loss")]
            mean = losses.groupby(["task", "epoch"])["value"].mean().reset_index()
            frames.append(
                pd.DataFrame({"x": mean["epoch"], "row": row.label, "series": mean["task"], "value": mean["value"]})
            )
    if not frames:
        raise ConfigError(f"{table.table_id}: no row has a run (every row is later or not run).")
    return pd.concat(frames, ignore_index=True)


@register_report
class LossCurvesReport(RunTableReport):
    """The training-loss curves of each row's run, one panel per task (DR-MGF Fig. 13(b)); rows are declared
    like a run table's. The paper's figure is an image: its reference holds what the text claims."""

    kind = "loss_curves"

    def table(self) -> pd.DataFrame:
        """The last epoch's training loss of every row and task, and which row is lowest per task."""
        data = training_losses(self.spec, self.runs_dir)
        last = data[data["x"] == data["x"].max()].pivot(index="row", columns="series", values="value")
        last = last.reindex([row.label for row in self.spec.rows if row.runs])
        shown = last.copy()
        shown["lowest on"] = [
            ", ".join(task for task in last.columns if last[task].idxmin() == label) or "–" for label in last.index
        ]
        claims = self.reference[self.reference["kind"] == "claim"]
        self.writer.table(
            shown.round(4).reset_index(names="row"),
            self.table_id,
            caption=f"{self.title}: training loss at the last epoch ({profile_note(self.profile, short=True)})",
            source="The runs' metrics.csv (train split, loss). Paper's claim: "
            + "; ".join(f"{r}: {n}" for r, n in zip(claims["row"], claims["note"])),
        )
        self.dvc = {_key(label): {_key(t): float(v) for t, v in values.items()} for label, values in last.iterrows()}
        return shown

    def curves(self):
        """One panel per task: the training loss per epoch of every row (log scale)."""
        data = training_losses(self.spec, self.runs_dir)
        rows = [row.label for row in self.spec.rows if row.runs]
        fig = curves_figure(data, rows, f"{self.title} ({profile_note(self.profile, short=True)})")
        for ax in fig.axes:
            ax.set(yscale="log", ylabel="training loss")
        return self.save_figure(fig, "curves", f"{self.title}: training loss per epoch", data)


@register_report
class RunScatterReport(RunTableReport):
    """A run table's rows as points of Δm against the model size, the paper's beside ours (DR-MGF Fig. 1(b),
    drawn from Table 6's rows: ``like: table6_nyuv2``)."""

    kind = "run_scatter"

    def figure(self):
        """Δm (the paper's sign: lower is better) against #P, paper and reproduction side by side."""
        import matplotlib.pyplot as plt

        values = reproduce_table(self.spec, self.runs_dir, self.profile, self.reference)
        delta = column_label(self.reference, "Δm")
        size = column_label(self.reference, "#P")
        if not delta or not size:
            raise ConfigError(f"{self.table_id}: the reference prints no Δm or #P column to draw.")
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
        points = []
        for ax, source in zip(axes, ("paper", "reproduced")):
            rows = values[(values["source"] == source) & pd.to_numeric(values[delta], errors="coerce").notna()]
            sizes = pd.to_numeric(rows[size].astype(str).str.lstrip("≈ "), errors="coerce")
            ax.scatter(sizes, pd.to_numeric(rows[delta]), s=30)
            for x, y, label in zip(sizes, pd.to_numeric(rows[delta]), rows["row"]):
                ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
                points.append({"x": x, "row": label, "series": source, "value": y})
            ax.set(title=source, xlabel=size, ylabel=f"{delta} (lower is better)")
        fig.suptitle(f"{self.title} ({profile_note(self.profile, short=True)})", fontsize=10)
        self.dvc = self._headlines(values)  # the numbers drawn: each row's headlines and Δm, as its table has them
        return self.save_figure(fig, "scatter", f"{self.title}: Δm against #P", pd.DataFrame(points))
