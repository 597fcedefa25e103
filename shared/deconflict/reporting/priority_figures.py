"""The task-priority paper's figures of its own training procedure (kind ``priority_trends``), from what
connection-strength runs record (``procedure.csv``: each step's phase and task losses, each epoch's share
of output channels per top-priority task — :class:`~deconflict.methods.connection_strength.ConnectionStrengthUpdate`).

* Fig. 3 — correlation of loss trends across tasks: per task pair, the Pearson correlation of the two
  tasks' training losses over a window of consecutive steps (``window``), at the end of every epoch, for
  each row's run (the paper compares Phase 1 with Phase 2; it does not say which series it correlates:
  this is our reading, like :func:`deconflict.analysis.loss_trend_correlation`).
* Fig. 4 — the share (%) of the shared convolutions' output channels each task has top priority over,
  per epoch (Eq. 10), for each row's run (the paper: Phase 1 only against the mixing).

The rows are declared like a run table's (their runs are in the run plan).
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import pandas as pd

from deconflict.errors import ConfigError
from deconflict.experiments.runner import PROCEDURE_FILE
from deconflict.reporting.conflict_tables import _RowsReport
from deconflict.reporting.report import register_report
from deconflict.reporting.run_tables import _key, read_procedure
from deconflict.reporting.style import profile_note

__all__ = ["PriorityTrendsReport", "loss_trends"]

STRENGTH_HINT = "it is not a connection-strength run (`strength:` in the row)"


def loss_trends(steps: pd.DataFrame, tasks: list[str], window: int) -> pd.DataFrame:
    """Per epoch and task pair: the Pearson correlation of the two tasks' losses over the ``window``
    steps that end with the epoch's last step (NaN until ``window`` steps exist); first seed."""
    if window < 3:
        raise ConfigError(f"loss-trend window must be at least 3 steps, got {window}.")
    steps = steps[steps["seed"] == steps["seed"].min()].sort_values("step").reset_index(drop=True)
    records = []
    for epoch, last in steps.groupby("epoch")["step"].max().items():
        upto = steps[steps["step"] <= last].tail(window)
        for a, b in combinations(tasks, 2):
            value = upto[a].corr(upto[b]) if len(upto) >= window else float("nan")
            records.append({"x": int(epoch) + 1, "pair": f"{a}–{b}", "value": value})
    return pd.DataFrame.from_records(records)


@register_report
class PriorityTrendsReport(_RowsReport):
    """Figs. 3 and 4 of the task-priority paper for the runs of its rows."""

    kind = "priority_trends"
    own_keys = ("window",)

    def __init__(self, params_file, table_id, section, **options: Any) -> None:
        super().__init__(params_file, table_id, section, **options)
        self.window = int(section.get("window", 4))

    def _runs(self):
        return [(row.label, row.runs[0]) for row in self.spec.rows if row.runs and row.runs[0].strength is not None]

    def priorities(self) -> pd.DataFrame:
        """Fig. 4's data: ``row``, ``x`` (epoch), ``task``, ``value`` (% of channels; mean over seeds)."""
        frames = []
        for label, run in self._runs():
            shares = read_procedure(self.runs_dir, run.name, "priorities", STRENGTH_HINT)
            mean = shares.groupby(["epoch", "task"])["top_priority_percent"].mean().reset_index()
            frames.append(
                pd.DataFrame(
                    {"row": label, "x": mean["epoch"] + 1, "task": mean["task"], "value": mean["top_priority_percent"]}
                )
            )
        return pd.concat(frames, ignore_index=True)

    def trends(self) -> pd.DataFrame:
        """Fig. 3's data: ``row``, ``x`` (epoch), ``pair``, ``value`` (loss-trend correlation)."""
        frames = []
        for label, run in self._runs():
            steps = read_procedure(self.runs_dir, run.name, "phases", STRENGTH_HINT)
            tasks = [task.name for task in run.tasks]
            frames.append(loss_trends(steps, tasks, self.window).assign(row=label))
        return pd.concat(frames, ignore_index=True)

    def table(self) -> pd.DataFrame:
        """The last epoch's priority shares and loss-trend correlations of every row."""
        shares = self.priorities()
        last = shares[shares["x"] == shares["x"].max()].pivot(index="row", columns="task", values="value")
        trends = self.trends()
        final = trends[trends["x"] == trends["x"].max()].pivot(index="row", columns="pair", values="value")
        shown = pd.concat([last.add_prefix("top priority % — "), final.add_prefix("loss-trend r — ")], axis=1)
        shown = shown.reindex([label for label, _ in self._runs()]).round(3)
        self.writer.table(
            shown.reset_index(names="row"),
            self.table_id,
            caption=f"{self.title}: last epoch ({profile_note(self.profile, short=True)})",
            source=f"The runs' {PROCEDURE_FILE} (deconflict.methods.connection_strength).",
        )
        self.dvc = {
            _key(row): {_key(k): float(v) for k, v in values.items() if pd.notna(v)} for row, values in shown.iterrows()
        }
        return shown

    def figure(self):
        """Left: Fig. 3 (loss-trend correlation per epoch); right: Fig. 4 (top-priority share per epoch)."""
        import matplotlib.pyplot as plt
        import seaborn as sns

        trends, shares = self.trends(), self.priorities()
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
        sns.lineplot(data=trends, x="x", y="value", hue="row", style="pair", marker="o", ax=left, errorbar=None)
        left.set(xlabel="epoch", ylabel=f"loss-trend correlation ({self.window} steps)", ylim=(-1.05, 1.05))
        sns.lineplot(data=shares, x="x", y="value", hue="task", style="row", marker="o", ax=right, errorbar=None)
        right.set(xlabel="epoch", ylabel="% of output channels with top priority")
        for ax in (left, right):
            ax.legend(fontsize=7, title=None)
        fig.suptitle(f"{self.title} ({profile_note(self.profile, short=True)})", fontsize=10)
        plots = trends.rename(columns={"pair": "series"}), shares.rename(columns={"task": "series"})
        return self.save_figure(fig, "trends", f"{self.title}: Figs. 3 and 4", *plots)
