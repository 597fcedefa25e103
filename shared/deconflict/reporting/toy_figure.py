"""DR-MGF Fig. 3 (kind ``drmgf_toy``): the paper's claim on the two-task toy beside the trajectories."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from deconflict.errors import ConfigError
from deconflict.experiments.drmgf_toy import NOT_IMPLEMENTED, load_toy_results, summary_vs_paper
from deconflict.experiments.reference import load_reference
from deconflict.models import toy_task_optima
from deconflict.reporting.report import Report, register_report
from deconflict.reporting.style import profile_note

__all__ = ["ToyFigureReport"]


@register_report
class ToyFigureReport(Report):
    """Reads what the ``toy`` stage wrote (``input``: its results folder) and the paper's claims
    (``reference``); the claims table, the figure, and per-method numbers for DVC."""

    kind = "drmgf_toy"

    def __init__(self, params_file, table_id, section, **options: Any) -> None:
        super().__init__(params_file, table_id, section, **options)
        self.trajectories, self.summary, self.meta = load_toy_results(self.path(section["input"]))
        if self.meta["profile"] != self.profile:
            raise ConfigError(
                f"the toy results in {section['input']} were made with the {self.meta['profile']!r} profile, not "
                f"{self.profile!r}: run `dvc repro` to bring them up to date."
            )
        self.reference = load_reference(self.path(section["reference"]))
        self.settings = self.meta["settings"]
        self.f_star = self.settings["c1"] * math.sqrt(2)  # the minimum of f1 and of f2

    def claims(self) -> None:
        """Print the paper's claim beside what the reproduction measured, one row per method."""
        print(self.note)
        print(
            f"{self.settings['steps']} SGD steps (lr {self.settings['lr']}) from {self.settings['n_inits']} "
            "seeded starts per method"
        )
        table = summary_vs_paper(self.summary, self.reference, self.f_star)
        self.writer.table(
            table,
            f"{self.table_id}_table",
            caption=f"DR-MGF Fig. 3 (toy network): paper's claim vs. reproduction, tolerance "
            f"{self.settings['tolerance']} ({profile_note(self.profile)})",
            source="Paper claim: Sec. 1 and Fig. 3 caption of DR-MGF. Reproduction: pipelines/toy_trajectories.py.",
        )
        print(table.to_string(index=False))
        self.dvc = {
            row.method: {
                "reaches_both_optima": bool(row.reaches_both_optima),
                "f1_minus_fstar": row.f1_final - self.f_star,
                "f2_minus_fstar": row.f2_final - self.f_star,
                "max_distance_to_optimum": row.dist_max_final,
                "median_steps_to_tolerance": row.median_steps_to_tolerance,
                "solver_fallbacks": int(row.solver_fallbacks),
            }
            for row in self.summary.itertuples()
        }

    def figure(self):
        """(a) the paths of θ_1 (solid) and θ_2 (dashed) from the first start, one colour per method,
        stars at the two optima; (b) total loss above the optimum per step (mean over starts, band: min–max)."""
        import matplotlib.pyplot as plt
        import seaborn as sns
        from matplotlib.lines import Line2D

        methods = list(self.summary["method"])
        palette = dict(zip(methods, sns.color_palette("colorblind", len(methods))))
        theta1_star, theta2_star = (t.numpy() for t in toy_task_optima(self.settings["c1"]))
        trajectories = self.trajectories

        fig, (ax_path, ax_loss) = plt.subplots(1, 2, figsize=(12, 5))
        first = trajectories[trajectories["init"] == 0]
        for method in methods:
            run = first[first["method"] == method]
            ax_path.plot(run["theta1_x"], run["theta1_y"], color=palette[method], lw=1.6)
            ax_path.plot(run["theta2_x"], run["theta2_y"], color=palette[method], lw=1.6, ls="--")
        for star, name in ((theta1_star, r"$\theta_1^*$"), (theta2_star, r"$\theta_2^*$")):
            ax_path.plot(*star, marker="*", ms=16, color="black", ls="none")
            ax_path.annotate(name, star, textcoords="offset points", xytext=(8, -14))
        ax_path.set(xlabel=r"$\theta[0]$", ylabel=r"$\theta[1]$", title="(a) paths in parameter space (start 0)")
        ax_path.set_aspect("equal", adjustable="datalim")

        curves = trajectories.assign(gap=(trajectories["f1"] + trajectories["f2"] - 2 * self.f_star).clip(lower=1e-16))
        sns.lineplot(
            data=curves,
            x="step",
            y="gap",
            hue="method",
            hue_order=methods,
            palette=palette,
            errorbar=("pi", 100),
            estimator="mean",
            ax=ax_loss,
            legend=False,
        )
        ax_loss.set(
            yscale="log",
            xlabel="SGD step (DR-MGF: fusion steps; each epoch also runs one pass per task)",
            ylabel=r"$f_1 + f_2 - 2f^*$ (log scale)",
            title="(b) total loss above the optimum",
        )

        handles = [Line2D([], [], color=palette[m], lw=2, label=m) for m in methods]
        handles += [
            Line2D([], [], color="black", lw=1.6, label=r"$\theta_1$ path"),
            Line2D([], [], color="black", lw=1.6, ls="--", label=r"$\theta_2$ path"),
        ]
        handles += [Line2D([], [], color="none", label=f"{name}: {note}") for name, note in NOT_IMPLEMENTED.items()]
        fig.legend(handles=handles, loc="lower center", ncol=4, bbox_to_anchor=(0.5, -0.12), fontsize=9)
        fig.suptitle(f"DR-MGF Fig. 3 toy network ({profile_note(self.profile, short=True)})", fontsize=11)
        fig.tight_layout()
        self.writer.figure(
            fig,
            self.table_id,
            caption="Trajectories of θ1, θ2 (start 0) and total loss gap per method (DR-MGF: after every epoch)",
        )
        gap = curves.groupby(["method", "step"])["gap"].mean().reset_index()
        self.plot_rows.append(
            pd.DataFrame({"x": gap["step"], "row": gap["method"], "series": "f1 + f2 - 2 f*", "value": gap["gap"]})
        )
        plt.close(fig)
        return fig
