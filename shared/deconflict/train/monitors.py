"""A training-engine callback that watches gradient conflict without changing training."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import Tensor

from deconflict.analysis.gradients import (
    cosine_matrix,
    feature_disentanglement_entropy,
    filter_index,
    filter_inner_products,
    magnitude_similarity_matrix,
    pair_indices,
)
from deconflict.analysis.histories import WHOLE_SHARED
from deconflict.errors import ConfigError
from deconflict.grad import JacobianEngine
from deconflict.io import atomic_path
from deconflict.train.callbacks import Callback

if TYPE_CHECKING:  # pragma: no cover
    from deconflict.train.loop import Trainer

__all__ = ["GradientMonitor", "layer_slices"]

WHOLE = WHOLE_SHARED


def layer_slices(layout: Sequence[tuple[str, int]]) -> list[tuple[str, slice]]:
    """Column ranges of each layer of the shared parameters: the module that owns them, weight and
    bias together (Recon's notion of a layer: conv and BatchNorm are separate layers)."""
    slices, start, index = [], 0, 0
    names = [name.rpartition(".")[0] or name for name, _ in layout]
    while index < len(layout):
        name, stop = names[index], start
        while index < len(layout) and names[index] == name:
            stop += layout[index][1]
            index += 1
        slices.append((name, slice(start, stop)))
        start = stop
    return slices


class GradientMonitor(Callback):
    """Measures the task gradients every ``every`` steps and keeps tidy tables of them.

    At parameter level it takes the per-task gradients of the shared parameters (for the whole
    shared part and, with ``per_layer``, for each layer); at feature level those of the shared
    representation. The gradients are taken with ``torch.autograd.grad`` on the unweighted task
    losses before the training backward pass and are never written to ``.grad`` (robust-MTL §5:
    "these raw gradients are not accumulated or populated to the network parameters"), so
    training is bit-for-bit the same with or without the monitor.

    Tables (pandas, one row per …):
        :meth:`pairs` — step × level × layer × task pair: cosine, magnitude similarity, gradient
        norms, DR-MGF's conflict value C and convergence gain G in both directions;
        :meth:`summary` — step × level × layer: GDS, GMS, conflict fraction, and at feature level
        the feature-disentanglement entropy.

    DR-MGF's conflict value C (Eq. 2) sums over the shared *filters* (each output channel of a
    module: its weight row and bias, :func:`~deconflict.analysis.filter_index`) at parameter level;
    ``conflict_value="coordinate"`` sums over single entries instead (an upper bound). At feature
    level each entry of the representation is its own filter.

    Args:
        every: measure every N steps (N ≥ 1).
        levels: ``"parameter"`` and/or ``"feature"``.
        per_layer: also measure each shared layer separately (parameter level).
        conflict_value: ``"filter"`` (Eq. 2 as printed) or ``"coordinate"``.
    """

    def __init__(
        self,
        every: int = 10,
        levels: Sequence[str] = ("parameter",),
        per_layer: bool = True,
        conflict_value: str = "filter",
    ) -> None:
        if not isinstance(every, int) or every < 1:
            raise ConfigError(f"GradientMonitor: every must be an integer ≥ 1, got {every!r}.")
        unknown = set(levels) - {"parameter", "feature"}
        if unknown or not levels:
            raise ConfigError(f"GradientMonitor: levels must be among 'parameter' and 'feature', got {list(levels)!r}.")
        if conflict_value not in ("filter", "coordinate"):
            raise ConfigError(
                f"GradientMonitor: conflict_value must be 'filter' or 'coordinate', got {conflict_value!r}."
            )
        self.every = every
        self.levels = tuple(levels)
        self.per_layer = bool(per_layer)
        self.conflict_value = conflict_value
        self.engine = JacobianEngine("auto")
        self._pairs: list[dict[str, Any]] = []
        self._summary: list[dict[str, Any]] = []

    # -- measuring ---------------------------------------------------------------------------------
    def before_backward(self, trainer: Trainer, losses: Sequence[Tensor], representation: Tensor) -> None:
        step = trainer.step + 1
        if step % self.every:
            return
        names = list(trainer.model.task_names) or [str(i) for i in range(len(losses))]
        if "parameter" in self.levels:
            params = trainer.parameter_split()[0]  # what the aggregator sees as shared
            jac = self.engine(list(losses), params, retain_graph=True)
            named = {id(p): n for n, p in trainer.model.named_parameters()}
            filters = None
            if self.conflict_value == "filter":
                filters = filter_index([(named.get(id(p), "?"), tuple(p.shape)) for p in params])
            blocks = [(WHOLE, slice(0, jac.shape[1]))]
            if self.per_layer:
                blocks += layer_slices([(named.get(id(p), "?"), p.numel()) for p in params])
            for layer, columns in blocks:
                block_filters = None if filters is None else filters[columns]
                self._record(
                    step,
                    trainer.epoch,
                    "parameter",
                    layer,
                    jac[:, columns],
                    names,
                    entropy=False,
                    filters=block_filters,
                )
        if "feature" in self.levels:
            jac = self.engine(list(losses), representation, retain_graph=True)
            self._record(step, trainer.epoch, "feature", "representation", jac, names, entropy=True)

    def _record(
        self,
        step: int,
        epoch: int,
        level: str,
        layer: str,
        jac: Tensor,
        names: list[str],
        entropy: bool,
        filters: Tensor | None = None,
    ) -> None:
        jac = jac.detach().to(torch.float64)
        pairs = pair_indices(jac.shape[0])
        row = {"step": step, "epoch": epoch, "level": level, "layer": layer}
        if pairs:
            i, j = (torch.tensor(index) for index in zip(*pairs))
            cosine = cosine_matrix(jac)[i, j]
            magnitude = magnitude_similarity_matrix(jac)[i, j]
            squared = (jac * jac).sum(1)
            norms = squared.sqrt()
            inner = (jac[i] * jac[j]).sum(1)
            # Σ_f max(0, −g_i,fᵀ g_j,f) over filters f (or entries), DR-MGF Eq. (2)
            overlap = torch.stack(
                [(-filter_inner_products(jac[a], jac[b], filters)).clamp(min=0).sum() for a, b in pairs]
            )
            tiny = torch.finfo(torch.float64).tiny
            columns = {
                "cosine": cosine,
                "magnitude_similarity": magnitude,
                "norm_i": norms[i],
                "norm_j": norms[j],
                "conflict_value_ij": overlap / squared[i].clamp_min(tiny),
                "conflict_value_ji": overlap / squared[j].clamp_min(tiny),
                "convergence_gain_ij": inner / squared[i].clamp_min(tiny),
                "convergence_gain_ji": inner / squared[j].clamp_min(tiny),
            }
            values = {key: value.tolist() for key, value in columns.items()}
            for k, (a, b) in enumerate(pairs):
                self._pairs.append(
                    {
                        "step": step,
                        "epoch": epoch,
                        "level": level,
                        "layer": layer,
                        "task_i": names[a],
                        "task_j": names[b],
                        **{key: value[k] for key, value in values.items()},
                    }
                )
            row["gds"] = float(cosine.mean())
            row["gms"] = float(magnitude.mean())
            row["conflict_fraction"] = float((cosine < 0).double().mean())
        if entropy:
            row["entropy"] = feature_disentanglement_entropy(jac)
        self._summary.append(row)

    # -- results -----------------------------------------------------------------------------------
    def pairs(self) -> pd.DataFrame:
        return pd.DataFrame(self._pairs)

    def summary(self) -> pd.DataFrame:
        return pd.DataFrame(self._summary)

    def save(self, folder: str | Path) -> None:
        """Write ``gradient_pairs.csv`` and ``gradient_summary.csv`` into ``folder`` (atomically)."""
        for name, frame in (("gradient_pairs.csv", self.pairs()), ("gradient_summary.csv", self.summary())):
            with atomic_path(Path(folder) / name) as tmp:
                frame.to_csv(tmp, index=False)

    def state_dict(self) -> dict[str, Any]:
        return {"pairs": list(self._pairs), "summary": list(self._summary)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pairs = list(state["pairs"])
        self._summary = list(state["summary"])
