"""The papers' changes to a run's model and update, as run options: Recon's branched layers, sparse
training's fixed mask and connection strength's task-specific BN and update rule
(:mod:`deconflict.methods.recon`, :mod:`deconflict.methods.sparse`,
:mod:`deconflict.methods.connection_strength`).

A run definition (:class:`~deconflict.experiments.RunSpec`) may carry

* ``recon: {...}`` — train the model with Recon's layers turned task-specific (:class:`ReconOptions`).
  The layers come from a *scan*: the pre-run of Alg. 1 (the base method for the paper's number of
  epochs, task-gradient cosines of every shared layer at every step), itself defined by
  :func:`scan_spec` and trained once by :func:`train_scan` for every Recon run that reads it;
* ``sparse: {...}`` — train with a PSN mask on the shared parameters (:class:`SparseOptions`);
* ``strength: {...}`` — train with task-specific BN and connection strength-based optimization
  (:class:`StrengthOptions`);
* ``drmgf: {...}`` / ``metagf: {...}`` — train with DR-MGF's or Meta-GF's disentangle-and-fuse
  procedure (the keyword options of :class:`~deconflict.methods.drmgf.DRMGFUpdate` /
  :class:`~deconflict.methods.metagf.MetaGFUpdate`; ``{}``: the paper's settings).

:func:`prepare_model` applies them to a freshly initialised model before training.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from deconflict.config import reject_unknown
from deconflict.errors import ConfigError
from deconflict.io import read_json
from deconflict.methods import connection_strength, drmgf, metagf, recon, sparse

if TYPE_CHECKING:  # pragma: no cover
    from deconflict.experiments.spec import RunSpec
    from deconflict.models import MultiTaskModel
    from deconflict.train import UpdateHook, UpdateRule

__all__ = [
    "FUSION_PROCEDURES",
    "PRERUNS",
    "RECON_SELECTIONS",
    "SCAN_FILES",
    "ReconOptions",
    "SparseOptions",
    "StrengthOptions",
    "fusion_rule",
    "prepare_model",
    "recon_layers",
    "run_scan_files",
    "scan_epochs",
    "scan_name",
    "scan_spec",
    "scan_suffix",
    "shaped_model",
]

#: how a Recon run picks its layers: Recon's top-K by S-conflict score, or a control of the paper
#: (RSL / RSP, Table 7; FSK / LSK, Table 11)
RECON_SELECTIONS = ("conflict", "random_layers", "random_parameters", "first", "last")
#: how long Recon's scan trains: Alg. 1's pre-run, or the whole run (Table 13's training stages)
PRERUNS = ("recon", "whole_run")
#: what a scan folder holds: the pre-run's per-layer task-gradient table and the layers in forward order
SCAN_FILES = ("gradient_pairs.csv", "layers.json")
#: what a scan's definition may change of the run's (``recon: {scan: {...}}``)
SCAN_KEYS = ("dataset", "model", "model_options", "method", "hparams", "lr")


def freeze(value: Any) -> Any:
    """A mapping (nested) as sorted item tuples, so that it can be part of a frozen run definition."""
    if isinstance(value, Mapping):
        return tuple(sorted((key, freeze(item)) for key, item in value.items()))
    if isinstance(value, list):
        return tuple(freeze(item) for item in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of :func:`freeze` for item tuples."""
    if isinstance(value, tuple) and all(isinstance(item, tuple) and len(item) == 2 for item in value):
        return {key: thaw(item) for key, item in value}
    return value


@dataclass(frozen=True)
class ReconOptions:
    """A Recon run's options (``recon:`` of a run definition; every key optional).

    Attributes:
        select: ``conflict`` (Recon: top-K by S-conflict score) or a control: ``random_layers``
            (RSL), ``random_parameters`` (RSP: about as many parameters as Recon's K layers),
            ``first`` (FSK), ``last`` (LSK).
        settings: ``paper`` (App. B) or ``code`` (the official scripts) for S, K and the pre-run's base
            method and length (:data:`deconflict.methods.recon.SETTINGS`, by the scan's dataset).
        threshold, top_k: S and K, overriding the settings.
        quarter: score only the q-th quarter of the pre-run's iterations (1–4, Table 13).
        prerun: ``recon`` (Alg. 1's pre-run, as long as ``settings`` say) or ``whole_run`` (the scan
            trains as long as the run itself: Table 13 scores the quarters of the *whole* joint-training
            run, not of a 40-epoch pre-run).
        copies: ``identical`` (the paper, exact at initialisation) or ``independent`` (the code).
        seed: of RSL / RSP's draw.
        scan: what the pre-run changes of the run's definition, e.g. ``{dataset: cityscapes, lr: 5e-5}``
            for Recon* (the layers found on another dataset, Tables 15–16).
    """

    select: str = "conflict"
    settings: str = "paper"
    threshold: float | None = None
    top_k: int | None = None
    quarter: int | None = None
    prerun: str = "recon"
    copies: str = "identical"
    seed: int = 0
    scan: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, options: Mapping[str, Any] | None) -> ReconOptions:
        options = dict(options or {})
        reject_unknown(options, [f.name for f in fields(cls)], "recon option")
        parsed = cls(**{**options, "scan": dict(options.get("scan") or {})})
        reject_unknown(parsed.scan, SCAN_KEYS, "recon scan key")
        if parsed.select not in RECON_SELECTIONS:
            raise ConfigError(f"recon select must be one of {', '.join(RECON_SELECTIONS)}, got {parsed.select!r}.")
        if parsed.settings not in recon.SETTINGS:
            raise ConfigError(f"recon settings must be one of {', '.join(recon.SETTINGS)}, got {parsed.settings!r}.")
        if parsed.quarter is not None and parsed.quarter not in (1, 2, 3, 4):
            raise ConfigError(f"recon quarter must be 1, 2, 3 or 4, got {parsed.quarter!r}.")
        if parsed.prerun not in PRERUNS:
            raise ConfigError(f"recon prerun must be one of {', '.join(PRERUNS)}, got {parsed.prerun!r}.")
        if parsed.copies not in ("identical", "independent"):
            raise ConfigError(f"recon copies must be 'identical' or 'independent', got {parsed.copies!r}.")
        if parsed.threshold is not None and not -1 < parsed.threshold <= 0:
            raise ConfigError(f"recon threshold S must satisfy −1 < S ≤ 0 (Def. 3), got {parsed.threshold!r}.")
        if parsed.top_k is not None and (not isinstance(parsed.top_k, int) or parsed.top_k < 1):
            raise ConfigError(f"recon top_k must be a positive integer, got {parsed.top_k!r}.")
        return parsed

    def for_dataset(self, dataset: str) -> Any:
        """The :class:`~deconflict.methods.recon.ReconSettings` for a scan on ``dataset``, with this
        run's overrides of S and K."""
        table = recon.SETTINGS[self.settings]
        if dataset not in table and (self.threshold is None or self.top_k is None):
            raise ConfigError(
                f"Recon's {self.settings} settings give no S and K for {dataset!r} (they cover "
                f"{', '.join(table)}): set recon threshold and top_k."
            )
        base = table.get(dataset) or recon.ReconSettings("equal", 0, 0.0, 1)  # 0 epochs: the profile's scan length
        return recon.ReconSettings(
            base=base.base,
            prerun_epochs=base.prerun_epochs,
            threshold=base.threshold if self.threshold is None else float(self.threshold),
            top_k=base.top_k if self.top_k is None else int(self.top_k),
        )


@dataclass(frozen=True)
class SparseOptions:
    """A sparse-training run's options (``sparse:`` of a run definition).

    Attributes:
        k: connections kept per neuron (the paper's K, an absolute count), or
        fraction: the share of each neuron's inputs kept (give one of the two);
        rule: ``psn`` (the paper's), ``random``, ``global`` or ``reverse`` (the ablations, Fig. 5(c));
        seed: of the ``random`` rule's draw.
    """

    k: int | None = None
    fraction: float | None = None
    rule: str = "psn"
    seed: int = 0

    @classmethod
    def parse(cls, options: Mapping[str, Any] | None) -> SparseOptions:
        options = dict(options or {})
        reject_unknown(options, [f.name for f in fields(cls)], "sparse option")
        parsed = cls(**options)
        sparse.check_options(parsed.fraction, parsed.k, parsed.rule)
        return parsed


@dataclass(frozen=True)
class StrengthOptions:
    """A connection-strength run's options (``strength:`` of a run definition; every key optional).

    Attributes:
        phases: ``mixed`` (Alg. 1), ``phase1``, ``phase2`` or ``sequential`` (Table 4's ablation);
        draw: ``epoch`` (the paper: P drawn once per epoch) or ``iteration`` (the official core);
        seed: of P's draws;
        group_bias: Phase 2 projects a channel's bias with its filter (True, the paper's channel
            parameters) or sums the biases' gradients (False, the official core).
    """

    phases: str = "mixed"
    draw: str = "epoch"
    seed: int = 0
    group_bias: bool = True

    @classmethod
    def parse(cls, options: Mapping[str, Any] | None) -> StrengthOptions:
        options = dict(options or {})
        reject_unknown(options, [f.name for f in fields(cls)], "strength option")
        parsed = cls(**options)
        parsed.rule()  # checks phases and draw
        return parsed

    def rule(self) -> connection_strength.ConnectionStrengthUpdate:
        return connection_strength.ConnectionStrengthUpdate(self.phases, self.draw, self.seed, self.group_bias)


#: the disentangle-and-fuse procedures a run definition may name (its key → the update rule's class)
FUSION_PROCEDURES = {"drmgf": drmgf.DRMGFUpdate, "metagf": metagf.MetaGFUpdate}


def fusion_rule(key: str, options: Mapping[str, Any] | None) -> UpdateRule:
    """The update rule of a ``drmgf:`` / ``metagf:`` run option: the class's keyword options, checked
    (an unknown key lists the valid ones; a bad value says what is allowed). ``settings: <name>`` starts
    from one of the class's ``PRESETS`` (e.g. ``nyuv2_code``: the official code's), the other keys override it."""
    cls = FUSION_PROCEDURES[key]
    allowed = [name for name in inspect.signature(cls).parameters if name != "lr_scale"]
    options = dict(options or {})
    preset = options.pop("settings", None)
    if preset is not None:
        if preset not in cls.PRESETS:
            raise ConfigError(f"{key} settings must be one of {', '.join(cls.PRESETS)}, got {preset!r}.")
        options = {**cls.PRESETS[preset], **options}
    reject_unknown(options, [*allowed, "settings"], f"{key} option")
    return cls(**options)


# -- Recon's scan ---------------------------------------------------------------------------------
def scan_spec(run: RunSpec) -> RunSpec:
    """The definition of the pre-run whose scan gives ``run`` its Recon layers: the run's dataset,
    model and learning rate with Recon's base method (then what ``recon.scan`` changes). One scan
    serves every Recon run with the same pre-run (e.g. every "w/ Recon" row of a table)."""
    from deconflict.experiments.spec import RunSpec

    options = ReconOptions.parse(thaw(run.recon))
    scan = dict(options.scan)
    dataset = scan.get("dataset", run.dataset)
    base = options.for_dataset(dataset).base
    definition = {
        "dataset": dataset,
        "model": scan.get("model", run.model),
        "method": scan.get("method", base),
        "hparams": scan.get("hparams", {}),
        "lr": scan.get("lr", run.lr if dataset == run.dataset else None),
        "model_options": scan.get("model_options", dict(run.model_options)),
    }
    return RunSpec.from_dict(definition)


def scan_suffix(settings: str = "paper", prerun: str = "recon") -> str:
    """What a scan's name adds to its pre-run's definition: ``-code`` for the official scripts'
    settings (another pre-run length), ``-whole_run`` for a scan as long as the run."""
    return ("" if settings == "paper" else f"-{settings}") + ("" if prerun == "recon" else f"-{prerun}")


def scan_name(run: RunSpec) -> str:
    """The name of the scan a Recon run reads (its folder under ``scans/``): the pre-run's definition
    and :func:`scan_suffix`."""
    options = ReconOptions.parse(thaw(run.recon))
    return scan_spec(run).name + scan_suffix(options.settings, options.prerun)


def run_scan_files(run: RunSpec, scans: Path | None) -> list[Path]:
    """The scan files a run reads (none unless it is a Recon run): part of its work folder's key, so
    a run resumed after its scan changed starts afresh instead of finishing with the old layers."""
    if run.recon is None or scans is None:
        return []
    return [scans / scan_name(run) / name for name in SCAN_FILES]


def scan_epochs(
    scan: RunSpec, settings: str, profile_epochs: int | None, prerun: str = "recon", run_epochs: int | None = None
) -> int:
    """The pre-run's length: with ``prerun="whole_run"`` the run's own (``run_epochs``, the profile's
    training length); otherwise the profile's scan length (smoke), or Recon's ``settings`` (``paper`` /
    ``code``) for the scan's dataset (full)."""
    if prerun == "whole_run":
        if run_epochs is None:
            raise ConfigError("a whole-run scan needs the run's number of epochs.")
        return int(run_epochs)
    if profile_epochs is not None:
        return int(profile_epochs)
    epochs = ReconOptions.parse({"settings": settings}).for_dataset(scan.dataset).prerun_epochs
    if epochs < 1:
        raise ConfigError(f"Recon gives no pre-run length for {scan.dataset!r}: set the profile's scan epochs.")
    return epochs


def recon_layers(run: RunSpec, scan_dir: Path, model: MultiTaskModel) -> list[str]:
    """The layers a Recon run turns task-specific, from its scan's folder (``scans/<scan name>``)."""
    options = ReconOptions.parse(thaw(run.recon))
    missing = [name for name in SCAN_FILES if not (scan_dir / name).is_file()]
    if missing:
        raise ConfigError(
            f"Recon run {run.name!r} needs the scan {scan_dir} ({', '.join(missing)} missing): run "
            f"`dvc repro` (the scan stage trains the pre-run), or `python pipelines/scan_conflicts.py "
            f"--scan {scan_dir.name}`."
        )
    scanned = read_json(scan_dir / "layers.json")
    layers = recon.conflict_layers(model)
    if scanned["layers"] != layers:
        raise ConfigError(
            f"the scan {scan_dir.name!r} was made on a model with other shared layers than {run.name!r}'s "
            f"({len(scanned['layers'])} vs {len(layers)}): Recon transfers layers between datasets of one "
            "architecture only."
        )
    settings = options.for_dataset(scan_spec(run).dataset)
    k = settings.top_k
    if options.select == "first":
        return recon.first_layers(layers, k)
    if options.select == "last":
        return recon.last_layers(layers, k)
    if options.select == "random_layers":
        return recon.random_layers(layers, k, seed=options.seed)
    pairs = pd.read_csv(scan_dir / "gradient_pairs.csv")
    iterations = None
    if options.quarter is not None:
        steps = int(pairs["step"].max())
        q = options.quarter
        iterations = ((q - 1) * steps // 4 + 1, q * steps // 4)
    chosen = recon.select_layers(recon.conflict_scores(pairs, settings.threshold, iterations), k)
    if options.select == "conflict":
        return chosen
    sizes = recon.layer_sizes(model, layers)
    return recon.random_parameter_layers(sizes, sum(sizes[name] for name in chosen), seed=options.seed)


def shaped_model(run: RunSpec, model: MultiTaskModel, recon_layers: Sequence[str] = ()) -> MultiTaskModel:
    """The model ``run`` trains, as far as its parameters go (for its size, e.g. on the meta device):
    ``recon_layers`` branched (Recon) and task-specific BNs added (connection strength)."""
    if recon_layers:
        model = recon.branch(model, recon_layers)
    if run.strength is not None:
        model = connection_strength.task_specific_bn(model)
    return model


def prepare_model(
    run: RunSpec, model: MultiTaskModel, scans: Path | None, k_scale: float = 1.0
) -> tuple[MultiTaskModel, list[UpdateHook], dict[str, Any], UpdateRule | None]:
    """The run's model after Recon's surgery or connection strength's task-specific BN, the update
    hooks of sparse training, what to record of them in the run's summary, and the update rule of a
    procedure that replaces the method's (connection strength, DR-MGF, Meta-GF; None otherwise). ``model`` must be
    freshly initialised (they act before training). ``k_scale`` scales sparse training's K for a model
    narrower than the papers'."""
    hooks: list[UpdateHook] = []
    update: UpdateRule | None = None
    record: dict[str, Any] = {}
    if run.recon is not None:
        if scans is None:
            raise ConfigError(f"Recon run {run.name!r}: no scans folder given (where its pre-run's scan is).")
        options = ReconOptions.parse(thaw(run.recon))
        name = scan_name(run)
        layers = recon_layers(run, scans / name, model)
        model = recon.branch(model, layers, copies=options.copies)
        record["recon"] = {"scan": name, "layers": layers, **asdict(options)}
    if run.sparse is not None:
        chosen = SparseOptions.parse(thaw(run.sparse))
        k = None if chosen.k is None else max(1, round(chosen.k * k_scale))
        masks = sparse.select(model, chosen.fraction, chosen.rule, k=k, seed=chosen.seed)
        hooks.append(sparse.MaskedUpdate(masks))
        record["sparse"] = {
            **asdict(chosen),
            "k_used": k,
            "trainable_percent": sparse.trainable_fraction(model, masks),
        }
    if run.strength is not None:
        chosen_strength = StrengthOptions.parse(thaw(run.strength))
        model = connection_strength.task_specific_bn(model)
        update = chosen_strength.rule()
        record["strength"] = {**asdict(chosen_strength), "layers": [conv for conv, _ in model.pairs]}
    for key in FUSION_PROCEDURES:
        options = getattr(run, key)
        if options is not None:
            update = fusion_rule(key, thaw(options))
            record[key] = thaw(options) or {}
    return model, hooks, record, update
