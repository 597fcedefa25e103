"""DR-MGF Fig. 3 / Appendix A: several optimizers on the two-task toy network, from the same starts.

The toy network (:class:`~deconflict.models.DRMGFToy`) shares two filters between two tasks
whose optima, θ_1* = −[c_1, c_1] and θ_2* = +[c_1, c_1], conflict. Every method starts from the
same seeded initial points and trains with plain SGD; the trajectories of θ_1, θ_2 and the losses
are recorded at every step. The paper claims (Sec. 1 and Fig. 3) that PCGrad, CAGrad and Nash-MTL
fail to reach the optimum of both tasks while DR-MGF does; :func:`summarise` measures it.

DR-MGF itself (:class:`~deconflict.methods.drmgf.DRMGFUpdate`) is a training procedure, not a gradient
method: its routes act on the two shared filters w_1, w_2 (each a 2-vector: one filter of one
connection, ν_k ∈ ℝ^{1×1} per filter and task), and one DR-MGF epoch is ``epoch_steps`` SGD steps per
task from the epoch's weights, then ``epoch_steps`` fusion steps. Its trajectory is recorded after every
epoch, at the step count of the loop (the fusion steps), so its curve has (K + 1) = 3 times the gradient
evaluations of the others' at the same step.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from deconflict import optim
from deconflict.errors import ConfigError, DatasetNotFoundError, SolverWarning
from deconflict.experiments.runs import run_key
from deconflict.models.toy import TOY_PARAMETER_NAMES, DRMGFToy, toy_objective, toy_task_optima
from deconflict.train import Callback, StepOutput, TrainConfig, Trainer

__all__ = [
    "NOT_IMPLEMENTED",
    "ToyMethod",
    "ToySettings",
    "TrajectoryRecorder",
    "load_toy_results",
    "paper_claims",
    "run_toy",
    "sample_inits",
    "summarise",
    "summary_vs_paper",
]

#: methods the paper makes a claim about that this comparison does not run (none since DR-MGF runs)
NOT_IMPLEMENTED: dict[str, str] = {}
#: the papers' training procedures a toy method may name, with the options the toy fixes
TOY_PROCEDURES = {"drmgf": {"routed": ["w1", "w2"]}}
TABLE_COLUMNS = (
    "Method",
    "Paper: reaches both optima",
    "Reproduced: reaches both optima",
    "f1 - f*",
    "f2 - f*",
    "max dist to optimum",
    "steps to tol (median)",
    "solver fallbacks",
)
TRAJECTORY_COLUMNS = ["method", "init", "step", "theta1_x", "theta1_y", "theta2_x", "theta2_y", "f1", "f2"]


@dataclass(frozen=True)
class ToyMethod:
    """One curve of the figure: a registered method, its label and hyperparameters."""

    name: str
    label: str
    hparams: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_params(cls, entry: dict[str, Any]) -> ToyMethod:
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"each toy method needs at least a 'name', got {entry!r}.")
        hparams = dict(entry.get("hparams", {}))
        if entry["name"] in TOY_PROCEDURES:
            epoch_steps = hparams.get("epoch_steps")
            if not isinstance(epoch_steps, int) or epoch_steps < 1:
                raise ConfigError(f"toy method {entry['name']!r} needs hparams.epoch_steps, an integer ≥ 1.")
            _procedure(entry["name"], hparams)  # invalid options fail here, before any training
            return cls(name=entry["name"], label=str(entry.get("label", entry["name"])), hparams=hparams)
        name = optim.canonical_name(entry["name"])  # unknown names fail here, before any training
        optim.get(name, **hparams)  # and invalid hyperparameters too
        return cls(name=name, label=str(entry.get("label", name)), hparams=hparams)

    @property
    def is_procedure(self) -> bool:
        return self.name in TOY_PROCEDURES


def _procedure(name: str, hparams: dict[str, Any]) -> Any:
    """The update rule of a toy procedure (its ``epoch_steps`` is the toy's, not the rule's)."""
    from deconflict.methods.drmgf import DRMGFUpdate

    options = {key: value for key, value in hparams.items() if key != "epoch_steps"}
    return DRMGFUpdate(**TOY_PROCEDURES[name], **options)


@dataclass(frozen=True)
class ToySettings:
    """The settings of the whole comparison (one paper params section, profile resolved)."""

    methods: tuple[ToyMethod, ...]
    steps: int
    n_inits: int
    lr: float
    c1: float = 8.0
    c2: float = 0.4
    init_low: float = -1.0
    init_high: float = 1.0
    tolerance: float = 1e-2
    seed: int = 0

    @classmethod
    def from_params(cls, section: dict[str, Any], seed: int) -> ToySettings:
        known = {"methods", "steps", "n_inits", "lr", "c1", "c2", "init_low", "init_high", "tolerance"}
        unknown = set(section) - known
        if unknown:
            raise ConfigError(f"unknown toy parameter(s) {sorted(unknown)}; known: {sorted(known)}.")
        missing = {"methods", "steps", "n_inits", "lr"} - set(section)
        if missing:
            raise ConfigError(f"toy parameters are missing {sorted(missing)}.")
        settings = cls(
            methods=tuple(ToyMethod.from_params(m) for m in section["methods"]),
            **{k: v for k, v in section.items() if k != "methods"},
            seed=seed,
        )
        if settings.steps < 1 or settings.n_inits < 1 or not settings.lr > 0:
            raise ConfigError(f"toy needs steps ≥ 1, n_inits ≥ 1 and lr > 0, got {settings}.")
        if not settings.init_low < settings.init_high:
            raise ConfigError("toy init_low must be below init_high.")
        return settings


def sample_inits(n: int, seed: int, low: float = -1.0, high: float = 1.0) -> list[dict[str, list[float]]]:
    """``n`` initial points, each weight uniform in [low, high)², from a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    inits = []
    for _ in range(n):
        values = low + (high - low) * torch.rand(len(TOY_PARAMETER_NAMES), 2, generator=generator, dtype=torch.float64)
        inits.append({name: values[i].tolist() for i, name in enumerate(TOY_PARAMETER_NAMES)})
    return inits


class TrajectoryRecorder(Callback):
    """Records θ_1, θ_2, f_1 and f_2 at the start and after every step (``per_epoch``: after every epoch,
    for procedures whose model changes at the end of an epoch)."""

    def __init__(self, c1: float, c2: float, per_epoch: bool = False) -> None:
        self.c1, self.c2, self.per_epoch = c1, c2, per_epoch
        self.rows: list[list[float]] = []

    def _record(self, model: DRMGFToy, step: int) -> None:
        with torch.no_grad():
            outputs = model(None)
            losses = toy_objective(outputs, self.c1, self.c2)
        self.rows.append([step, *outputs["task1"].tolist(), *outputs["task2"].tolist(), *losses.tolist()])

    def on_fit_start(self, trainer: Trainer) -> None:
        if not self.rows:
            self._record(trainer.model, 0)

    def on_step_end(self, trainer: Trainer, output: StepOutput) -> None:
        if not self.per_epoch:
            self._record(trainer.model, output.step)

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        if self.per_epoch:
            self._record(trainer.model, trainer.step)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = [list(row) for row in state["rows"]]


def run_toy(
    method: ToyMethod, init: dict[str, list[float]], settings: ToySettings, run_dir: Path | None = None
) -> tuple[pd.DataFrame, int]:
    """Train the toy network from ``init`` with ``method``; return its trajectory and solver fallbacks.

    With a ``run_dir`` the run checkpoints every 100 steps and resumes from there if killed.
    """
    model = DRMGFToy(init)
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr)
    if method.is_procedure:
        torch.manual_seed(settings.seed)  # the routes' initialisation
        built, rule = None, _procedure(method.name, method.hparams)
        chunk = int(method.hparams["epoch_steps"])
    else:
        built, rule = optim.get(method.name, **method.hparams), None
        chunk = 100 if settings.steps % 100 == 0 else settings.steps
    if settings.steps % chunk:
        raise ConfigError(f"toy steps ({settings.steps}) must be a multiple of {method.label}'s epoch ({chunk} steps).")
    recorder = TrajectoryRecorder(settings.c1, settings.c2, per_epoch=rule is not None)
    trainer = Trainer(
        model,
        lambda outputs, _targets: toy_objective(outputs, settings.c1, settings.c2),
        optimizer,
        weighting=built if built is not None and built.category == "weighting" else None,
        aggregator=built if built is not None and built.category == "aggregator" else None,
        update=rule,
        config=TrainConfig(
            epochs=settings.steps // chunk, steps_per_epoch=chunk, log_every=10, checkpoint_every=1, progress=False
        ),
        run_dir=run_dir,
        callbacks=[recorder],
        fingerprint={"init": init, "settings": repr(settings)},
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SolverWarning)
        trainer.fit(itertools.repeat((None, None)))
    for warning in caught:  # anything that is not a counted solver fallback is re-raised as a warning
        if not issubclass(warning.category, SolverWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    fallbacks = int(getattr(built, "failures", 0))
    frame = pd.DataFrame(recorder.rows, columns=TRAJECTORY_COLUMNS[2:])
    frame.insert(0, "init", 0)
    frame.insert(0, "method", method.label)
    frame["step"] = frame["step"].astype(int)
    return frame, fallbacks


def toy_run_key(method: ToyMethod, init_index: int, settings: ToySettings) -> str:
    """Folder name of one toy run: readable prefix + hash of everything that defines it."""
    return f"{method.name}-init{init_index}-" + run_key(
        {"method": method.name, "hparams": method.hparams, "init": init_index, "settings": repr(settings)}
    )


def summarise(
    trajectories: pd.DataFrame, fallbacks: dict[str, int], settings: ToySettings, labels: Sequence[str]
) -> pd.DataFrame:
    """Per method: final losses and distances to each task's optimum (mean over initial points),
    the first step at which both distances are below ``tolerance`` (median over starts that get
    there), and whether every start ends within tolerance of both optima."""
    optimum1, optimum2 = (o.numpy() for o in toy_task_optima(settings.c1))
    frame = trajectories.copy()
    frame["dist1"] = ((frame[["theta1_x", "theta1_y"]].to_numpy() - optimum1) ** 2).sum(1) ** 0.5
    frame["dist2"] = ((frame[["theta2_x", "theta2_y"]].to_numpy() - optimum2) ** 2).sum(1) ** 0.5
    frame["both"] = (frame["dist1"] < settings.tolerance) & (frame["dist2"] < settings.tolerance)
    rows = []
    for label in labels:
        runs = frame[frame["method"] == label]
        final = runs.sort_values("step").groupby("init").tail(1)
        reached = runs[runs["both"]].groupby("init")["step"].min()
        rows.append(
            {
                "method": label,
                "f1_final": final["f1"].mean(),
                "f2_final": final["f2"].mean(),
                "dist1_final": final["dist1"].mean(),
                "dist2_final": final["dist2"].mean(),
                "dist_max_final": final[["dist1", "dist2"]].to_numpy().max(),
                "reaches_both_optima": bool(final["both"].all()),
                "starts_reaching": int(final["both"].sum()),
                "starts": int(final.shape[0]),
                "median_steps_to_tolerance": float(reached.median()) if len(reached) else math.nan,
                "solver_fallbacks": int(fallbacks.get(label, 0)),
            }
        )
    return pd.DataFrame(rows)


def paper_claims(reference: pd.DataFrame) -> dict[str, bool]:
    """Method → whether the paper says it reaches both optima (the ``claim`` rows of the reference)."""
    claims = reference[(reference["kind"] == "claim") & (reference["column"] == "reaches both optima")]
    return {row: value == "True" for row, value in zip(claims["row"], claims["value"])}


def summary_vs_paper(summary: pd.DataFrame, reference: pd.DataFrame, f_star: float) -> pd.DataFrame:
    """The figure's table: the paper's claim beside what the reproduction measured, one row per method.

    Methods the paper makes a claim about that this comparison does not run get a row that says so
    instead of numbers.
    """
    claims = paper_claims(reference)
    rows = []
    for row in summary.itertuples():
        claim = claims.get(row.method)
        rows.append(
            {
                "Method": row.method,
                "Paper: reaches both optima": "not stated" if claim is None else ("yes" if claim else "no"),
                "Reproduced: reaches both optima": (
                    f"{'yes' if row.reaches_both_optima else 'no'} ({row.starts_reaching}/{row.starts})"
                ),
                "f1 - f*": f"{row.f1_final - f_star:.3f}",
                "f2 - f*": f"{row.f2_final - f_star:.3f}",
                "max dist to optimum": f"{row.dist_max_final:.3f}",
                "steps to tol (median)": "never"
                if math.isnan(row.median_steps_to_tolerance)
                else f"{row.median_steps_to_tolerance:.0f}",
                "solver fallbacks": str(row.solver_fallbacks),
            }
        )
    for method, claim in claims.items():
        if method not in set(summary["method"]):
            rows.append(
                {
                    "Method": method,
                    "Paper: reaches both optima": "yes" if claim else "no",
                    "Reproduced: reaches both optima": NOT_IMPLEMENTED.get(method, "not run in this comparison"),
                    **{column: "—" for column in TABLE_COLUMNS[3:]},
                }
            )
    return pd.DataFrame(rows)


def load_toy_results(results_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Read what the toy stage wrote: (trajectories, summary, meta). A clear error if it has not run."""
    from deconflict.io import read_json

    results_dir = Path(results_dir)
    needed = [results_dir / name for name in ("trajectories.csv", "summary.csv", "meta.json")]
    missing = [str(path) for path in needed if not path.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"toy results not found ({', '.join(missing)}). Produce them with `dvc repro` at the "
            "repository root (or `dvc repro papers/drmgf/dvc.yaml`)."
        )
    return pd.read_csv(needed[0]), pd.read_csv(needed[1]), read_json(needed[2])
