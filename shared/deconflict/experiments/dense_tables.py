"""The papers' NYUv2 / CityScapes tables: which runs each row needs, and the table beside the paper's.

A paper's ``params.yaml`` declares its tables under ``dense_tables``::

    dense_tables:
      table6:
        title: "Table 6 — NYUv2, SegNet-MTAN"
        reference: reference/table6.csv     # the paper's printed numbers (columns row, column, value, decimals)
        dataset: nyuv2
        run: {model: mtan}                  # what every row's run shares
        baseline: Independent               # the Δm reference row
        size: relative                      # "#P": relative (to a single-task SegNet) | mib | none
        delta_m: {convention: flat, printed: degradation}
        rows:
          Independent: {model: single}      # a single-task row: one run per task
          Cagrad [26]: {method: cagrad, hparams: {c: 0.4}}
          DR-MGF: {later: "DR-MGF (issue on the paper's own methods)"}
          Rotograd [21]: {not_run: "why"}

:func:`plan_runs` collects the runs of every table of every paper, once each (the ``runs`` of
``pipelines/params.yaml`` are generated from it); :func:`reproduce_table` puts the runs' results
beside the paper's numbers, with Δm in the paper's convention and #P computed from the models.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from deconflict.config import load_yaml
from deconflict.errors import ConfigError
from deconflict.experiments.dense import (
    HIGHER_IS_BETTER, DenseRun, build_model, dataset_tasks, fp32_mib, load_run, summarise_run,
)
from deconflict.metrics import delta_m

__all__ = [
    "COLUMNS", "TableSpec", "RowSpec", "load_tables", "load_reference", "column_label", "plan_runs",
    "reproduce_table", "format_table", "parameter_count",
]

#: the papers' column labels → (task, metric, factor from our units to the printed ones)
COLUMNS: dict[str, tuple[str, str, float]] = {
    "mIoU": ("segmentation", "miou", 100.0),
    "Pix Acc": ("segmentation", "pixel_acc", 100.0),
    "Abs Err": ("depth", "abs_err", 1.0),
    "Rel Err": ("depth", "rel_err", 1.0),
    "Mean": ("normal", "mean", 1.0),
    "Median": ("normal", "median", 1.0),
    "11.25": ("normal", "within_11.25", 100.0),
    "22.5": ("normal", "within_22.5", 100.0),
    "30": ("normal", "within_30", 100.0),
}
SIZES = ("relative", "mib", "none")


@dataclass(frozen=True)
class RowSpec:
    """One row of a table: the runs it needs, or why it has none here."""

    label: str
    runs: tuple[DenseRun, ...] = ()
    later: str | None = None  # the paper's own method: comes with a later issue
    not_run: str | None = None  # a baseline this project does not run, and why

    @property
    def status(self) -> str:
        """``reproduced``, ``later`` (the paper's own method, a later issue) or ``not run``."""
        return "later" if self.later else "not run" if self.not_run else "reproduced"

    @property
    def reason(self) -> str:
        return self.later or self.not_run or ""


@dataclass(frozen=True)
class TableSpec:
    """A paper's NYUv2 / CityScapes table as its params declare it (see the module docstring)."""

    paper: str
    table_id: str
    title: str
    reference: Path
    dataset: str
    baseline: str
    rows: tuple[RowSpec, ...]
    size: str = "none"
    delta_convention: str = "flat"
    delta_printed: str = "degradation"
    last_k: int | None = None
    evaluation: Mapping[str, str] = field(default_factory=dict)

    @property
    def runs(self) -> list[DenseRun]:
        return [run for row in self.rows for run in row.runs]

    def row(self, label: str) -> RowSpec:
        for row in self.rows:
            if row.label == label:
                return row
        raise ConfigError(f"{self.paper} {self.table_id}: no row {label!r}.")


def _row(label: str, spec: Mapping[str, Any] | None, defaults: Mapping[str, Any], dataset: str,
         where: str) -> RowSpec:
    spec = dict(spec or {})
    if "later" in spec or "not_run" in spec:
        return RowSpec(label, later=spec.get("later"), not_run=spec.get("not_run"))
    merged = {**defaults, **spec, "dataset": dataset}
    merged["hparams"] = {**dict(defaults.get("hparams") or {}), **dict(spec.get("hparams") or {})}
    try:
        if merged.get("model") == "single":
            base = {k: v for k, v in merged.items() if k not in ("method", "hparams", "level", "model_options")}
            runs = tuple(DenseRun.from_dict({**base, "task": task}) for task in dataset_tasks(dataset))
        else:
            runs = (DenseRun.from_dict(merged),)
    except ConfigError as error:
        raise ConfigError(f"{where}, row {label!r}: {error}") from None
    return RowSpec(label, runs=runs)


def load_tables(params_path: str | Path) -> list[TableSpec]:
    """The ``dense_tables`` of one paper's params file (an empty list if it has none)."""
    params_path = Path(params_path)
    params = load_yaml(params_path)
    paper = params_path.parent.name
    evaluation = dict(params.get("evaluation") or {})
    tables = []
    for table_id, section in (params.get("dense_tables") or {}).items():
        where = f"{params_path} dense_tables.{table_id}"
        required = {"reference", "dataset", "baseline", "rows"}
        missing = required - set(section)
        if missing:
            raise ConfigError(f"{where}: missing {sorted(missing)}.")
        size = section.get("size", "none")
        if size not in SIZES:
            raise ConfigError(f"{where}: size must be one of {', '.join(SIZES)}, got {size!r}.")
        delta = dict(section.get("delta_m") or {})
        convention = delta.get("convention", evaluation.get("delta_m", "flat"))
        if convention not in ("flat", "per_task"):
            raise ConfigError(f"{where}: delta_m convention must be flat or per_task, got {convention!r}.")
        rows = tuple(_row(label, spec, section.get("run") or {}, section["dataset"], where)
                     for label, spec in section["rows"].items())
        if section["baseline"] not in {row.label for row in rows}:
            raise ConfigError(f"{where}: the baseline {section['baseline']!r} is not one of the rows.")
        tables.append(TableSpec(
            paper=paper, table_id=table_id, title=section.get("title", table_id),
            reference=params_path.parent / section["reference"], dataset=section["dataset"],
            baseline=section["baseline"], rows=rows, size=size, delta_convention=convention,
            delta_printed=delta.get("printed", "degradation"), last_k=section.get("last_k"),
            evaluation={**{k: v for k, v in evaluation.items() if k in ("segmentation", "depth", "normal")},
                        **dict(section.get("evaluation") or {})},
        ))
    return tables


def plan_runs(params_paths: Iterable[str | Path]) -> dict[str, dict[str, Any]]:
    """Every run any table needs, keyed by run name, each once (sorted by name)."""
    plan: dict[str, dict[str, Any]] = {}
    for path in params_paths:
        for table in load_tables(path):
            for run in table.runs:
                plan[run.name] = {k: v for k, v in run.to_dict().items() if v not in (None, {}, ())}
    return dict(sorted(plan.items()))


@functools.lru_cache(maxsize=None)
def parameter_count(run: DenseRun) -> int:
    """Parameters of the run's model at the papers' full width (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = build_model(run, 1.0)
    return sum(p.numel() for p in model.parameters())


def _size(table: TableSpec, row: RowSpec) -> float | None:
    if table.size == "none" or not row.runs:
        return None
    count = sum(parameter_count(run) for run in row.runs)
    if table.size == "mib":
        return fp32_mib(count)
    reference = DenseRun(dataset="nyuv2", model="single", task="segmentation")
    return count / parameter_count(reference)


def load_reference(table: TableSpec) -> pd.DataFrame:
    """The paper's printed numbers of ``table`` (tidy CSV: row, column, value as printed, decimals)."""
    if not table.reference.is_file():
        raise ConfigError(f"{table.paper} {table.table_id}: reference file {table.reference} is missing.")
    frame = pd.read_csv(table.reference, dtype={"value": str})
    for column in ("row", "column", "value", "decimals"):
        if column not in frame:
            raise ConfigError(f"{table.reference} lacks the column {column!r}.")
    return frame


def column_label(reference: pd.DataFrame, prefix: str) -> str | None:
    """The reference's column label starting with ``prefix`` (e.g. "Δm" → "Δm% ↓"), or None."""
    return next((c for c in dict.fromkeys(reference["column"]) if str(c).startswith(prefix)), None)


def _metric_columns(reference: pd.DataFrame) -> list[str]:
    return [c for c in dict.fromkeys(reference["column"]) if c in COLUMNS]


def _reproduced_values(table: TableSpec, row: RowSpec, runs_dir: Path, columns: list[str], profile: str
                       ) -> tuple[dict[str, float], dict[str, float], int]:
    """Mean and std (over seeds) of each column for one row, from its runs' results."""
    means, stds, seeds = {}, {}, 0
    for run in row.runs:
        summary, metrics = load_run(runs_dir / run.name)
        if summary.get("profile") != profile:
            raise ConfigError(f"run {run.name} was made with the {summary.get('profile')!r} profile, not {profile!r}: "
                              "run `dvc repro` to bring it up to date.")
        last_k = table.last_k or summary["last_k"]
        reduced = summarise_run(metrics, last_k)
        seeds = int(reduced["seeds"].max())
        for column in columns:
            task, metric, factor = COLUMNS[column]
            if task not in run.tasks:
                continue
            reduction = table.evaluation.get(task, "global")
            match = reduced[(reduced["task"] == task) & (reduced["metric"] == metric) & (reduced["reduction"] == reduction)]
            if len(match) != 1:
                raise ConfigError(f"run {run.name} has no {task}/{metric} ({reduction}) in its metrics.")
            means[column] = float(match["mean"].iloc[0]) * factor
            stds[column] = float(match["std"].iloc[0]) * factor
    return means, stds, seeds


def _delta(table: TableSpec, columns: list[str], values: Mapping[str, float], baseline: Mapping[str, float]) -> float:
    usable = [c for c in columns if c in values and c in baseline]
    if not usable or len(usable) != len(columns):
        return math.nan
    metrics = [COLUMNS[c][1] for c in usable]
    groups = None
    if table.delta_convention == "per_task":
        tasks = list(dict.fromkeys(COLUMNS[c][0] for c in usable))
        groups = [[i for i, c in enumerate(usable) if COLUMNS[c][0] == task] for task in tasks]
    value = delta_m([values[c] for c in usable], [baseline[c] for c in usable],
                    [HIGHER_IS_BETTER[m] for m in metrics], groups=groups)
    return -value if table.delta_printed == "improvement" else value


def reproduce_table(table: TableSpec, runs_dir: str | Path, profile: str,
                    reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """The table, two lines per row — the paper's numbers and ours — as a tidy frame.

    Columns: ``row``, ``source`` (``paper`` | ``reproduced``), ``status``, one column per metric of
    the paper's table, ``Δm`` (in the paper's convention and sign), ``#P`` and ``seeds``.
    Values are floats (NaN where there is nothing); :func:`format_table` prints them.
    """
    runs_dir = Path(runs_dir)
    reference = load_reference(table) if reference is None else reference
    columns = _metric_columns(reference)
    delta_label, size_label = column_label(reference, "Δm"), column_label(reference, "#P")
    reproduced = {row.label: _reproduced_values(table, row, runs_dir, columns, profile)
                  for row in table.rows if row.runs}
    if table.baseline not in reproduced:
        raise ConfigError(f"{table.paper} {table.table_id}: the baseline row {table.baseline!r} has no runs.")
    baseline_values = reproduced[table.baseline][0]
    records = []
    for row in table.rows:
        printed = reference[reference["row"] == row.label]
        if printed.empty:
            raise ConfigError(f"{table.reference} has no row {row.label!r} (rows: {sorted(set(reference['row']))}).")
        paper = {"row": row.label, "source": "paper", "status": row.status}
        for _, cell in printed.iterrows():
            paper[cell["column"]] = cell["value"]
        records.append(paper)
        ours: dict[str, Any] = {"row": row.label, "source": "reproduced", "status": row.status}
        if row.label in reproduced:
            means, stds, seeds = reproduced[row.label]
            ours.update(means)
            ours["seeds"] = seeds
            if row.label != table.baseline and delta_label:
                ours[delta_label] = _delta(table, columns, means, baseline_values)
            ours.update({f"{c} std": s for c, s in stds.items()})
        if size_label:
            ours[size_label] = _size(table, row)
        records.append(ours)
    frame = pd.DataFrame.from_records(records)
    ordered = ["row", "source", "status", *columns, *(c for c in (delta_label, size_label) if c), "seeds"]
    rest = [c for c in frame.columns if c not in ordered]
    return frame.reindex(columns=[*ordered, *rest])


def format_table(table: TableSpec, frame: pd.DataFrame, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """Printable strings: reproduced values with the paper's decimals, '–' where nothing, std hidden."""
    reference = load_reference(table) if reference is None else reference
    decimals = {c: int(d) for c, d in reference.groupby("column")["decimals"].max().fillna(2).items()}
    shown = frame[[c for c in frame.columns if not c.endswith(" std")]].copy()
    for column in shown.columns:
        if column in ("row", "source", "status"):
            continue
        places = decimals.get(column, 2)
        if column == "seeds":
            shown[column] = ["" if _missing(v) else str(int(v)) for v in shown[column]]
            continue
        out = []
        for source, value in zip(shown["source"], shown[column]):
            if source == "paper":
                out.append("" if _missing(value) else str(value))
            elif _missing(value):
                out.append("–")
            else:
                out.append(f"{float(value):.{max(places, 2)}f}")
        shown[column] = out
    return shown


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
