"""The papers' tables of training runs: which runs each row needs, and the table beside the paper's.

A paper's ``params.yaml`` declares every table and figure it renders under ``tables``; the ones of
kind ``run_table`` put training runs beside the paper's printed numbers::

    tables:
      table6_nyuv2:                          # the notebook and output folder of this table
        kind: run_table
        title: "Table 6 — NYUv2, SegNet-MTAN"
        reference: reference/table6.csv      # the paper's printed numbers (deconflict.experiments.reference)
        input: ../../pipelines/runs          # what the render stage depends on
        dataset: nyuv2
        run: {model: mtan}                   # what every row's run shares (a RunSpec's fields)
        baseline: Independent                # the Δm reference row
        size: relative                       # "#P": relative | mib | none
        size_reference: {model: single, task: segmentation}   # the unit of "relative"
        delta_m: {convention: flat, printed: degradation}
        last_k: 10                           # the reporting window (mean of the last epochs)
        rows:
          Independent: {model: single}       # the family's single-task model: one run per task
          Cagrad [26]: {method: cagrad, hparams: {c: 0.4}}
          DR-MGF: {later: "DR-MGF (issue on the paper's own methods)"}
          Rotograd [21]: {not_run: "why"}
          DR-MGF (official code): {extra: "why", drmgf: {settings: nyuv2_code}}   # a row the paper does not print

The metric columns are found from the dataset's tasks (each task's printed column labels,
:class:`~deconflict.tasks.MetricColumn`); ``columns: {label: {task: …, metric: …, scale: …}}`` adds
others. The paper's ``evaluation`` section says which averaging each task's numbers used and the Δm
convention; a table's own ``evaluation`` overrides it. :func:`plan_runs` collects the runs of every
table of every paper, once each (``pipelines/runs.yaml`` is generated from it); :func:`reproduce_table`
puts the runs' results beside the paper's numbers, with Δm in the paper's convention and #P computed
from the models.
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

from deconflict.config import load_yaml, paper_tables, reject_unknown
from deconflict.errors import ConfigError
from deconflict.experiments.families import family_of
from deconflict.experiments.reference import load_reference
from deconflict.experiments.runner import fp32_mib, load_run, summarise_run
from deconflict.experiments.spec import RunSpec, dataset_tasks
from deconflict.experiments.surgery import shaped_model
from deconflict.io import read_json
from deconflict.metrics import delta_m

__all__ = [
    "DELTA_CONVENTIONS",
    "ROW_KINDS",
    "ColumnSpec",
    "RowSpec",
    "RunTable",
    "column_label",
    "format_table",
    "load_run_table",
    "load_run_tables",
    "paper_tables",
    "parameter_count",
    "plan_runs",
    "reproduce_table",
]

RUN_TABLE = "run_table"
SIZES = ("relative", "mib", "none")
DELTA_CONVENTIONS = ("flat", "per_task")
TABLE_KEYS = (
    "kind",
    "title",
    "reference",
    "input",
    "dataset",
    "run",
    "baseline",
    "size",
    "size_reference",
    "delta_m",
    "last_k",
    "evaluation",
    "columns",
    "rows",
)


@dataclass(frozen=True)
class ColumnSpec:
    """A printed metric column: which task's metric it shows, and how (scale, direction)."""

    label: str
    task: str
    metric: str
    scale: float = 1.0
    higher_is_better: bool = True


@dataclass(frozen=True)
class RowSpec:
    """One row of a table: the runs it needs, or why it has none here."""

    label: str
    runs: tuple[RunSpec, ...] = ()
    later: str | None = None  # the paper's own method: comes with a later issue
    not_run: str | None = None  # a baseline this project does not run, and why
    extra: str | None = None  # a row the paper does not print (e.g. another implementation's settings), and why

    @property
    def status(self) -> str:
        """``reproduced``, ``later`` (the paper's own method, a later issue) or ``not run``."""
        return "later" if self.later else "not run" if self.not_run else "reproduced"

    @property
    def reason(self) -> str:
        return self.later or self.not_run or self.extra or ""


@dataclass(frozen=True)
class RunTable:
    """A paper's table of training runs as its params declare it (see the module docstring)."""

    paper: str
    table_id: str
    title: str
    reference: Path
    dataset: str
    baseline: str
    rows: tuple[RowSpec, ...]
    columns: Mapping[str, ColumnSpec]
    size: str = "none"
    size_reference: RunSpec | None = None
    delta_convention: str = "flat"
    delta_printed: str = "degradation"
    last_k: int | None = None
    evaluation: Mapping[str, str] = field(default_factory=dict)

    @property
    def runs(self) -> list[RunSpec]:
        return [run for row in self.rows for run in row.runs]

    def row(self, label: str) -> RowSpec:
        for row in self.rows:
            if row.label == label:
                return row
        raise ConfigError(f"{self.paper} {self.table_id}: no row {label!r}.")

    def reduction(self, task: str) -> str:
        """The averaging of ``task``'s metrics that the paper's numbers used (default ``global``)."""
        return self.evaluation.get(task, "global")


def _row(label: str, spec: Mapping[str, Any] | None, defaults: Mapping[str, Any], dataset: str, where: str) -> RowSpec:
    spec = dict(spec or {})
    if "later" in spec or "not_run" in spec:
        return RowSpec(label, later=spec.get("later"), not_run=spec.get("not_run"))
    extra = spec.pop("extra", None)
    merged = {**defaults, **spec, "dataset": dataset}
    merged["hparams"] = {**dict(defaults.get("hparams") or {}), **dict(spec.get("hparams") or {})}
    try:
        if merged.get("model") == family_of(dataset).single_task_model:  # one single-task run per task
            keep = {k: v for k, v in merged.items() if k not in ("method", "hparams", "level", "model_options")}
            runs = tuple(RunSpec.from_dict({**keep, "task": task.name}) for task in dataset_tasks(dataset))
        else:
            runs = (RunSpec.from_dict(merged),)
    except ConfigError as error:
        raise ConfigError(f"{where}, row {label!r}: {error}") from None
    return RowSpec(label, runs=runs, extra=None if extra is None else str(extra))


def _columns(dataset: str, overrides: Mapping[str, Any], where: str) -> dict[str, ColumnSpec]:
    columns = {}
    for task in dataset_tasks(dataset):
        for metric in task.metrics:
            if metric.label:
                columns[metric.label] = ColumnSpec(
                    metric.label, task.name, metric.key, metric.scale, metric.higher_is_better
                )
    for label, spec in (overrides or {}).items():
        if not isinstance(spec, dict) or not {"task", "metric"} <= set(spec):
            raise ConfigError(f"{where}: column {label!r} needs task and metric (and optionally scale).")
        task = next((t for t in dataset_tasks(dataset) if t.name == spec["task"]), None)
        if task is None:
            raise ConfigError(f"{where}: column {label!r}: {dataset} has no task {spec['task']!r}.")
        metric = task.column(spec["metric"])
        columns[label] = ColumnSpec(
            label, task.name, metric.key, float(spec.get("scale", 1.0)), metric.higher_is_better
        )
    return columns


def load_run_table(
    params_path: str | Path, table_id: str, section: Mapping[str, Any], evaluation: Mapping[str, Any]
) -> RunTable:
    """One ``run_table`` declaration, checked (every row's run is a valid :class:`RunSpec`)."""
    params_path = Path(params_path)
    where = f"{params_path} tables.{table_id}"
    reject_unknown(section, TABLE_KEYS, f"{where} key")
    missing = {"reference", "dataset", "baseline", "rows"} - set(section)
    if missing:
        raise ConfigError(f"{where}: missing {sorted(missing)}.")
    dataset = section["dataset"]
    size = section.get("size", "none")
    if size not in SIZES:
        raise ConfigError(f"{where}: size must be one of {', '.join(SIZES)}, got {size!r}.")
    size_reference = None
    if size == "relative":
        if "size_reference" not in section:
            raise ConfigError(f"{where}: size: relative needs size_reference (the run whose size is 1).")
        size_reference = RunSpec.from_dict({**section["size_reference"], "dataset": dataset})
    delta = dict(section.get("delta_m") or {})
    convention = delta.get("convention", evaluation.get("delta_m", "flat"))
    if convention not in DELTA_CONVENTIONS:
        raise ConfigError(
            f"{where}: delta_m convention must be one of {', '.join(DELTA_CONVENTIONS)}, got {convention!r}."
        )
    rows = tuple(_row(label, spec, section.get("run") or {}, dataset, where) for label, spec in section["rows"].items())
    if section["baseline"] not in {row.label for row in rows}:
        raise ConfigError(f"{where}: the baseline {section['baseline']!r} is not one of the rows.")
    task_names = {task.name for task in dataset_tasks(dataset)}
    reductions = {**{k: v for k, v in evaluation.items() if k in task_names}, **dict(section.get("evaluation") or {})}
    return RunTable(
        paper=params_path.parent.name,
        table_id=table_id,
        title=section.get("title", table_id),
        reference=params_path.parent / section["reference"],
        dataset=dataset,
        baseline=section["baseline"],
        rows=rows,
        columns=_columns(dataset, section.get("columns") or {}, where),
        size=size,
        size_reference=size_reference,
        delta_convention=convention,
        delta_printed=delta.get("printed", "degradation"),
        last_k=section.get("last_k"),
        evaluation=reductions,
    )


#: kinds of table whose rows are training runs, with the keys of their own beyond a run table's:
#: the run plan collects the runs of every table of these kinds (a plugin's kind adds itself here)
ROW_KINDS: dict[str, tuple[str, ...]] = {
    RUN_TABLE: (),
    "conflict_distribution": ("bins",),  # Recon's cosine distributions (deconflict.reporting.conflict_tables)
    "conflict_incidence": (),  # sparse training's incidence of conflict
    "sparsity_sweep": (),  # sparse training's Fig. 5(b): a run table drawn against % trainable
    "priority_trends": ("window",),  # the task-priority paper's Figs. 3 and 4 (connection-strength runs)
    "loss_curves": (),  # training-loss curves of each row's run (DR-MGF Fig. 13(b))
    "run_scatter": (),  # a run table's rows as Δm against #P (DR-MGF Fig. 1(b))
    "route_pruning": (),  # DR-MGF Fig. 14(a): pruning by the learned importance (DR-MGF runs)
    "conflict_gain": (),  # DR-MGF Fig. 5's Pearson r of C and G in the runs' conflict tables
}


def load_run_tables(params_path: str | Path) -> list[RunTable]:
    """Every table of one paper's params file whose rows are runs (:data:`ROW_KINDS`), as a run table."""
    evaluation = dict(load_yaml(params_path).get("evaluation") or {})
    return [
        load_run_table(
            params_path,
            table_id,
            {key: value for key, value in section.items() if key not in ROW_KINDS[section["kind"]]},
            evaluation,
        )
        for table_id, section in paper_tables(params_path).items()
        if section["kind"] in ROW_KINDS
    ]


def plan_runs(params_paths: Iterable[str | Path]) -> dict[str, dict[str, Any]]:
    """Every run any table needs, keyed by run name, each once (sorted by name)."""
    plan: dict[str, dict[str, Any]] = {}
    for path in params_paths:
        for table in load_run_tables(path):
            for run in table.runs:
                plan[run.name] = run.to_dict()
    return dict(sorted(plan.items()))


@functools.cache
def parameter_count(run: RunSpec, recon_layers: tuple[str, ...] = ()) -> int:
    """Parameters of the run's model at the papers' size (built on the meta device: no memory); with
    ``recon_layers``, of the model Recon branched them in; with connection strength, with its
    task-specific BNs."""
    with torch.device("meta"):
        model = shaped_model(run, run.build_model(), recon_layers)
    return sum(p.numel() for p in model.parameters())


def branched_layers(run: RunSpec, runs_dir: Path) -> tuple[str, ...]:
    """The layers a Recon run branched (from its summary; empty for other runs or before it ran)."""
    if run.recon is None or not (runs_dir / run.name / "summary.json").is_file():
        return ()
    surgery = read_json(runs_dir / run.name / "summary.json").get("surgery") or {}
    first = next(iter(surgery.values()), {})
    return tuple(first.get("recon", {}).get("layers", ()))


def _size(table: RunTable, row: RowSpec, runs_dir: Path) -> float | None:
    if table.size == "none" or not row.runs:
        return None
    if any(run.recon is not None and not branched_layers(run, runs_dir) for run in row.runs):
        return None  # a Recon run's size depends on the layers it branched: known once it ran
    count = sum(parameter_count(run, branched_layers(run, runs_dir)) for run in row.runs)
    if table.size == "mib":
        return fp32_mib(count)
    return count / parameter_count(table.size_reference)


def column_label(reference: pd.DataFrame, prefix: str) -> str | None:
    """The reference's column label starting with ``prefix`` (e.g. "Δm" → "Δm% ↓"), or None."""
    return next((c for c in dict.fromkeys(reference["column"]) if str(c).startswith(prefix)), None)


def _metric_columns(table: RunTable, reference: pd.DataFrame) -> list[str]:
    return [c for c in dict.fromkeys(reference["column"]) if c in table.columns]


def _reproduced_values(
    table: RunTable, row: RowSpec, runs_dir: Path, columns: list[str], profile: str
) -> tuple[dict[str, float], dict[str, float], int]:
    """Mean and std (over seeds) of each column for one row, from its runs' results."""
    means, stds, seeds = {}, {}, 0
    for run in row.runs:
        summary, metrics = load_run(runs_dir / run.name)
        if summary.get("profile") != profile:
            raise ConfigError(
                f"run {run.name} was made with the {summary.get('profile')!r} profile, not {profile!r}: "
                "run `dvc repro` to bring it up to date."
            )
        reduced = summarise_run(metrics, table.last_k or summary["last_k"])
        seeds = int(reduced["seeds"].max())
        run_tasks = {task.name for task in run.tasks}
        for column in columns:
            spec = table.columns[column]
            if spec.task not in run_tasks:
                continue
            reduction = table.reduction(spec.task)
            match = reduced[
                (reduced["task"] == spec.task)
                & (reduced["metric"] == spec.metric)
                & (reduced["reduction"] == reduction)
            ]
            if len(match) != 1:
                raise ConfigError(f"run {run.name} has no {spec.task}/{spec.metric} ({reduction}) in its metrics.")
            means[column] = float(match["mean"].iloc[0]) * spec.scale
            stds[column] = float(match["std"].iloc[0]) * spec.scale
    return means, stds, seeds


def _delta(table: RunTable, columns: list[str], values: Mapping[str, float], baseline: Mapping[str, float]) -> float:
    usable = [c for c in columns if c in values and c in baseline]
    if not usable or len(usable) != len(columns):
        return math.nan
    groups = None
    if table.delta_convention == "per_task":
        tasks = list(dict.fromkeys(table.columns[c].task for c in usable))
        groups = [[i for i, c in enumerate(usable) if table.columns[c].task == task] for task in tasks]
    value = delta_m(
        [values[c] for c in usable],
        [baseline[c] for c in usable],
        [table.columns[c].higher_is_better for c in usable],
        groups=groups,
    )
    return -value if table.delta_printed == "improvement" else value


def reproduce_table(
    table: RunTable, runs_dir: str | Path, profile: str, reference: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The table, two lines per row — the paper's numbers and ours — as a tidy frame.

    Columns: ``row``, ``source`` (``paper`` | ``reproduced``), ``status``, one column per metric of
    the paper's table, ``Δm`` (in the paper's convention and sign), ``#P`` and ``seeds``.
    Values are floats (NaN where there is nothing); :func:`format_table` prints them.
    """
    runs_dir = Path(runs_dir)
    reference = load_reference(table.reference) if reference is None else reference
    columns = _metric_columns(table, reference)
    delta_label, size_label = column_label(reference, "Δm"), column_label(reference, "#P")
    reproduced = {
        row.label: _reproduced_values(table, row, runs_dir, columns, profile) for row in table.rows if row.runs
    }
    if table.baseline not in reproduced:
        raise ConfigError(f"{table.paper} {table.table_id}: the baseline row {table.baseline!r} has no runs.")
    baseline_values = reproduced[table.baseline][0]
    records = []
    for row in table.rows:
        printed = reference[reference["row"] == row.label]
        if printed.empty and not row.extra:
            raise ConfigError(f"{table.reference} has no row {row.label!r} (rows: {sorted(set(reference['row']))}).")
        # a row the paper does not print (extra) has no paper line to fill: say so instead of a status
        paper = {"row": row.label, "source": "paper", "status": "not printed" if printed.empty else row.status}
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
            ours[size_label] = _size(table, row, runs_dir)
        records.append(ours)
    frame = pd.DataFrame.from_records(records)
    ordered = ["row", "source", "status", *columns, *(c for c in (delta_label, size_label) if c), "seeds"]
    rest = [c for c in frame.columns if c not in ordered]
    return frame.reindex(columns=[*ordered, *rest])


def format_table(frame: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Printable strings: reproduced values with the paper's decimals, '–' where nothing, std hidden."""
    decimals = {
        c: int(float(d)) for c, d in reference[reference["decimals"] != ""].groupby("column")["decimals"].max().items()
    }
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
