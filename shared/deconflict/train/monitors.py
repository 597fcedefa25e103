"""A training-engine callback that watches gradient conflict without changing training."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import Tensor

from deconflict.analysis.gradients import feature_disentanglement_entropy, filter_index, pair_indices
from deconflict.analysis.histories import WHOLE_SHARED
from deconflict.errors import ConfigError
from deconflict.grad import BackwardResult, JacobianEngine
from deconflict.io import atomic_path
from deconflict.train.callbacks import Callback, StepOutput

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


@dataclass
class _Blocks:
    """The blocks of columns a monitor reports: their names, each column's block, each column's filter.
    Block 0 is the whole shared part (every column belongs to it as well)."""

    layers: list[str]
    columns: Tensor
    filters: Tensor | None


def _block_sums(values: Tensor, block_of: Tensor, n_blocks: int) -> Tensor:
    """Row sums of ``values`` (R × D) per block of columns (R × B); block 0, when there are others, is
    the whole row (the whole shared part), the others their own columns."""
    out = torch.zeros(values.shape[0], n_blocks, dtype=values.dtype, device=values.device)
    out.index_add_(1, block_of, values)
    if n_blocks > 1:
        out[:, 0] = values.sum(1)
    return out


class GradientMonitor(Callback):
    """Measures the task gradients every ``every`` steps and keeps tidy tables of them.

    At parameter level it takes the per-task gradients of the shared parameters (for the whole
    shared part and, with ``per_layer``, for each layer); at feature level those of the shared
    representation. The gradients are taken with ``torch.autograd.grad`` on the unweighted task
    losses before the training backward pass and are never written to ``.grad`` (robust-MTL §5:
    "these raw gradients are not accumulated or populated to the network parameters"), so
    training is bit-for-bit the same with or without the monitor. Where the update rule takes exactly
    these gradients itself (an aggregator over the shared parameters with unit weights:
    :meth:`~deconflict.train.UpdateRule.gives_task_jacobian`), the monitor reads the rule's Jacobian
    after the step instead of repeating its T backward passes.

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
        self._blocks: _Blocks | None = None
        self._pending: tuple[int, int, list[str], list[tuple[str, Tensor | None]]] | None = None
        self._pairs: list[dict[str, Any]] = []
        self._summary: list[dict[str, Any]] = []

    # -- measuring ---------------------------------------------------------------------------------
    def before_backward(self, trainer: Trainer, losses: Sequence[Tensor], representation: Tensor) -> None:
        step = trainer.step + 1
        if step % self.every:
            return
        names = list(trainer.model.task_names) or [str(i) for i in range(len(losses))]
        measured: list[tuple[str, Tensor | None]] = []
        if "parameter" in self.levels:
            params = trainer.parameter_split()[0]  # what the aggregator sees as shared
            if self._blocks is None:
                self._blocks = self._parameter_blocks(trainer, params)
            # an update rule that takes exactly these gradients anyway hands them over after its backward
            # pass (on_step_end): the same matrix, without T more backward passes
            reused = trainer.rule.gives_task_jacobian(trainer)
            measured.append(("parameter", None if reused else self.engine(list(losses), params, retain_graph=True)))
        if "feature" in self.levels:
            measured.append(("feature", self.engine(list(losses), representation, retain_graph=True)))
        if any(jac is None for _, jac in measured):
            self._pending = (step, trainer.epoch, names, measured)
        else:
            self._record_all(step, trainer.epoch, names, measured)

    def on_step_end(self, trainer: Trainer, output: StepOutput) -> None:
        if self._pending is None:
            return
        step, epoch, names, measured = self._pending
        self._pending = None
        result = output.backward
        if not isinstance(result, BackwardResult) or result.level != "parameter":
            raise ConfigError(
                f"{type(trainer.rule).__name__}.gives_task_jacobian() is true but its step returned no "
                "parameter-level BackwardResult: the gradient monitor has nothing to measure."
            )
        read = [(level, result.jacobian if jac is None else jac) for level, jac in measured]
        self._record_all(step, epoch, names, read)

    def _record_all(self, step: int, epoch: int, names: list[str], measured: list[tuple[str, Tensor]]) -> None:
        for level, jac in measured:
            if level == "parameter":
                self._record(step, epoch, level, jac, names, entropy=False, blocks=self._blocks)
            else:
                self._record(step, epoch, level, jac, names, entropy=True)

    def _parameter_blocks(self, trainer: Trainer, params: list[Tensor]) -> _Blocks:
        """Which layer (0 = the whole shared part, then each layer) and which filter every column is."""
        named = {id(p): n for n, p in trainer.model.named_parameters()}
        layout = [(named.get(id(p), "?"), p.numel()) for p in params]
        layers = [WHOLE]
        columns = torch.zeros(sum(size for _, size in layout), dtype=torch.long)
        if self.per_layer:
            for name, columns_of in layer_slices(layout):
                columns[columns_of] = len(layers)
                layers.append(name)
        filters = None
        if self.conflict_value == "filter":
            filters = filter_index([(named.get(id(p), "?"), tuple(p.shape)) for p in params])
        return _Blocks(layers, columns, filters)

    def _record(
        self,
        step: int,
        epoch: int,
        level: str,
        jac: Tensor,
        names: list[str],
        entropy: bool,
        blocks: _Blocks | None = None,
    ) -> None:
        """Statistics of every task pair over every block of columns at once (one pass over ``jac``)."""
        jac = jac.detach().to(torch.float64)
        if blocks is None:  # the representation: one block, every entry its own filter
            blocks = _Blocks(["representation"], torch.zeros(jac.shape[1], dtype=torch.long), None)
        n_blocks = len(blocks.layers)
        pairs = pair_indices(jac.shape[0])
        block_of = blocks.columns.to(jac.device)
        # ‖g_t‖² per block (block 0 also gets every column when there are layers: the whole shared part)
        squared = _block_sums(jac * jac, block_of, n_blocks)
        summary_rows = [{"step": step, "epoch": epoch, "level": level, "layer": layer} for layer in blocks.layers]
        if pairs:
            i, j = (torch.tensor(index) for index in zip(*pairs))
            products = jac[i] * jac[j]  # P × D
            inner = _block_sums(products, block_of, n_blocks)  # P × B
            if blocks.filters is None:  # every entry its own filter
                negative = (-products).clamp(min=0)
            else:
                filters = blocks.filters.to(jac.device)
                per_filter = torch.zeros(len(pairs), int(filters.max()) + 1, dtype=jac.dtype, device=jac.device)
                per_filter.index_add_(1, filters, products)
                negative = (-per_filter).clamp(min=0)
                # a filter lies in one layer: the layer of its first column
                first = torch.full((per_filter.shape[1],), jac.shape[1], dtype=torch.long, device=jac.device)
                first.scatter_reduce_(0, filters, torch.arange(jac.shape[1], device=jac.device), reduce="amin")
                block_of_negative = block_of[first]
                negative_blocks = _block_sums(negative, block_of_negative, n_blocks)
            if blocks.filters is None:
                negative_blocks = _block_sums(negative, block_of, n_blocks)
            norms = squared.sqrt()
            eps, tiny = 1e-12, torch.finfo(torch.float64).tiny
            n_i, n_j = norms[i], norms[j]
            cosine = (inner / (n_i.clamp_min(eps) * n_j.clamp_min(eps))).clamp(-1.0, 1.0)
            cosine = torch.where((n_i <= eps) | (n_j <= eps), torch.zeros_like(cosine), cosine)
            magnitude = 2 * n_i * n_j / (squared[i] + squared[j]).clamp_min(1e-24)
            columns = {
                "cosine": cosine,
                "magnitude_similarity": magnitude,
                "norm_i": n_i,
                "norm_j": n_j,
                "conflict_value_ij": negative_blocks / squared[i].clamp_min(tiny),
                "conflict_value_ji": negative_blocks / squared[j].clamp_min(tiny),
                "convergence_gain_ij": inner / squared[i].clamp_min(tiny),
                "convergence_gain_ji": inner / squared[j].clamp_min(tiny),
            }
            values = {key: value.T.tolist() for key, value in columns.items()}  # B × P
            for b, layer in enumerate(blocks.layers):
                for k, (a, c) in enumerate(pairs):
                    self._pairs.append(
                        {
                            "step": step,
                            "epoch": epoch,
                            "level": level,
                            "layer": layer,
                            "task_i": names[a],
                            "task_j": names[c],
                            **{key: value[b][k] for key, value in values.items()},
                        }
                    )
            gds, gms = cosine.mean(0).tolist(), magnitude.mean(0).tolist()
            fraction = (cosine < 0).double().mean(0).tolist()
            for b, row in enumerate(summary_rows):
                row.update(gds=gds[b], gms=gms[b], conflict_fraction=fraction[b])
        if entropy:
            summary_rows[0]["entropy"] = feature_disentanglement_entropy(jac)
        self._summary.extend(summary_rows)

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
