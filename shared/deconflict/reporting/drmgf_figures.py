"""DR-MGF's analysis of its learned importance variables (kind ``route_pruning``, Fig. 14(a)), from what
DR-MGF runs record after training (``procedure.csv``, record ``pruning``:
:meth:`~deconflict.methods.drmgf.DRMGFUpdate.after_fit`).

For each task k in turn, the shared connections whose ν′ is largest for task k (its "task-specific
important" filters, Sec. 4.3.2) are set to zero and every task is evaluated; the figure shows each task's
relative degradation of its headline metric (positive: worse than unpruned, whatever the metric's
direction). The paper's claim: pruning a task's important filters primarily degrades that task. The rows
are declared like a run table's (their runs are in the run plan).
"""

from __future__ import annotations

import pandas as pd

from deconflict.reporting.conflict_tables import _RowsReport
from deconflict.reporting.report import register_report
from deconflict.reporting.run_tables import _key, read_procedure
from deconflict.reporting.style import profile_note

__all__ = ["RoutePruningReport", "relative_degradation"]

DRMGF_HINT = "it is not a DR-MGF run (`drmgf:` in the row)"


def relative_degradation(pruning: pd.DataFrame, tasks) -> pd.DataFrame:
    """Per pruned task and evaluated task, the relative change (%) of the evaluated task's headline metric
    at its first averaging, signed so that positive is worse (mean over seeds): ``pruned``, ``task``,
    ``metric``, ``value``."""
    records = []
    for task in tasks:
        metric = task.headline
        reduction = "global" if "global" in task.reductions else task.reductions[0]
        rows = pruning[(pruning["task"] == task.name) & (pruning["metric"] == metric.key)]
        rows = rows[rows["reduction"] == reduction]
        for pruned, group in rows.groupby("pruned", sort=False):
            change = (group["value"] - group["unpruned"]) / group["unpruned"].abs() * 100.0
            sign = -1.0 if metric.higher_is_better else 1.0
            records.append(
                {"pruned": pruned, "task": task.name, "metric": metric.key, "value": float(sign * change.mean())}
            )
    return pd.DataFrame.from_records(records)


@register_report
class RoutePruningReport(_RowsReport):
    """DR-MGF Fig. 14(a): relative degradation of every task when each task's important connections are pruned."""

    kind = "route_pruning"

    def _runs(self):
        return [(row.label, row.runs[0]) for row in self.spec.rows if row.runs]

    def degradation(self) -> pd.DataFrame:
        """Every row's :func:`relative_degradation`, with the share of connections pruned."""
        frames = []
        for label, run in self._runs():
            pruning = read_procedure(self.runs_dir, run.name, "pruning", DRMGF_HINT)
            frame = relative_degradation(pruning, run.tasks).assign(row=label)
            share = pruning.groupby("pruned")["connections_percent"].mean()
            frames.append(frame.assign(connections_percent=frame["pruned"].map(share)))
        return pd.concat(frames, ignore_index=True)

    def table(self) -> pd.DataFrame:
        """Rows: pruned task (and its share of the connections); columns: each task's relative degradation (%),
        and whether the pruned task is the one that degrades most (the paper's claim)."""
        data = self.degradation()
        tables = []
        for label, part in data.groupby("row", sort=False):
            wide = part.pivot(index="pruned", columns="task", values="value")
            order = list(dict.fromkeys(part["pruned"]))
            wide = wide.reindex(index=order, columns=order)
            wide.insert(0, "% connections", part.groupby("pruned")["connections_percent"].first().reindex(order))
            wide["own task worst"] = [bool(wide.loc[task, order].idxmax() == task) for task in order]
            tables.append(wide.reset_index().assign(row=label))
        shown = pd.concat(tables, ignore_index=True)
        shown = shown[["row", "pruned", *[c for c in shown.columns if c not in ("row", "pruned")]]]
        self.writer.table(
            shown.round(3),
            self.table_id,
            caption=f"{self.title}: degradation (%, positive = worse) ({profile_note(self.profile, short=True)})",
            source="The DR-MGF runs' procedure.csv (record 'pruning', deconflict.methods.drmgf.DRMGFUpdate.after_fit).",
        )
        tasks = list(dict.fromkeys(data["task"]))
        self.dvc = {
            _key(f"{record['row']} pruned {record['pruned']}"): {
                _key(t): float(record[t]) for t in tasks if pd.notna(record[t])
            }
            for record in shown.to_dict(orient="records")
        }
        return shown

    def figure(self):
        """One heatmap per row: pruning iteration (the task pruned) × evaluated task."""
        import matplotlib.pyplot as plt
        import seaborn as sns

        data = self.degradation()
        labels = list(dict.fromkeys(data["row"]))
        fig, axes = plt.subplots(1, len(labels), figsize=(4.6 * len(labels), 3.6), squeeze=False)
        for ax, label in zip(axes[0], labels):
            part = data[data["row"] == label]
            order = list(dict.fromkeys(part["pruned"]))
            wide = part.pivot(index="pruned", columns="task", values="value").reindex(index=order, columns=order)
            sns.heatmap(wide, annot=True, fmt=".1f", cmap="Reds", ax=ax, cbar=False)
            ax.set(title=label, xlabel="evaluated task (degradation %)", ylabel="pruned: important connections of")
        fig.suptitle(f"{self.title} ({profile_note(self.profile, short=True)})", fontsize=10)
        plot = data.rename(columns={"task": "x", "pruned": "series"})[["x", "row", "series", "value"]]
        return self.save_figure(fig, "heatmap", f"{self.title}: relative degradation when pruning", plot)
