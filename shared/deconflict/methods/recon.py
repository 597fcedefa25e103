"""Recon — Reducing Conflicting Gradients from the Root (Shi et al., ICLR 2023), Alg. 1, Def. 3, App. B.

Recon trains the network for I iterations with a base method, scores every shared layer by how
often its task gradients conflict, turns the K most conflicting layers task-specific, and trains
the modified network from scratch with any method:

1. :func:`conflict_layers` — the shared layers Recon may split: each module that owns shared
   parameters (its weight and bias together; conv and BatchNorm are separate layers, as in the
   official ``recon_model.py:_get_layers``), in forward order.
2. The pre-run records per-layer task-gradient cosines (:class:`deconflict.train.GradientMonitor`,
   ``every=1``, ``per_layer=True``); :func:`conflict_scores` is Def. 3 summed over the iterations,
   s^(k) = Σ_i #{pairs (a, b): cos φ_ab^(k) < S} (Alg. 1, line "For each layer k …").
3. :func:`select_layers` — the top K layers by score (ties keep the forward order); the controls
   of the paper's ablations are :func:`random_layers` (RSL, Table 7: the same number of layers),
   :func:`random_parameter_layers` (RSP: about the same number of parameters), :func:`first_layers`
   (FSK) and :func:`last_layers` (LSK) (App. C, Table 11).
4. :func:`branch` — model surgery: each chosen layer becomes one copy per task, and everything the
   model computes after it runs once per task with task t's copies (``archs/modules_recon.py`` of the
   official code: "after the first branched layer everything downstream runs per task").

Settings per dataset (App. B; the official scripts where they differ, see :data:`SETTINGS`):

=============  =========  =====  ======  ====================  ==================================
dataset        base       S      K       pre-run (paper)       official scripts
=============  =========  =====  ======  ====================  ==================================
multi_fashion  CAGrad     −0.1   25      30 epochs             40 epochs, joint training
cityscapes     joint      0.0    39      40 epochs             K = 40
nyuv2          joint      −0.02  22      40 epochs             K = 15, 50 epochs
pascal_context joint      −0.02  85      40 epochs
celeba         joint      −0.05  25      2 epochs
=============  =========  =====  ======  ====================  ==================================

Differences from the official code, as options:

* copies: the paper does not say how the copies start. :func:`branch` makes them identical to the
  layer they replace (``copies="identical"``), so the branched network computes exactly the
  original's function at initialisation and task t's gradient w.r.t. its copy equals the original
  per-task gradient w.r.t. that layer. The official code branches *before* initialising, so every
  copy is drawn independently (``copies="independent"``: each copy re-initialised with the model's
  own initialisation, :meth:`~deconflict.models.MultiTaskModel.initialise`).
* cost: the official code runs the layers before the first branched one once and everything after it
  once per task. :class:`BranchedModel` runs the model's shared part once per task when a branched
  layer lies in it (once in all when none does), so layers before the first branched one are
  computed T times: same outputs and gradients, and BatchNorm layers there update their running
  statistics T times per step (the official code: once).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from deconflict.analysis import s_conflict_ranking, s_conflict_scores
from deconflict.errors import ConfigError
from deconflict.models import MultiTaskModel

__all__ = [
    "SETTINGS",
    "BranchedModel",
    "ReconSettings",
    "TaskCopies",
    "branch",
    "conflict_layers",
    "conflict_scores",
    "first_layers",
    "last_layers",
    "layer_sizes",
    "random_layers",
    "random_parameter_layers",
    "select_layers",
]


@dataclass(frozen=True)
class ReconSettings:
    """Recon's hyperparameters for one dataset: the base method of the pre-run, its length in epochs,
    the severity S of Def. 3 and the number K of layers turned task-specific."""

    base: str
    prerun_epochs: int
    threshold: float
    top_k: int


#: App. B of the paper (``"paper"``) and the official scripts (``"code"``, ``exp/*/run_Recon*.sh``,
#: ``calculate_Sconflict.sh``) per dataset
SETTINGS: dict[str, dict[str, ReconSettings]] = {
    "paper": {
        "multi_fashion": ReconSettings("cagrad", 30, -0.1, 25),
        "cityscapes": ReconSettings("equal", 40, 0.0, 39),
        "nyuv2": ReconSettings("equal", 40, -0.02, 22),
        "pascal_context": ReconSettings("equal", 40, -0.02, 85),
        "celeba": ReconSettings("equal", 2, -0.05, 25),
    },
    "code": {
        "multi_fashion": ReconSettings("equal", 40, -0.1, 25),
        "cityscapes": ReconSettings("equal", 40, 0.0, 40),
        "nyuv2": ReconSettings("equal", 50, -0.02, 15),
    },
}


# -- which layers ------------------------------------------------------------------------------
def _owners(model: nn.Module) -> dict[int, str]:
    """id(parameter) → name of the module that owns it directly."""
    owners = {}
    for name, module in model.named_modules():
        for param in module.parameters(recurse=False):
            owners[id(param)] = name
    return owners


def _forward_order(model: MultiTaskModel, names: Sequence[str]) -> list[str]:
    """``names`` in the order the modules are first called by a forward pass on the model's example
    inputs (registration order when the model has none)."""
    example = model.example_inputs()
    if example is None:
        return list(names)
    wanted = set(names)
    order: list[str] = []
    handles = [
        module.register_forward_pre_hook(lambda m, a, name=name: order.append(name) if name not in order else None)
        for name, module in model.named_modules()
        if name in wanted
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return order + [name for name in names if name not in order]  # modules the example never called


def conflict_layers(model: MultiTaskModel) -> list[str]:
    """The names of the shared layers Recon may turn task-specific, in forward order.

    A layer is a module that owns shared parameters directly (weight and bias together; conv and
    BatchNorm separate), the unit of the official code's ``_get_layers`` and of
    :func:`deconflict.train.monitors.layer_slices`, so the names match the pre-run's table. Only
    modules all of whose own parameters are shared qualify; bare parameters of a container
    (Cross-Stitch's units) are not layers: they cannot be copied per task by module surgery.
    """
    if not isinstance(model, MultiTaskModel):
        raise ConfigError(f"Recon needs a deconflict.models.MultiTaskModel, got {type(model).__name__}.")
    shared = {id(p) for p in model.shared_parameters()}
    names = []
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if not own or not name or isinstance(module, (nn.ParameterList, nn.ParameterDict)):
            continue
        if all(id(p) in shared for p in own):
            names.append(name)
    return _forward_order(model, names)


def layer_sizes(model: nn.Module, layers: Iterable[str]) -> dict[str, int]:
    """Number of parameters each named layer owns directly."""
    modules = dict(model.named_modules())
    return {name: sum(p.numel() for p in modules[name].parameters(recurse=False)) for name in layers}


def conflict_scores(pairs: pd.DataFrame, threshold: float, iterations: tuple[int, int] | None = None) -> pd.Series:
    """Def. 3 summed over the pre-run (Alg. 1): per layer, the number of (iteration, task pair) with
    cos φ < S. ``pairs`` is :meth:`GradientMonitor.pairs` of the pre-run; ``iterations`` = (first,
    last) step, both included, keeps a part of it (Table 13: each quarter of the pre-run)."""
    if iterations is not None:
        first, last = iterations
        pairs = pairs[(pairs["step"] >= first) & (pairs["step"] <= last)]
        if pairs.empty:
            raise ConfigError(f"the pre-run recorded no step in {first}…{last}.")
    return s_conflict_scores(pairs, threshold)


def select_layers(scores: pd.Series, top_k: int) -> list[str]:
    """Alg. 1: the ``top_k`` layers with the highest S-conflict scores (ties: the earlier layer)."""
    _check_k(top_k, len(scores))
    return s_conflict_ranking(scores)[:top_k]


def _check_k(k: int, available: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or not 0 < k <= available:
        raise ConfigError(f"Recon: K must be an integer in 1…{available} (the model's shared layers), got {k!r}.")


def first_layers(layers: Sequence[str], k: int) -> list[str]:
    """FSK (App. C, Table 11): the first ``k`` shared layers in forward order."""
    _check_k(k, len(layers))
    return list(layers[:k])


def last_layers(layers: Sequence[str], k: int) -> list[str]:
    """LSK (App. C, Table 11): the last ``k`` shared layers in forward order. (Table 11's caption
    swaps the two names; the abbreviations — Last / First K — are followed here.)"""
    _check_k(k, len(layers))
    return list(layers[-k:])


def random_layers(layers: Sequence[str], k: int, seed: int) -> list[str]:
    """RSL (Table 7): ``k`` shared layers drawn uniformly at random (returned in forward order)."""
    _check_k(k, len(layers))
    chosen = set(random.Random(seed).sample(list(layers), k))
    return [name for name in layers if name in chosen]


def random_parameter_layers(sizes: dict[str, int], parameters: int, seed: int) -> list[str]:
    """RSP (Table 7): shared layers drawn at random, in a random order, until their parameters reach
    about ``parameters`` (the number Recon's layers hold): each drawn layer is kept when it brings the
    total nearer to the target. Returned in forward order (the order of ``sizes``)."""
    if parameters <= 0:
        raise ConfigError(f"RSP: the target number of parameters must be positive, got {parameters}.")
    names = list(sizes)
    random.Random(seed).shuffle(names)
    chosen, total = set(), 0
    for name in names:
        if abs(total + sizes[name] - parameters) < abs(total - parameters):
            chosen.add(name)
            total += sizes[name]
    return [name for name in sizes if name in chosen]


# -- model surgery -----------------------------------------------------------------------------
class TaskCopies(nn.Module):
    """One copy of a layer per task; calls go to the copy of the active task (set by :class:`BranchedModel`)."""

    def __init__(self, layer: nn.Module, tasks: int) -> None:
        super().__init__()
        self.copies = nn.ModuleList([layer, *(copy.deepcopy(layer) for _ in range(tasks - 1))])
        self.active = 0
        self.called = False

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.called = True
        return self.copies[self.active](*args, **kwargs)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


class BranchedModel(MultiTaskModel):
    """A multi-task model whose chosen shared layers are per-task copies (see :func:`branch`).

    ``encode`` returns the T task streams' representations stacked (T × …): stream t is the wrapped
    model's representation computed with task t's copies (one stream, repeated, when no branched layer
    lies in the shared part); ``decode`` gives task t its output from stream t with task t's copies
    active. Feature-level methods need one representation for all tasks and do not apply.
    """

    supports_task_views = False
    shared_representation = False

    def __init__(self, model: MultiTaskModel, layers: Sequence[str], copies: str = "identical") -> None:
        super().__init__()
        if copies not in ("identical", "independent"):
            raise ConfigError(f"Recon copies must be 'identical' or 'independent', got {copies!r}.")
        allowed = conflict_layers(model)
        unknown = [name for name in layers if name not in allowed]
        if unknown or len(set(layers)) != len(layers):
            raise ConfigError(
                f"cannot branch {unknown or 'a repeated layer'}: the layers Recon may branch in "
                f"{type(model).__name__} are {allowed[:6]}{' …' if len(allowed) > 6 else ''} "
                "(deconflict.methods.recon.conflict_layers(model))."
            )
        self.inner = copy.deepcopy(model)
        self.tasks, self.task_names = model.tasks, model.task_names
        self.layers = tuple(name for name in allowed if name in set(layers))  # forward order
        self._order = allowed
        switches = {}
        for name in self.layers:
            switch = TaskCopies(self.inner.get_submodule(name), self.num_tasks)
            _replace(self.inner, name, switch)
            switches[name] = switch
        self._switches = list(switches.values())
        if copies == "independent":
            for switch in self._switches:
                for layer in switch.copies:
                    self.inner.initialise(layer)
        self.copies = copies
        self._copy_ids = {id(p) for switch in self._switches for p in switch.parameters()}

    def example_inputs(self) -> Any:
        return self.inner.example_inputs()

    def initialise(self, module: nn.Module) -> None:
        self.inner.initialise(module)

    def _activate(self, task: int) -> None:
        for switch in self._switches:
            switch.active = task

    def encode(self, inputs: Any) -> Tensor:
        for switch in self._switches:
            switch.called = False
        self._activate(0)
        first = self.inner.encode(inputs)
        if not any(switch.called for switch in self._switches):  # no branched layer in the shared part
            return first.unsqueeze(0).expand(self.num_tasks, *first.shape)
        streams = [first]
        for task in range(1, self.num_tasks):
            self._activate(task)
            streams.append(self.inner.encode(inputs))
        self._activate(0)
        return torch.stack(streams)

    def decode(self, representation: Tensor) -> dict[str, Tensor]:
        outputs = {}
        for task, name in enumerate(self.task_names):
            self._activate(task)
            outputs[name] = self.inner.decode_task(representation[task], name)
        self._activate(0)
        return outputs

    def decode_task(self, representation: Tensor, name: str) -> Tensor:
        return self.decode(representation)[name]

    # -- parameter groups ----------------------------------------------------------------------
    def _unbranched(self, params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
        return [p for p in params if id(p) not in self._copy_ids]

    def shared_parameters(self) -> list[nn.Parameter]:
        return self._unbranched(self.inner.shared_parameters())

    def downstream_shared_parameters(self) -> list[nn.Parameter]:
        return self._unbranched(self.inner.downstream_shared_parameters())

    def task_parameters(self) -> list[list[nn.Parameter]]:
        groups = self.inner.task_parameters()
        return [
            [*self._unbranched(group), *(p for switch in self._switches for p in switch.copies[t].parameters())]
            for t, group in enumerate(groups)
        ]

    def head_parameters(self) -> list[list[nn.Parameter]]:
        return self.inner.head_parameters()

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The wrapped model's last shared layer, or (when Recon branched it) the last shared layer
        left in forward order."""
        kept = self._unbranched(self.inner.last_shared_parameters())
        if kept:
            return kept
        for name in reversed(self._order):
            if name not in self.layers:
                return list(self.inner.get_submodule(name).parameters(recurse=False))
        raise ConfigError("Recon branched every shared layer: no shared parameter is left.")


def branch(model: MultiTaskModel, layer_names: Sequence[str], copies: str = "identical") -> BranchedModel:
    """Recon's surgery (Alg. 1, "set them task-specific"): a new model in which each of
    ``layer_names`` (from :func:`conflict_layers`) is one copy per task and the computation after it
    runs per task. ``model`` is not changed.

    With ``copies="identical"`` (default) the new model computes exactly ``model``'s outputs, and the
    gradient of task t's loss w.r.t. its copy of a layer equals the gradient of task t's loss w.r.t.
    that layer in ``model``. ``copies="independent"`` re-initialises each copy (the official code).
    """
    if not layer_names:
        raise ConfigError("Recon: give at least one layer to branch (conflict_layers(model) lists them).")
    return BranchedModel(model, list(layer_names), copies=copies)
