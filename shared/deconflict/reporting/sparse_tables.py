"""Sparse training's tables about the mask (kinds ``trainable_share``, ``selection_spread`` and
``sparsity_sweep``): what share of the model a K trains, where each selection rule puts it, and how
performance follows the share.

* ``trainable_share`` — Tab. 4: the "% trainable parameters" of every *w/ ST* row of the paper's run
  tables, computed from the model the row trains at the papers' width (full width, whatever the
  profile): 100 × (all parameters − the masked weights' unselected entries) / all parameters. The
  share depends only on the shapes (K per neuron), so the model is built on the meta device.
* ``selection_spread`` — Fig. 6 (and the argument of Sec. 5.3 for Fig. 5(c)): the share (%) of each
  block's shared weights that each selection rule keeps, on a freshly initialised model at full
  width. The paper says PSN ("Ours") and Random keep about the same share of every block and Global
  does not; on MTAN, with K per neuron, PSN does not either (early blocks have fewer inputs than K);
* ``sparsity_sweep`` — Fig. 5(b): a run table whose rows train with different K; its figure draws Δm
  against each row's % trainable parameters, the run without sparse training as a line.

``trainable_share`` takes the *w/ ST* rows of the run tables it names (so Tab. 4 can never disagree
with the K the runs were trained with); ``selection_spread`` needs no training.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd
import torch

from deconflict.errors import ConfigError
from deconflict.experiments.reference import load_reference, printed_number
from deconflict.experiments.spec import RunSpec
from deconflict.experiments.surgery import SparseOptions, thaw
from deconflict.experiments.tables import column_label, load_run_tables, reproduce_table
from deconflict.methods import sparse
from deconflict.reporting.report import Report, register_report
from deconflict.reporting.run_tables import RunTableReport, _key
from deconflict.reporting.style import profile_note

__all__ = [
    "SelectionSpreadReport",
    "SparsitySweepReport",
    "TrainableShareReport",
    "block_shares",
    "trainable_percent",
]

#: the papers' models: sparse training's K counts connections per neuron of the full-width networks
FULL_WIDTH = {"width": 1.0}
#: what these reports' numbers are, whatever the profile
NOTE = "Computed from the models at the papers' full width, without training: the same in every profile."


def trainable_percent(run: RunSpec, model_options: dict[str, Any] | None = None) -> float:
    """Tab. 4's "% trainable parameters" of a sparse-training run: 100 × (parameters that can move) /
    (all parameters) of its model (``model_options``: default full width), from the shapes alone
    (every selection rule keeps the same number of entries: K per neuron, or all of a shorter row)."""
    if run.sparse is None:
        raise ConfigError(f"run {run.name!r} trains no sparse mask: it has no share of trainable parameters.")
    options = SparseOptions.parse(thaw(run.sparse))
    with torch.device("meta"):
        model = run.build_model(**(FULL_WIDTH if model_options is None else model_options))
    frozen = 0
    for weight in sparse.masked_parameters(model).values():
        row = math.prod(weight.shape[1:])
        frozen += (row - sparse.per_neuron_counts(row, options.fraction, options.k)) * weight.shape[0]
    total = sum(p.numel() for p in model.parameters())
    return 100.0 * (total - frozen) / total


def block_shares(
    run: RunSpec, rules: dict[str, str], block_pattern: str, seed: int = 0, model_options: dict[str, Any] | None = None
) -> pd.DataFrame:
    """Per block (the ``block_pattern`` match of a masked weight's name, joined by spaces) and rule:
    the share (%) of the block's masked weights the rule keeps, on the run's model initialised with
    ``seed``. ``rules`` maps a row label to a rule of :func:`deconflict.methods.sparse.select`."""
    options = SparseOptions.parse(thaw(run.sparse))
    torch.manual_seed(seed)
    model = run.build_model(**(FULL_WIDTH if model_options is None else model_options))
    pattern = re.compile(block_pattern)
    blocks = {}
    for name in sparse.masked_parameters(model):
        match = pattern.search(name)
        if match is None:
            raise ConfigError(f"block_pattern {block_pattern!r} matches no block in the weight {name!r}.")
        blocks[name] = " ".join(part for part in match.groups() if part is not None) or match.group(0)
    records = []
    for label, rule in rules.items():
        masks = sparse.select(model, options.fraction, rule, k=options.k, seed=seed)
        kept, total = {}, {}
        for name, mask in masks.items():
            kept[blocks[name]] = kept.get(blocks[name], 0) + int(mask.sum())
            total[blocks[name]] = total.get(blocks[name], 0) + mask.numel()
        records += [{"row": label, "block": b, "value": 100.0 * kept[b] / total[b]} for b in total]
    return pd.DataFrame.from_records(records)


@register_report
class TrainableShareReport(Report):
    """Sparse training's Tab. 4: % trainable parameters of the *w/ ST* rows of the named run tables.

    Params: ``reference``; ``columns`` — a printed column label → the run tables (ids in this paper's
    params) whose *w/ ST* rows fill it, e.g. ``{NYU-v2: [table7_nyuv2], CityScapes: [table12_cityscapes]}``.
    """

    kind = "trainable_share"
    note = NOTE

    def __init__(self, params_file, table_id, section, **options: Any) -> None:
        super().__init__(params_file, table_id, section, **options)
        self.reference = load_reference(self.path(section["reference"]))
        tables = {table.table_id: table for table in load_run_tables(self.params_file)}
        self.columns: dict[str, dict[str, RunSpec]] = {}
        for column, ids in dict(section.get("columns") or {}).items():
            unknown = [i for i in ids if i not in tables]
            if unknown:
                raise ConfigError(
                    f"{table_id}: column {column!r} names no run table {unknown} (known: {sorted(tables)})."
                )
            self.columns[column] = {
                row.label: row.runs[0]
                for i in ids
                for row in tables[i].rows
                if row.runs and row.runs[0].sparse is not None
            }
        if not self.columns:
            raise ConfigError(f"{table_id}: give `columns` (a column label → the run tables of its w/ ST rows).")

    def shares(self) -> pd.DataFrame:
        """Rows × columns: the % trainable parameters of each *w/ ST* run (NaN where no table has the row)."""
        labels = list(dict.fromkeys(self.reference["row"]))
        labels += [label for rows in self.columns.values() for label in rows if label not in labels]
        values = {
            column: [trainable_percent(rows[label]) if label in rows else float("nan") for label in labels]
            for column, rows in self.columns.items()
        }
        return pd.DataFrame(values, index=labels)

    def rows(self) -> None:
        """Which run (and K) fills each cell."""
        print(self.note)
        records = [
            {"row": label, "column": column, "run": run.name, "sparse": dict(thaw(run.sparse))}
            for column, rows in self.columns.items()
            for label, run in rows.items()
        ]
        print(pd.DataFrame.from_records(records).to_string(index=False))

    def table(self) -> pd.DataFrame:
        """The paper's printed shares beside ours, and where they differ by more than the printing."""
        ours = self.shares()
        records = []
        for label in ours.index:
            printed = self.reference[self.reference["row"] == label]
            paper = {"row": label, "source": "paper"}
            paper.update({c: v for c, v in zip(printed["column"], printed["value"]) if c in self.columns})
            mine = {"row": label, "source": "computed"}
            mine.update({c: f"{ours.at[label, c]:.2f}" for c in self.columns if pd.notna(ours.at[label, c])})
            records += [paper, mine]
        shown = pd.DataFrame.from_records(records).reindex(columns=["row", "source", *self.columns]).fillna("–")
        self.writer.table(
            shown,
            self.table_id,
            caption=f"{self.title}: % trainable parameters at full width (any profile)",
            source=f"Paper: papers/{self.paper}/{self.section['reference']}. Computed: "
            "deconflict.reporting.sparse_tables.trainable_percent on each w/ ST run's model.",
        )
        self.dvc = {
            _key(label): {_key(c): float(ours.at[label, c]) for c in self.columns if pd.notna(ours.at[label, c])}
            for label in ours.index
        }
        return shown

    def differences(self) -> pd.DataFrame:
        """Cells where the computed share and the printed one differ by more than half a printed unit."""
        ours = self.shares()
        records = []
        for _, cell in self.reference[self.reference["column"].isin(self.columns)].iterrows():
            if cell["row"] not in ours.index or pd.isna(ours.at[cell["row"], cell["column"]]):
                continue
            printed = printed_number(cell["value"])
            computed = float(ours.at[cell["row"], cell["column"]])
            if abs(printed - computed) > 0.5 * 10 ** -int(cell["decimals"]):
                records.append(
                    {"row": cell["row"], "column": cell["column"], "printed": printed, "computed": round(computed, 2)}
                )
        return pd.DataFrame.from_records(records, columns=["row", "column", "printed", "computed"])


@register_report
class SelectionSpreadReport(Report):
    """Sparse training's Fig. 6: the share of each block's shared weights that each selection keeps.

    Params: ``run`` (the model, e.g. ``{dataset: nyuv2, model: mtan, sparse: {k: 2000}}``), ``rules``
    (row label → rule), ``block_pattern`` (a regular expression whose groups name a weight's block),
    ``seed`` (of the initialisation and of Random).
    """

    kind = "selection_spread"
    note = NOTE

    def __init__(self, params_file, table_id, section, **options: Any) -> None:
        super().__init__(params_file, table_id, section, **options)
        self.reference = load_reference(self.path(section["reference"]))
        self.run = RunSpec.from_dict(dict(section["run"]))
        if self.run.sparse is None:
            raise ConfigError(f"{table_id}: `run` needs a sparse option (e.g. sparse: {{k: 2000}}).")
        self.rules = dict(section["rules"])
        self.block_pattern = str(section["block_pattern"])
        self.seed = int(section.get("seed", 0))
        self._shares: pd.DataFrame | None = None

    def shares(self) -> pd.DataFrame:
        if self._shares is None:
            self._shares = block_shares(self.run, self.rules, self.block_pattern, self.seed)
        return self._shares

    def rows(self) -> None:
        print(self.note)
        print(f"model: {self.run.name} at full width, initialised with seed {self.seed}; rules: {self.rules}")
        claims = self.reference[self.reference["kind"] == "claim"]
        for _, claim in claims.iterrows():
            print(f"the paper: {claim['value']} (line {claim['source_line']})")

    def table(self) -> pd.DataFrame:
        """Blocks × rules: % of the block's shared weights kept, with the spread (max − min) per rule."""
        frame = self.shares().pivot(index="block", columns="row", values="value")
        frame = frame.reindex(index=list(dict.fromkeys(self.shares()["block"])), columns=list(self.rules))
        spread = (frame.max() - frame.min()).rename("spread (max − min)")
        shown = pd.concat([frame, spread.to_frame().T]).round(2)
        self.writer.table(
            shown.reset_index(names="block"),
            self.table_id,
            caption=f"{self.title}: % of each block's shared weights kept, full width (any profile)",
            source="Computed: deconflict.reporting.sparse_tables.block_shares (deconflict.methods.sparse.select).",
        )
        self.dvc = {_key(rule): {"spread": float(spread[rule])} for rule in self.rules}
        return shown

    def figure(self):
        import matplotlib.pyplot as plt
        import seaborn as sns

        data = self.shares()
        fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * data["block"].nunique() + 2), 3.6))
        sns.barplot(data=data, x="block", y="value", hue="row", palette="colorblind", ax=ax)
        ax.set(xlabel="block", ylabel="% of the block's shared weights kept")
        ax.tick_params(axis="x", rotation=60, labelsize=7)
        ax.legend(fontsize=8, title=None)
        ax.set_title(f"{self.title} (full width, any profile)", fontsize=10)
        plot = data.rename(columns={"block": "x"}).assign(series="kept %")
        return self.save_figure(fig, "blocks", f"{self.title}: kept share per block and rule", plot)


@register_report
class SparsitySweepReport(RunTableReport):
    """Sparse training's Fig. 5(b): rows of one run table trained with different K (and the run without
    sparse training); :meth:`figure` draws each row's Δm against its % trainable parameters (Tab. 4's
    share at full width)."""

    kind = "sparsity_sweep"

    def points(self) -> pd.DataFrame:
        """One point per reproduced row but the baseline: ``row``, ``x`` (% trainable; 100 without ST)
        and ``value`` (Δm)."""
        values = reproduce_table(self.spec, self.runs_dir, self.profile, self.reference)
        delta = column_label(self.reference, "Δm")
        if delta is None:
            raise ConfigError(f"{self.table_id}: the reference has no Δm column to draw.")
        ours = values[(values["source"] == "reproduced") & (values["status"] == "reproduced")].set_index("row")
        records = []
        for row in self.spec.rows:
            if not row.runs or row.label == self.spec.baseline:
                continue
            run = row.runs[0]
            share = trainable_percent(run) if run.sparse is not None else 100.0
            records.append({"row": row.label, "x": share, "value": float(ours.at[row.label, delta])})
        return pd.DataFrame.from_records(records)

    def figure(self):
        import matplotlib.pyplot as plt

        points = self.points()
        sparse_points = points[points["x"] < 100].sort_values("x")
        dense = points[points["x"] >= 100]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot(sparse_points["x"], sparse_points["value"], marker="o", label="w/ ST")
        for _, row in dense.iterrows():
            ax.axhline(row["value"], linestyle="--", color="grey", label=row["row"])
        delta = column_label(self.reference, "Δm")
        ax.set(xlabel="% trainable parameters (full width)", ylabel=delta)
        ax.legend(fontsize=8)
        ax.set_title(f"{self.title} ({profile_note(self.profile, short=True)})", fontsize=10)
        plot = points.assign(series="Δm")
        return self.save_figure(fig, "sweep", f"{self.title}: Δm against % trainable parameters", plot)
