"""What defines a training run, independent of the profile (which sets sizes, lengths and seeds).

A :class:`RunSpec` names a dataset, a model, a method with its hyperparameters, the level and
parameter split it acts on, and the learning rate. Its :attr:`~RunSpec.name` is the key every
table uses, so a run needed by several papers' tables is trained once. Names and options are
checked against the registries (datasets, models, methods, families) when a spec is built, so a
typo in a params file fails before any training starts.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from deconflict import data, models, optim
from deconflict.config import reject_unknown
from deconflict.errors import ConfigError
from deconflict.experiments.families import Family, family_of
from deconflict.experiments.surgery import (
    FUSION_PROCEDURES,
    ReconOptions,
    SparseOptions,
    StrengthOptions,
    freeze,
    fusion_rule,
    thaw,
)
from deconflict.tasks import Task
from deconflict.train import TrainConfig, check_weights_task_gradients

__all__ = ["RunSpec", "dataset_tasks", "model_options_of"]

#: options a model takes from the profile's settings (not part of what defines a run)
PROFILE_MODEL_OPTIONS = ("width",)
#: the papers' methods as run options (a mapping of their own options, or absent), with their label in run names
OPTION_FIELDS = {"recon": "recon", "sparse": "st", "strength": "cs", "drmgf": "drmgf", "metagf": "metagf"}


def _format_number(value: Any) -> str:
    """A number as it can appear in a run name and a DVC params path (no dot: 0.4 → 0p4)."""
    text = format(value, "g") if isinstance(value, float) else str(value)
    return text.replace(".", "p")


def _flat_items(options: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """A nested mapping's leaves as (key_path, value), sorted: {scan: {dataset: x}} → [("scan_dataset", x)]."""
    items = []
    for key in sorted(options):
        value = options[key]
        if isinstance(value, Mapping):
            items += _flat_items(value, f"{prefix}{key}_")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def dataset_tasks(dataset: str) -> tuple[Task, ...]:
    """The tasks of a registered dataset (unknown names list the valid ones)."""
    return data.DATASETS[dataset].tasks()


def model_options_of(model: str) -> list[str]:
    """The keyword options of a registered model's constructor, other than its tasks."""
    signature = inspect.signature(models.MODELS[model])
    return [
        name
        for name, p in signature.parameters.items()
        if name not in ("self", "tasks") and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


@dataclass(frozen=True)
class RunSpec:
    """What defines a run (the profile decides sizes, lengths and seeds: :class:`TrainingSettings`).

    Attributes:
        dataset: a registered dataset (``deconflict.data.available()``); it decides the family.
        model: a registered model of the family (``deconflict.models.available()``).
        task: the task of a single-task model (the family's ``single_task_model``).
        method: a registered :mod:`deconflict.optim` method (``equal`` = joint training).
        hparams: the method's hyperparameters (e.g. CAGrad's ``c``).
        level: ``parameter`` or ``feature`` (where the method takes per-task gradients).
        lr: the optimizer's initial learning rate at full scale (None: the family's default).
        model_options: constructor options of the model that define the run (e.g. ``{"stitch": "mtan_code"}``).
        shared: ``model`` (the model's split: CAGrad / Recon / DR-MGF code) or ``all_but_heads``
            (the Nash-MTL / FAMO code) — see :class:`~deconflict.train.TrainConfig`.
        head_gradients: ``own`` or ``weighted`` (heads scaled by the aggregator's weights, as the
            Nash-MTL / FAMO code's Σ α_t L_t does).
        recon: Recon's options (:class:`~deconflict.experiments.surgery.ReconOptions`; ``{}``: the
            paper's), or None. Set: the run trains with the layers its scan chose turned task-specific.
        sparse: sparse training's options (:class:`~deconflict.experiments.surgery.SparseOptions`, e.g.
            ``{k: 2000}``), or None. Set: the run trains with a fixed PSN mask on the shared weights.
        strength: connection strength's options (:class:`~deconflict.experiments.surgery.StrengthOptions`;
            ``{}``: the paper's), or None. Set: task-specific BN and the two-phase update replace the
            method (which must be ``equal``).
        drmgf, metagf: DR-MGF's / Meta-GF's options (the keyword options of
            :class:`~deconflict.methods.drmgf.DRMGFUpdate` / :class:`~deconflict.methods.metagf.MetaGFUpdate`;
            ``{}``: the paper's), or None. Set: the disentangle-and-fuse procedure replaces the method
            (which must be ``equal``).
    """

    dataset: str
    model: str
    task: str | None = None
    method: str = "equal"
    hparams: tuple[tuple[str, Any], ...] = ()
    level: str = "parameter"
    lr: float | None = None
    model_options: tuple[tuple[str, Any], ...] = ()
    shared: str = "model"
    head_gradients: str = "own"
    recon: tuple[tuple[str, Any], ...] | None = None
    sparse: tuple[tuple[str, Any], ...] | None = None
    strength: tuple[tuple[str, Any], ...] | None = None
    drmgf: tuple[tuple[str, Any], ...] | None = None
    metagf: tuple[tuple[str, Any], ...] | None = None

    def __post_init__(self) -> None:
        family = self.family
        if self.dataset not in data.DATASETS:
            raise ConfigError(f"dataset {self.dataset!r} of family {family.name!r} is not registered.")
        if self.model not in family.models:
            raise ConfigError(f"unknown {family.name} model {self.model!r}; the models are {', '.join(family.models)}.")
        single = self.model == family.single_task_model
        if single != (self.task is not None):
            raise ConfigError(
                f"a {family.single_task_model!r} model needs task: <one task>; the multi-task models take no task."
            )
        names = [task.name for task in dataset_tasks(self.dataset)]
        if self.task is not None and self.task not in names:
            raise ConfigError(f"{self.dataset} has no task {self.task!r}; its tasks are {', '.join(names)}.")
        if self.lr is not None and (not isinstance(self.lr, (int, float)) or not 0 < self.lr < 1):
            raise ConfigError(f"lr must be a number in (0, 1), got {self.lr!r}.")
        if self.lr is not None and float(self.lr) == family.default_lr:  # one spelling per definition
            object.__setattr__(self, "lr", None)
        allowed = [o for o in model_options_of(self.model) if o not in PROFILE_MODEL_OPTIONS]
        unknown = [key for key, _ in self.model_options if key not in allowed]
        if unknown:
            raise ConfigError(f"model {self.model!r} has no option(s) {unknown}; its options: {allowed or 'none'}.")
        method = optim.get(self.method, **dict(self.hparams))  # an unknown method or a bad hyperparameter fails here
        TrainConfig(level=self.level, shared=self.shared, head_gradients=self.head_gradients)  # valid values
        if self.head_gradients == "weighted":
            check_weights_task_gradients(method)
        if self.recon is not None:
            ReconOptions.parse(thaw(self.recon))
            if single or self.level != "parameter":
                raise ConfigError(
                    "Recon branches shared layers of a multi-task model and trains at parameter level: "
                    f"{self.name!r} is {'a single-task run' if single else 'a feature-level run'}."
                )
        if self.sparse is not None:
            SparseOptions.parse(thaw(self.sparse))
        if self.strength is not None:
            StrengthOptions.parse(thaw(self.strength))
            if single or self.level != "parameter" or self.method != "equal" or self.recon is not None:
                raise ConfigError(
                    "connection strength is its own update rule at parameter level on a multi-task model, "
                    f"without Recon: {self.name!r} needs method 'equal', level 'parameter' and no recon option."
                )
        procedures = [key for key in FUSION_PROCEDURES if getattr(self, key) is not None]
        for key in procedures:
            fusion_rule(key, thaw(getattr(self, key)))  # unknown or invalid options fail here
        if procedures and (
            single
            or self.level != "parameter"
            or self.method != "equal"
            or len(procedures) > 1
            or self.strength is not None
            or self.sparse is not None
        ):
            raise ConfigError(
                f"{' and '.join(procedures)} is a training procedure of its own at parameter level on a multi-task "
                f"model: {self.name!r} needs method 'equal', level 'parameter', one procedure and no strength or "
                "sparse option (a fixed mask does not survive the fusion of rescaled filters)."
            )

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> RunSpec:
        spec = dict(spec)
        reject_unknown(spec, [f.name for f in fields(cls)], "run setting")
        for key in ("hparams", "model_options"):
            spec[key] = tuple(sorted(dict(spec.get(key) or {}).items()))
        for key in OPTION_FIELDS:  # present (even empty: the method's defaults) or absent
            if key in spec:
                spec[key] = freeze(dict(spec[key] or {}))
        if spec.get("lr") is not None:
            spec["lr"] = float(spec["lr"])
        return cls(**spec)

    def to_dict(self) -> dict[str, Any]:
        """The fields that differ from their defaults (hparams and model options as mappings)."""
        out = asdict(self)
        out["hparams"] = dict(self.hparams)
        out["model_options"] = dict(self.model_options)
        defaults = {f.name: f.default for f in fields(self)}
        kept = {
            key: value
            for key, value in out.items()
            if key in ("dataset", "model") or value not in (defaults[key], {}, ())
        }
        for key in OPTION_FIELDS:
            if getattr(self, key) is not None:
                kept[key] = thaw(getattr(self, key)) or {}
        return kept

    # -- what follows from it -----------------------------------------------------------------
    @property
    def family(self) -> Family:
        return family_of(self.dataset)

    @property
    def learning_rate(self) -> float:
        """The initial learning rate at full scale: the run's, or its family's default."""
        return self.family.default_lr if self.lr is None else float(self.lr)

    @property
    def tasks(self) -> tuple[Task, ...]:
        """The tasks the run's model learns (one for a single-task model)."""
        return tuple(t for t in dataset_tasks(self.dataset) if self.task is None or t.name == self.task)

    @property
    def name(self) -> str:
        """A readable key, unique for each definition: e.g. ``nyuv2-mtan-cagrad-c0p4`` (c = 0.4)."""
        parts = [self.dataset, self.model.replace("_", "")]
        if self.task:
            parts.append(self.task)
        parts += [f"{key}_{_format_number(value)}" for key, value in self.model_options]
        if self.method != "equal" or self.model != self.family.single_task_model:
            parts.append(self.method.replace("_", ""))
        parts += [f"{key}{_format_number(value)}" for key, value in self.hparams]
        if self.level != "parameter":
            parts.append(self.level)
        if self.shared != "model":
            parts.append(self.shared.replace("_", ""))
        if self.head_gradients != "own":
            parts.append(f"heads{self.head_gradients}")
        if self.lr is not None:
            parts.append(f"lr{_format_number(self.lr)}")
        for key, label in OPTION_FIELDS.items():
            options = getattr(self, key)
            if options is not None:
                parts.append(label)
                parts += [f"{name}_{_format_number(value)}" for name, value in _flat_items(thaw(options))]
        return "-".join(parts)

    def build_model(self, **options: Any) -> models.MultiTaskModel:
        """The run's model, with the profile's ``options`` (e.g. ``width``) added to its own."""
        return models.get(self.model, tasks=self.tasks, **dict(self.model_options), **options)

    def build_method(self) -> optim.Method:
        return optim.get(self.method, **dict(self.hparams))
