"""SegNet (Badrinarayanan et al. 2017) as the MTAN lineage builds it, single-task and multi-task.

The NYUv2 / CityScapes tables of DR-MGF (Table 6), Recon (Tables 3, 5, 15, 16), sparse training
(Tables 7, 12) and task priority (Table 3) all use the SegNet of Liu et al.'s MTAN code:

* filters 64-128-256-512-512 (``width`` scales them, for smoke runs);
* a block is conv 3×3 (bias) → BatchNorm → ReLU; encoder stage s is one block from the previous
  width plus 1 (stages 0, 1) or 2 (stages 2–4) more, then 2×2 max-pooling *with indices*;
  the decoder mirrors it with max-unpooling at the stored indices;
* a task head is conv 3×3 64→64 then conv 1×1 64→C, with nothing between them;
* outputs: each task's activation (:meth:`deconflict.tasks.Task.output`: segmentation
  log-probabilities, raw depth, L2-normalised normals);
* init: Xavier-normal conv weights, zero biases, BatchNorm weight 1 and bias 0.

Parameter counts at full width (checked in the tests against the papers' printed sizes):
backbone 24,943,296; single-task 13-class SegNet 24,981,069 (DR-MGF's "#P" unit);
split NYUv2 25,055,185 = 95.58 MiB, CityScapes 25,017,672 = 95.43 MiB (Recon's "#P (MB)").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from deconflict.errors import ConfigError, InvalidHyperparameterError, ShapeError
from deconflict.models.base import MultiTaskModel, register
from deconflict.tasks import Task

__all__ = [
    "FILTERS",
    "BackboneFeatures",
    "SegNetBackbone",
    "SegNetSingle",
    "SegNetSplit",
    "conv_block",
    "init_segnet",
    "scaled_filters",
    "task_head",
]

#: filters of the five encoder stages at full width
FILTERS = (64, 128, 256, 512, 512)
#: extra conv blocks after the first one of each stage (encoder and decoder)
EXTRA_BLOCKS = (1, 1, 2, 2, 2)


def scaled_filters(width: float) -> tuple[int, ...]:
    """The five stage widths at ``width`` × the full size (at least one channel each)."""
    if not isinstance(width, (int, float)) or not 0 < width <= 4:
        raise InvalidHyperparameterError(
            f"SegNet width must be a number in (0, 4], got {width!r} (1 = the papers' size)."
        )
    return tuple(max(1, round(f * width)) for f in FILTERS)


def conv_block(cin: int, cout: int) -> nn.Sequential:
    """conv 3×3 (bias) → BatchNorm → ReLU, the SegNet block."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def task_head(channels: int, outputs: int) -> nn.Sequential:
    """conv 3×3 channels→channels then conv 1×1 channels→outputs (no normalisation or activation between)."""
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.Conv2d(channels, outputs, 1))


def init_segnet(module: nn.Module, conv_init: str = "xavier_normal") -> None:
    """The MTAN lineage's initialisation: Xavier conv weights (normal; uniform for Cross-Stitch),
    zero biases, BatchNorm weight 1 and bias 0. On the meta device (a model built only to count its
    parameters) there are no values to set, and PyTorch's meta ``normal_`` would import TorchDynamo
    (~1.5 s of a table notebook's start-up): nothing is done."""
    if any(parameter.is_meta for parameter in module.parameters()):
        return
    init = {"xavier_normal": nn.init.xavier_normal_, "xavier_uniform": nn.init.xavier_uniform_}[conv_init]
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            init(layer.weight)
            nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


@dataclass
class BackboneFeatures:
    """Every intermediate map of one SegNet pass (what MTAN's attention branches read).

    ``first[s]``/``last[s]``: output of the first / last block of encoder stage s (pre-pooling);
    ``indices[s]``: its pooling indices; ``unpooled[j]``/``decoded[j]``: input (after unpooling) and
    output of decoder step j, which mirrors encoder stage 4 − j; ``decoded[-1]`` is the final
    full-resolution feature that the heads read.
    """

    first: list[Tensor] = field(default_factory=list)
    last: list[Tensor] = field(default_factory=list)
    indices: list[Tensor] = field(default_factory=list)
    unpooled: list[Tensor] = field(default_factory=list)
    decoded: list[Tensor] = field(default_factory=list)


class SegNetBackbone(nn.Module):
    """The shared SegNet encoder–decoder: image → ``filters[0]``-channel map at full resolution."""

    def __init__(self, filters: Sequence[int] = FILTERS, in_channels: int = 3) -> None:
        super().__init__()
        self.filters = tuple(filters)
        self.encoder_first = nn.ModuleList()
        self.encoder_rest = nn.ModuleList()
        self.decoder_first = nn.ModuleList()
        self.decoder_rest = nn.ModuleList()
        for stage, extra in enumerate(EXTRA_BLOCKS):
            width = self.filters[stage]
            self.encoder_first.append(conv_block(in_channels if stage == 0 else self.filters[stage - 1], width))
            self.encoder_rest.append(nn.Sequential(*[conv_block(width, width) for _ in range(extra)]))
            out = self.filters[max(stage - 1, 0)]
            self.decoder_first.append(conv_block(width, out))
            self.decoder_rest.append(nn.Sequential(*[conv_block(out, out) for _ in range(extra)]))

    def encode_stage(self, stage: int, inputs: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(first-block output, last-block output, pooled, pooling indices) of encoder stage ``stage``."""
        first = self.encoder_first[stage](inputs)
        last = self.encoder_rest[stage](first)
        pooled, indices = F.max_pool2d(last, 2, 2, return_indices=True)
        return first, last, pooled, indices

    def decode_stage(self, stage: int, inputs: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
        """(unpooled input, output) of the decoder stage mirroring encoder stage ``stage``."""
        unpooled = F.max_unpool2d(inputs, indices, 2, 2)
        return unpooled, self.decoder_rest[stage](self.decoder_first[stage](unpooled))

    def features(self, image: Tensor) -> BackboneFeatures:
        """Run the backbone and keep every intermediate map."""
        check_image(image)
        out = BackboneFeatures()
        hidden = image
        for stage in range(len(EXTRA_BLOCKS)):
            first, last, hidden, indices = self.encode_stage(stage, hidden)
            out.first.append(first)
            out.last.append(last)
            out.indices.append(indices)
        for stage in reversed(range(len(EXTRA_BLOCKS))):
            unpooled, hidden = self.decode_stage(stage, hidden, out.indices[stage])
            out.unpooled.append(unpooled)
            out.decoded.append(hidden)
        return out

    def forward(self, image: Tensor) -> Tensor:
        return self.features(image).decoded[-1]

    def last_block(self) -> nn.Module:
        """The last conv block of the decoder (whose output every head reads)."""
        return self.decoder_rest[0][-1]


def check_image(image: Tensor) -> None:
    if image.dim() != 4 or image.shape[1] != 3:
        raise ShapeError(f"SegNet expects images of shape B×3×H×W, got {tuple(image.shape)}.")
    if image.shape[-2] % 32 or image.shape[-1] % 32:
        raise ShapeError(
            f"SegNet pools five times: height and width must be multiples of 32, got {tuple(image.shape[-2:])} "
            "(NYUv2 288×384 and CityScapes 128×256 are)."
        )


class _HeadsMixin:
    """Task heads over one representation per task (used by the split and MTAN models)."""

    heads: nn.ModuleDict
    task_names: tuple[str, ...]

    def _make_heads(self, channels: int) -> nn.ModuleDict:
        return nn.ModuleDict({task.name: task_head(channels, task.channels) for task in self.tasks})

    def _head(self, task: str, feature: Tensor) -> Tensor:
        return self.task(task).output(self.heads[task](feature))

    def example_inputs(self) -> Tensor:
        """Two 32×32 RGB images (the smallest size five poolings allow)."""
        first = next(self.parameters())
        return torch.zeros(2, 3, 32, 32, device=first.device, dtype=first.dtype)

    def initialise(self, module: nn.Module) -> None:
        init_segnet(module)

    def head_parameters(self) -> list[list[nn.Parameter]]:
        return [list(self.heads[task].parameters()) for task in self.task_names]


@register("split")
class SegNetSplit(_HeadsMixin, MultiTaskModel):
    """Multi-task SegNet with hard parameter sharing ("split" / "standard"): one backbone, one head per task.

    Shared parameters: the backbone. Task t's parameters: its head. Shared representation: the
    backbone's final ``filters[0]``-channel map, which every head reads (the representation of
    MGDA-UB and of the feature-level methods). Last shared layer: the last decoder block.
    """

    def __init__(self, tasks: Iterable[Task] | Mapping[str, Task | int], width: float = 1.0) -> None:
        super().__init__()
        self.set_tasks(tasks)
        self.backbone = SegNetBackbone(scaled_filters(width))
        self.heads = self._make_heads(self.backbone.filters[0])
        init_segnet(self)

    def encode(self, inputs: Tensor) -> Tensor:
        return self.backbone(inputs)

    def decode(self, representation: Tensor) -> dict[str, Tensor]:
        return {task: self._head(task, representation) for task in self.task_names}

    def decode_tasks(self, representations: Sequence[Tensor]) -> dict[str, Tensor]:
        return {task: self._head(task, view) for task, view in zip(self.task_names, representations)}

    def decode_task(self, representation: Tensor, name: str) -> Tensor:
        return self._head(name, representation)

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters())

    def task_parameters(self) -> list[list[nn.Parameter]]:
        return [list(self.heads[task].parameters()) for task in self.task_names]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.last_block().parameters())


@register("single")
class SegNetSingle(SegNetSplit):
    """Single-task SegNet (the "Independent" / "Single-task" / "STL" rows): backbone + one head.

    It is a one-task :class:`SegNetSplit`, so it trains with the same engine.
    """

    def __init__(self, tasks: Iterable[Task] | Mapping[str, Task | int], width: float = 1.0) -> None:
        super().__init__(tasks, width=width)
        if len(self.tasks) != 1:
            raise ConfigError(f"a single-task SegNet takes exactly one task, got {list(self.task_names)}.")
