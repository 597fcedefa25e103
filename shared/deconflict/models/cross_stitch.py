"""Cross-Stitch networks (Misra et al., CVPR 2016, Eq. 1) on SegNet, as the papers' baselines run them.

One full SegNet column per task; between stages, cross-stitch units mix the columns' maps:
x̃_t = Σ_u α_tu x_u (Misra et al. Eq. 1). The units sit after each of the first four encoder
stages (on the pooled maps) and before each of the five decoder stages (before unpooling, each
column then unpools with its own indices). Recon, DR-MGF, task priority and CAGrad take this
"Cross-Stitch based on SegNet" from Liu et al.'s MTAN code.

Two forms of the units (``stitch=``):

* ``"matrix"`` (default, the Cross-Stitch paper): a T×T matrix per location, initialised with
  α_tt = 0.9 and α_tu = 0.1/(T−1) (Misra et al. Sec. 3.3 use (α_S, α_D) = (0.9, 0.1) for two tasks);
* ``"mtan_code"`` (the MTAN / CAGrad code the papers ran): one scalar per (location, source
  column), shared by every target column and initialised to 1, so every column receives the same
  mixed map and the columns differ only in their weights and pooling indices. At full width this
  is the 74,941,804-parameter model behind the printed sizes (285.88 MiB NYUv2, 190.59 MiB CityScapes).

Conv weights are initialised Xavier-uniform (the MTAN code's choice for this model).

Parameter groups. Column t's last decoder stage, head and (matrix form) row t of the last
unit only affect task t: they are task t's parameters. Everything before the last unit is
shared. The shared representation is the columns' maps entering the last unit, concatenated
along channels (B × T·C × H/2 × W/2): every task depends on the shared part only through it. In the
``mtan_code`` form the last unit's weights are shared but applied after the representation;
at feature level they get the sum of the task gradients (:meth:`downstream_shared_parameters`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from deconflict.errors import ConfigError, ShapeError
from deconflict.models.base import MultiTaskModel, register
from deconflict.models.segnet import (
    EXTRA_BLOCKS,
    SegNetBackbone,
    check_image,
    init_segnet,
    scaled_filters,
    task_head,
)
from deconflict.tasks import Task

__all__ = ["STITCH_FORMS", "CrossStitchSegNet"]

STITCH_FORMS = ("matrix", "mtan_code")
STAGES = len(EXTRA_BLOCKS)


@register("cross_stitch")
class CrossStitchSegNet(MultiTaskModel):
    """T SegNet columns joined by cross-stitch units (see the module docstring)."""

    supports_task_views = False

    def __init__(
        self, tasks: Iterable[Task] | Mapping[str, Task | int], width: float = 1.0, stitch: str = "matrix"
    ) -> None:
        super().__init__()
        if stitch not in STITCH_FORMS:
            raise ConfigError(f"cross-stitch form must be one of {', '.join(STITCH_FORMS)}, got {stitch!r}.")
        self.set_tasks(tasks)
        self.stitch = stitch
        n = len(self.task_names)
        filters = scaled_filters(width)
        self.columns = nn.ModuleList([SegNetBackbone(filters) for _ in self.task_names])
        self.heads = nn.ModuleDict({task.name: task_head(filters[0], task.channels) for task in self.tasks})
        init_segnet(self, conv_init="xavier_uniform")
        # locations 0–3: after encoder stages 0–3; 4–7: before decoder steps 0–3; the last unit
        # (before decoder step 4) is kept apart because its rows are task-specific
        self.units = nn.ParameterList([nn.Parameter(self._unit_init(n)) for _ in range(8)])
        if stitch == "matrix":
            self.last_unit = nn.ParameterList([nn.Parameter(self._unit_init(n)[t]) for t in range(n)])
        else:
            self.last_unit = nn.ParameterList([nn.Parameter(torch.ones(n))])
        self._indices: list[Tensor] | None = None

    def example_inputs(self) -> Tensor:
        """Two 32×32 RGB images (the smallest size five poolings allow)."""
        return torch.zeros(2, 3, 32, 32, device=self.units[0].device, dtype=self.units[0].dtype)

    def initialise(self, module: nn.Module) -> None:
        init_segnet(module, conv_init="xavier_uniform")

    def _unit_init(self, n: int) -> Tensor:
        if self.stitch == "mtan_code":
            return torch.ones(n)
        if n == 1:
            return torch.ones(1, 1)
        return torch.full((n, n), 0.1 / (n - 1)).fill_diagonal_(0.9)

    def _mix(self, weights: Tensor, maps: list[Tensor], target: int) -> Tensor:
        """Σ_u α_{target,u} x_u (matrix form) or Σ_u β_u x_u (``mtan_code`` form)."""
        row = weights[target] if weights.dim() == 2 else weights
        return sum(row[u] * x for u, x in enumerate(maps))

    def encode(self, inputs: Tensor) -> Tensor:
        check_image(inputs)
        n = len(self.task_names)
        maps = [inputs] * n
        indices: list[list[Tensor]] = [[] for _ in range(n)]
        for s in range(STAGES):
            if s > 0:
                maps = [self._mix(self.units[s - 1], maps, t) for t in range(n)]
            outs = []
            for t, column in enumerate(self.columns):
                _, _, pooled, index = column.encode_stage(s, maps[t])
                outs.append(pooled)
                indices[t].append(index)
            maps = outs
        for j in range(STAGES - 1):  # decoder steps 0–3 (stages 4 … 1)
            s = STAGES - 1 - j
            mixed = [self._mix(self.units[4 + j], maps, t) for t in range(n)]
            maps = [column.decode_stage(s, mixed[t], indices[t][s])[1] for t, column in enumerate(self.columns)]
        self._indices = [idx[0] for idx in indices]
        return torch.cat(maps, dim=1)

    def _last_weights(self) -> Tensor:
        return torch.stack(list(self.last_unit)) if self.stitch == "matrix" else self.last_unit[0]

    def decode(self, representation: Tensor) -> dict[str, Tensor]:
        if self._indices is None:
            raise ShapeError("CrossStitchSegNet.decode needs a representation made by its encode(); call encode first.")
        n = len(self.task_names)
        if representation.dim() != 4 or representation.shape[1] % n:
            raise ShapeError(
                f"CrossStitchSegNet: representation of shape {tuple(representation.shape)} is not "
                f"the {n} columns' maps concatenated along channels."
            )
        maps = list(representation.chunk(n, dim=1))
        weights = self._last_weights()
        outputs = {}
        for t, (task, column) in enumerate(zip(self.task_names, self.columns)):
            _, feature = column.decode_stage(0, self._mix(weights, maps, t), self._indices[t])
            outputs[task] = self.task(task).output(self.heads[task](feature))
        return outputs

    # -- parameter groups ----------------------------------------------------------------------
    def _column_tail(self, column: SegNetBackbone) -> list[nn.Parameter]:
        return [*column.decoder_first[0].parameters(), *column.decoder_rest[0].parameters()]

    def shared_parameters(self) -> list[nn.Parameter]:
        tails = {id(p) for column in self.columns for p in self._column_tail(column)}
        shared = [p for column in self.columns for p in column.parameters() if id(p) not in tails]
        return [*shared, *self.units, *self.downstream_shared_parameters()]

    def downstream_shared_parameters(self) -> list[nn.Parameter]:
        return list(self.last_unit) if self.stitch == "mtan_code" else []

    def task_parameters(self) -> list[list[nn.Parameter]]:
        groups = []
        for t, (task, column) in enumerate(zip(self.task_names, self.columns)):
            own = [*self._column_tail(column), *self.heads[task].parameters()]
            if self.stitch == "matrix":
                own.append(self.last_unit[t])
            groups.append(own)
        return groups

    def head_parameters(self) -> list[list[nn.Parameter]]:
        return [list(self.heads[task].parameters()) for task in self.task_names]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The last block of each column before the last cross-stitch unit."""
        return [p for column in self.columns for p in column.decoder_rest[1][-1].parameters()]
