"""Tables and figures of gradient conflict measured in the runs (kinds ``conflict_distribution`` and
``conflict_incidence``), beside the papers' printed numbers.

Every multi-task run records its task-gradient cosines every ``conflict_every`` steps
(``conflict_pairs.csv`` / ``conflict_summary.csv`` in its run folder, :class:`~deconflict.train.GradientMonitor`).
These reports read the rows over the whole shared part at parameter level:

* ``conflict_distribution`` — Recon's Tables 8–9 and Figs. 5, 6, 8, 9: the share (%) of the cos φ_ij of
  all steps and task pairs in each of Recon's bins (:data:`deconflict.analysis.RECON_BINS`), and the
  "Reduction (%)" of the conflicting tail against the baseline row (:func:`~deconflict.analysis.tail_reduction`);
* ``conflict_incidence`` — sparse training's Tabs. 6 and 13 and Figs. 8, 9, 12, 13: the average incidence
  of gradient conflict (Sec. 4.1, :func:`~deconflict.analysis.incidence_of_conflict`) over all epochs and
  the last 50 %, with each *w/ ST* row's improvement over its method without ST, and per epoch;
* ``conflict_gain`` — DR-MGF Fig. 5's measure on any run: the Pearson correlation of the conflict value C
  (Eq. 2, per shared filter) and the relative convergence gain G (Eq. 3) over the monitored steps and
  task pairs (both directions), for the whole shared part and per shared layer
  (:func:`~deconflict.analysis.conflict_gain_correlation`).

A table's rows are declared like a run table's (``run`` defaults, ``rows`` of run options), so the
runs they read are in the run plan and trained once for every table that needs them.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from deconflict.analysis import (
    RECON_BINS,
    WHOLE_SHARED,
    bin_labels,
    conflict_gain_correlation,
    cosine_distribution,
    incidence_of_conflict,
    tail_reduction,
)
from deconflict.config import load_yaml
from deconflict.errors import ConfigError, ShapeError
from deconflict.experiments.reference import load_reference
from deconflict.experiments.runner import CONFLICT_FILES
from deconflict.experiments.tables import RowSpec, RunTable, load_run_table
from deconflict.reporting.report import Report, register_report
from deconflict.reporting.run_tables import _key
from deconflict.reporting.style import profile_note

__all__ = ["ConflictDistributionReport", "ConflictGainReport", "ConflictIncidenceReport", "whole_shared_rows"]

#: incidence columns, as the sparse-training paper prints them
ALL_EPOCHS, LAST_HALF = "All epochs", "Last 50% epochs"


def whole_shared_rows(runs_dir, row: RowSpec, table: str = "pairs", whole: bool = True) -> pd.DataFrame:
    """The parameter-level rows over the whole shared part of the row's runs' conflict tables (``whole=False``:
    every layer's rows too)."""
    frames = []
    for run in row.runs:
        path = runs_dir / run.name / (CONFLICT_FILES[0] if table == "pairs" else CONFLICT_FILES[1])
        if not path.is_file():
            raise ConfigError(f"run {run.name!r} has no {path.name} in {path.parent}: run `dvc repro`.")
        frame = pd.read_csv(path)
        if frame.empty:
            raise ConfigError(
                f"run {run.name!r} recorded no gradient conflict: set conflict_every in the profile's "
                "training settings (pipelines/params.yaml) and run `dvc repro`."
            )
        keep = frame["level"] == "parameter"
        frames.append(frame[keep & (frame["layer"] == WHOLE_SHARED)] if whole else frame[keep])
    return pd.concat(frames, ignore_index=True)


class _RowsReport(Report):
    """A report whose rows are runs declared like a run table's."""

    def __init__(self, params_file, table_id, section, **options: Any) -> None:
        super().__init__(params_file, table_id, section, **options)
        evaluation = dict(load_yaml(self.params_file).get("evaluation") or {})
        core = {k: v for k, v in section.items() if k not in self.own_keys}
        self.spec: RunTable = load_run_table(self.params_file, table_id, core, evaluation)
        self.reference = load_reference(self.spec.reference)
        self.runs_dir = self.path(section.get("input", "../../pipelines/runs"))

    own_keys: tuple[str, ...] = ()

    def rows(self) -> None:
        """Print what each row is here, with its runs."""
        print(self.note)
        overview = pd.DataFrame(
            [
                {"row": row.label, "here": row.status, "runs": ", ".join(r.name for r in row.runs) or "–"}
                for row in self.spec.rows
            ]
        )
        print(overview.to_string(index=False))

    def _source(self, table: str) -> str:
        return f"Paper: papers/{self.paper}/{self.section['reference']}. Reproduction: the runs' {table}."

    def _side_by_side(self, ours: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
        """Two lines per row: the paper's printed values, then ours (formatted to two decimals)."""
        records = []
        for row in self.spec.rows:
            printed = self.reference[self.reference["row"] == row.label]
            paper = {"row": row.label, "source": "paper"}
            paper.update({c: v for c, v in zip(printed["column"], printed["value"]) if c in columns})
            records.append(paper)
            mine = {"row": row.label, "source": "reproduced" if row.runs else row.status}
            if row.label in ours.index:
                mine.update({c: f"{ours.at[row.label, c]:.2f}" for c in columns if pd.notna(ours.at[row.label, c])})
            records.append(mine)
        return pd.DataFrame.from_records(records).reindex(columns=["row", "source", *columns]).fillna("–")


@register_report
class ConflictDistributionReport(_RowsReport):
    """Recon's distribution of cos φ_ij w.r.t. the shared parameters (Tables 8–9, Figs. 5, 6, 8, 9)."""

    kind = "conflict_distribution"
    own_keys = ("bins",)

    def __init__(self, params_file, table_id, section, **options: Any) -> None:
        super().__init__(params_file, table_id, section, **options)
        bins = section.get("bins")
        if bins not in RECON_BINS:
            raise ConfigError(
                f"{table_id}: bins must be one of {', '.join(RECON_BINS)} (Recon's tables), got {bins!r}."
            )
        self.edges = tuple(RECON_BINS[bins]["edges"])
        self.tail = float(RECON_BINS[bins]["tail"])
        self.labels = bin_labels(self.edges)

    def distributions(self) -> pd.DataFrame:
        """Per reproduced row: % of its cosines in each bin, and the Reduction (%) of the tail vs the baseline."""
        shares = {}
        for row in self.spec.rows:
            if row.runs:
                cosines = whole_shared_rows(self.runs_dir, row)["cosine"]
                shares[row.label] = cosine_distribution(cosines, self.edges)
        frame = pd.DataFrame(shares).T.reindex(columns=self.labels)
        baseline = shares[self.spec.baseline]
        frame["Reduction (%)"] = [
            float("nan") if label == self.spec.baseline else self._reduction(baseline, shares[label])
            for label in frame.index
        ]
        return frame

    def _reduction(self, baseline: pd.Series, shares: pd.Series) -> float:
        """Recon's Reduction (%) of a row against the baseline; NaN where it is undefined (the baseline
        has no cosine in the tail — seen in smoke runs with four measurements of one pair of tasks)."""
        try:
            return tail_reduction(baseline, shares, self.edges, self.tail)
        except ShapeError as error:
            if "no mass in the tail" not in str(error):
                raise
            return float("nan")

    def table(self) -> pd.DataFrame:
        """The paper's distribution beside ours, bin by bin, and the Reduction row."""
        ours = self.distributions()
        columns = [*self.labels, "Reduction (%)"]
        shown = self._side_by_side(ours, columns)
        others = ours.drop(index=self.spec.baseline)["Reduction (%)"]
        undefined = (
            f"; Reduction (%) undefined: the baseline ({self.spec.baseline}) has no cosine below {self.tail:g}"
            if len(others) and others.isna().all()
            else ""
        )
        self.writer.table(
            shown,
            self.table_id,
            caption=f"{self.title}: % of task-pair cosines per bin "
            f"({profile_note(self.profile, short=True)}){undefined}",
            source=self._source("conflict_pairs.csv"),
        )
        tail = self.labels[1:]
        self.dvc = {
            _key(label): {
                "conflicting_percent": float(ours.loc[label, tail].sum()),
                **(
                    {"reduction_percent": float(ours.at[label, "Reduction (%)"])}
                    if pd.notna(ours.at[label, "Reduction (%)"])
                    else {}
                ),
            }
            for label in ours.index
        }
        return shown

    def figure(self):
        """One bar per bin and row (the paper's figures draw the same shares)."""
        import matplotlib.pyplot as plt
        import seaborn as sns

        ours = self.distributions()[self.labels]
        data = ours.reset_index(names="row").melt(id_vars="row", var_name="bin", value_name="percent")
        fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(self.labels) + 0.4 * len(ours)), 3.8))
        sns.barplot(data=data, x="bin", y="percent", hue="row", palette="colorblind", ax=ax)
        ax.set(xlabel="cos φ_ij (whole shared part)", ylabel="% of task pairs and steps", yscale="log")
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, title=None)
        ax.set_title(f"{self.title} ({profile_note(self.profile, short=True)})", fontsize=10)
        plot = data.rename(columns={"bin": "x", "percent": "value"}).assign(series="percent")
        return self.save_figure(fig, "distribution", f"{self.title}: distribution of cos φ_ij", plot)


@register_report
class ConflictIncidenceReport(_RowsReport):
    """Sparse training's average incidence of gradient conflict (Tabs. 6, 13; Figs. 8, 9, 12, 13)."""

    kind = "conflict_incidence"

    def incidence(self) -> pd.DataFrame:
        """Per reproduced row: the average incidence (%) over all epochs and the last 50 %."""
        records = {}
        for row in self.spec.rows:
            if row.runs:
                summary = whole_shared_rows(self.runs_dir, row, "summary")
                records[row.label] = {
                    ALL_EPOCHS: incidence_of_conflict(summary),
                    LAST_HALF: incidence_of_conflict(summary, last_fraction=0.5),
                }
        frame = pd.DataFrame(records).T
        for column in (ALL_EPOCHS, LAST_HALF):  # a w/ ST row's improvement over its method without ST
            frame[f"{column} improvement"] = [
                frame.at[label.removesuffix(" w/ ST"), column] - frame.at[label, column]
                if label.endswith(" w/ ST") and label.removesuffix(" w/ ST") in frame.index
                else float("nan")
                for label in frame.index
            ]
        return frame

    def per_epoch(self) -> pd.DataFrame:
        """Incidence (%) per epoch and row, tidy (``x`` = epoch, ``row``, ``value``)."""
        frames = []
        for row in self.spec.rows:
            if row.runs:
                summary = whole_shared_rows(self.runs_dir, row, "summary")
                epochs = summary.groupby("epoch")["conflict_fraction"].mean() * 100
                frames.append(pd.DataFrame({"x": epochs.index + 1, "row": row.label, "value": epochs.values}))
        return pd.concat(frames, ignore_index=True)

    def table(self) -> pd.DataFrame:
        ours = self.incidence()
        columns = [ALL_EPOCHS, LAST_HALF, f"{ALL_EPOCHS} improvement", f"{LAST_HALF} improvement"]
        shown = self._side_by_side(ours, columns)
        self.writer.table(
            shown,
            self.table_id,
            caption=f"{self.title}: average incidence of GC, % ({profile_note(self.profile, short=True)})",
            source=self._source("conflict_summary.csv"),
        )
        self.dvc = {
            _key(label): {"all_epochs": float(v[ALL_EPOCHS]), "last_half": float(v[LAST_HALF])}
            for label, v in ours.iterrows()
        }
        return shown

    def figure(self):
        """Left: average incidence over all epochs per row (Figs. 8, 13); right: per epoch (Figs. 9, 12)."""
        import matplotlib.pyplot as plt
        import seaborn as sns

        ours = self.incidence()
        per_epoch = self.per_epoch()
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
        bars = ours[[ALL_EPOCHS]].reset_index(names="row")
        sns.barplot(data=bars, x="row", y=ALL_EPOCHS, color=sns.color_palette("colorblind")[0], ax=left)
        left.set(xlabel="", ylabel="average incidence of GC (%)")
        left.tick_params(axis="x", rotation=60, labelsize=7)
        sns.lineplot(data=per_epoch, x="x", y="value", hue="row", palette="colorblind", ax=right, errorbar=None)
        right.set(xlabel="epoch", ylabel="incidence of GC (%)")
        right.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7, title=None)
        fig.suptitle(f"{self.title} ({profile_note(self.profile, short=True)})", fontsize=10)
        plot = per_epoch.assign(series="incidence per epoch")
        return self.save_figure(fig, "incidence", f"{self.title}: incidence of gradient conflict", plot)


@register_report
class ConflictGainReport(_RowsReport):
    """Pearson r of DR-MGF's conflict value C and convergence gain G in each row's runs (the measure of Fig. 5)."""

    kind = "conflict_gain"

    def points(self) -> pd.DataFrame:
        """Every (C, G) point of every row over the whole shared part: ``row``, ``x`` (C), ``value`` (G)."""
        frames = []
        for row in self.spec.rows:
            if not row.runs:
                continue
            pairs = whole_shared_rows(self.runs_dir, row)
            c = pd.concat([pairs["conflict_value_ij"], pairs["conflict_value_ji"]], ignore_index=True)
            g = pd.concat([pairs["convergence_gain_ij"], pairs["convergence_gain_ji"]], ignore_index=True)
            frames.append(pd.DataFrame({"row": row.label, "x": c, "value": g}))
        return pd.concat(frames, ignore_index=True)

    def table(self) -> pd.DataFrame:
        """Per row: r over the whole shared part, the median r over the shared layers, and the points used."""
        records = []
        for row in self.spec.rows:
            if not row.runs:
                continue
            pairs = whole_shared_rows(self.runs_dir, row, whole=False)
            layers = [layer for layer in dict.fromkeys(pairs["layer"]) if layer != WHOLE_SHARED]
            per_layer = []
            for layer in layers:
                try:
                    per_layer.append(conflict_gain_correlation(pairs, layer))
                except ShapeError:  # a layer whose C is constant (e.g. never in conflict) has no correlation
                    continue
            whole = pairs[pairs["layer"] == WHOLE_SHARED]
            records.append(
                {
                    "row": row.label,
                    "Pearson r (whole shared part)": conflict_gain_correlation(whole),
                    "median r over layers": float(pd.Series(per_layer).median()) if per_layer else float("nan"),
                    "layers": len(per_layer),
                    "(C, G) points": 2 * len(whole),
                }
            )
        shown = pd.DataFrame.from_records(records)
        self.writer.table(
            shown.round(3),
            self.table_id,
            caption=f"{self.title}: Pearson r of C and G ({profile_note(self.profile, short=True)})",
            source=self._source("conflict_pairs.csv (C and G per monitored step and task pair)"),
        )
        self.dvc = {
            _key(r["row"]): {"r": float(r["Pearson r (whole shared part)"])} for r in shown.to_dict(orient="records")
        }
        return shown

    def figure(self):
        """G against C for every row (whole shared part), each with its r."""
        import matplotlib.pyplot as plt
        import seaborn as sns

        points = self.points()
        labels = list(dict.fromkeys(points["row"]))
        columns = min(4, len(labels))
        rows = -(-len(labels) // columns)
        fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.8 * rows), squeeze=False)
        for ax, label in zip(axes.flat, labels):
            part = points[points["row"] == label]
            sns.scatterplot(data=part, x="x", y="value", s=14, ax=ax)
            r = part["x"].corr(part["value"])
            ax.set(title=f"{label} (r = {r:.2f})", xlabel="conflict value C", ylabel="convergence gain G")
        for ax in list(axes.flat)[len(labels) :]:
            ax.axis("off")
        fig.suptitle(f"{self.title} ({profile_note(self.profile, short=True)})", fontsize=10)
        plot = points.assign(series="G against C")
        return self.save_figure(fig, "scatter", f"{self.title}: G against C per row", plot)
