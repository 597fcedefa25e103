"""SegNet-MTAN, the Multi-Task Attention Network of Liu, Johns & Davison (CVPR 2019), Sec. 3 / Fig. 2.

A shared SegNet (the "global feature pool") runs once; each task has its own attention branch
that reads the backbone's maps at every stage through soft masks (Eq. 1 of the MTAN paper:
â = a ⊙ p, the attention mask a computed by task-specific gates from the shared features):

* encoder side, stage s: mask m = G_t^e[s]( first_s if s = 0 else [first_s, q_{s−1}] ),
  q_s = maxpool( f_s(m ⊙ last_s) ) with a *shared* conv block f_s;
* decoder side, step j (stage s = 4 − j): v = g_s( upsample×2(r) ) with a shared block g_s,
  mask m = G_t^d[s]( [unpooled_j, v] ), r = m ⊙ decoded_j;
* the final r (64 channels, full resolution) goes to task t's head.

A gate is conv 1×1 → BN → ReLU → conv 1×1 → BN → sigmoid. At full width: 44,229,073 parameters for
NYUv2 (168.72 MiB, 1.7705 × a single-task SegNet — the "1.77" of DR-MGF Table 6) and 41,206,984 for
CityScapes.

Which parameters are shared. The backbone and the ten shared blocks f_s, g_s (35,163,456 at full
width) are shared; the gates and heads are task-specific. This is the split of the CAGrad,
Recon and DR-MGF code, which the gradient methods act on. The Nash-MTL / FAMO code counts every
parameter but the heads as "shared", so every task's gates enter the Jacobian: task t's row is
zero on the other tasks' gates, but its own gates add to the Gramian's diagonal ‖g_t‖², which
changes the weights of Gramian-based methods (Nash-MTL's α, IMTL-G's, MGDA's). That split is
``TrainConfig(shared="all_but_heads")`` (:meth:`head_parameters` are the heads alone).

The shared representation. The task branches read twenty backbone maps (first/last block of each
encoder stage, input/output of each decoder stage), so there is no single shared tensor: the
representation is those twenty maps flattened and concatenated (B × N), which is the whole
interface between the shared backbone and the tasks, so feature-level methods (MGDA-UB, "(rep)")
take exact gradients. The shared blocks f_s, g_s sit *after* that representation; at feature
level they get the sum of the task gradients, as in joint training
(:meth:`downstream_shared_parameters`). Per-task rotations of the representation (RotoGrad) are
not defined for this concatenation: use :class:`~deconflict.models.SegNetSplit` for RotoGrad.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from deconflict.errors import ShapeError
from deconflict.models.base import MultiTaskModel, register
from deconflict.models.segnet import (
    EXTRA_BLOCKS,
    BackboneFeatures,
    SegNetBackbone,
    _HeadsMixin,
    conv_block,
    init_segnet,
    scaled_filters,
)
from deconflict.tasks import Task

__all__ = ["SegNetMTAN", "attention_gate"]

STAGES = len(EXTRA_BLOCKS)


def attention_gate(cin: int, channels: int) -> nn.Sequential:
    """MTAN's attention module: conv 1×1 → BN → ReLU → conv 1×1 → BN → sigmoid."""
    return nn.Sequential(
        nn.Conv2d(cin, channels, 1),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, 1),
        nn.BatchNorm2d(channels),
        nn.Sigmoid(),
    )


@register("mtan")
class SegNetMTAN(_HeadsMixin, MultiTaskModel):
    """SegNet-MTAN (Liu et al. 2019); see the module docstring for the architecture and the splits."""

    supports_task_views = False

    def __init__(self, tasks: Iterable[Task] | Mapping[str, Task | int], width: float = 1.0) -> None:
        super().__init__()
        self.set_tasks(tasks)
        filters = scaled_filters(width)
        self.backbone = SegNetBackbone(filters)
        below = [filters[max(s - 1, 0)] for s in range(STAGES)]  # width of decoder stage s's output
        self.encoder_shared = nn.ModuleList(
            [conv_block(filters[s], filters[min(s + 1, STAGES - 1)]) for s in range(STAGES)]
        )
        self.decoder_shared = nn.ModuleList([conv_block(filters[s], below[s]) for s in range(STAGES)])
        self.encoder_gates = nn.ModuleDict(
            {
                task: nn.ModuleList(
                    [attention_gate(filters[0] if s == 0 else 2 * filters[s], filters[s]) for s in range(STAGES)]
                )
                for task in self.task_names
            }
        )
        self.decoder_gates = nn.ModuleDict(
            {
                task: nn.ModuleList([attention_gate(filters[s] + below[s], below[s]) for s in range(STAGES)])
                for task in self.task_names
            }
        )
        self.heads = self._make_heads(filters[0])
        self._layout: list[torch.Size] | None = None
        init_segnet(self)

    # -- the representation: the twenty backbone maps, packed ----------------------------------
    @staticmethod
    def _maps(features: BackboneFeatures) -> list[Tensor]:
        return [*features.first, *features.last, *features.unpooled, *features.decoded]

    def encode(self, inputs: Tensor) -> Tensor:
        maps = self._maps(self.backbone.features(inputs))
        self._layout = [m.shape[1:] for m in maps]
        return torch.cat([m.flatten(1) for m in maps], dim=1)

    def _unpack(self, representation: Tensor) -> BackboneFeatures:
        if self._layout is None:
            raise ShapeError("SegNetMTAN.decode needs a representation made by its encode(); call encode first.")
        sizes = [s.numel() for s in self._layout]
        if representation.dim() != 2 or representation.shape[1] != sum(sizes):
            raise ShapeError(
                f"SegNetMTAN: representation of shape {tuple(representation.shape)} does not match "
                f"the last encode() ({sum(sizes)} features per item)."
            )
        pieces = [
            piece.view(-1, *shape) for piece, shape in zip(torch.split(representation, sizes, dim=1), self._layout)
        ]
        return BackboneFeatures(first=pieces[0:5], last=pieces[5:10], unpooled=pieces[10:15], decoded=pieces[15:20])

    # -- the task branches ---------------------------------------------------------------------
    def _branch(self, task: str, features: BackboneFeatures) -> Tensor:
        gates = self.encoder_gates[task]
        pooled = None
        for s in range(STAGES):
            gate_input = features.first[s] if s == 0 else torch.cat([features.first[s], pooled], dim=1)
            masked = gates[s](gate_input) * features.last[s]
            pooled = F.max_pool2d(self.encoder_shared[s](masked), 2, 2)
        gates = self.decoder_gates[task]
        hidden = pooled
        for j in range(STAGES):
            s = STAGES - 1 - j
            up = F.interpolate(hidden, scale_factor=2, mode="bilinear", align_corners=True)
            up = self.decoder_shared[s](up)
            hidden = gates[s](torch.cat([features.unpooled[j], up], dim=1)) * features.decoded[j]
        return hidden

    def decode(self, representation: Tensor) -> dict[str, Tensor]:
        features = self._unpack(representation)
        return {task: self._head(task, self._branch(task, features)) for task in self.task_names}

    def decode_task(self, representation: Tensor, name: str) -> Tensor:
        return self._head(name, self._branch(name, self._unpack(representation)))

    def forward(self, inputs: Tensor) -> dict[str, Tensor]:  # no packing needed outside training
        features = self.backbone.features(inputs)
        return {task: self._head(task, self._branch(task, features)) for task in self.task_names}

    # -- parameter groups ----------------------------------------------------------------------
    def shared_parameters(self) -> list[nn.Parameter]:
        return [*self.backbone.parameters(), *self.downstream_shared_parameters()]

    def downstream_shared_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder_shared.parameters(), *self.decoder_shared.parameters()]

    def task_parameters(self) -> list[list[nn.Parameter]]:
        return [
            [*self.encoder_gates[t].parameters(), *self.decoder_gates[t].parameters(), *self.heads[t].parameters()]
            for t in self.task_names
        ]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The backbone's last decoder block (its output is what the last masks multiply)."""
        return list(self.backbone.last_block().parameters())
