"""Small multi-task models for the gradient-engine and training tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from deconflict.models import MultiTaskModel


class TrunkAndHeads(MultiTaskModel):
    """A shared ``trunk`` and one module per task in ``heads`` (set by subclasses)."""

    trunk: nn.Module
    heads: nn.ModuleList

    def encode(self, inputs: Tensor) -> Tensor:
        return self.trunk(inputs)

    def decode(self, representation: Tensor) -> dict[str, Tensor]:
        return {name: head(representation).squeeze(-1) for name, head in zip(self.task_names, self.heads)}

    def decode_tasks(self, representations) -> dict[str, Tensor]:
        return {name: head(view).squeeze(-1) for name, head, view in zip(self.task_names, self.heads, representations)}

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters())

    def task_parameters(self) -> list[list[nn.Parameter]]:
        return [list(head.parameters()) for head in self.heads]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        last = [m for m in self.trunk.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
        return list(last.parameters())


class MLPMultiTask(TrunkAndHeads):
    """Shared two-layer trunk, one linear head per task."""

    def __init__(self, n_tasks: int, width: int = 6, in_features: int = 5) -> None:
        super().__init__()
        self.task_names = tuple(f"t{i}" for i in range(n_tasks))
        self.trunk = nn.Sequential(nn.Linear(in_features, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(width, 1) for _ in range(n_tasks))


class ConvBNMultiTask(TrunkAndHeads):
    """Conv trunk with BatchNorm (training mode), one head per task."""

    def __init__(self, n_tasks: int, channels: int = 4) -> None:
        super().__init__()
        self.task_names = tuple(f"t{i}" for i in range(n_tasks))
        self.trunk = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()) for _ in range(n_tasks)
        )


class PartlyUnusedMultiTask(MultiTaskModel):
    """A shared parameter that only task 0 uses, and one that no task uses."""

    def __init__(self, n_tasks: int, width: int = 4) -> None:
        super().__init__()
        self.task_names = tuple(f"t{i}" for i in range(n_tasks))
        self.trunk = nn.Linear(3, width)
        self.only_task0 = nn.Parameter(torch.randn(width))
        self.unused = nn.Parameter(torch.randn(2))
        self.heads = nn.ModuleList(nn.Linear(width, 1) for _ in range(n_tasks))

    def encode(self, inputs: Tensor) -> Tensor:
        return torch.relu(self.trunk(inputs))

    def decode(self, representation: Tensor) -> dict[str, Tensor]:
        outputs = {}
        for index, (name, head) in enumerate(zip(self.task_names, self.heads)):
            features = representation * self.only_task0 if index == 0 else representation
            outputs[name] = head(features).squeeze(-1)
        return outputs

    def shared_parameters(self) -> list[nn.Parameter]:
        return [*self.trunk.parameters(), self.only_task0, self.unused]

    def task_parameters(self) -> list[list[nn.Parameter]]:
        return [list(head.parameters()) for head in self.heads]


ARCHITECTURES = {
    "mlp": (MLPMultiTask, lambda batch: torch.randn(batch, 5)),
    "conv_bn": (ConvBNMultiTask, lambda batch: torch.randn(batch, 3, 6, 6)),
    "partly_unused": (PartlyUnusedMultiTask, lambda batch: torch.randn(batch, 3)),
}


def regression_losses(outputs: dict[str, Tensor], targets: Tensor) -> Tensor:
    """Mean squared error per task against targets [B, T]."""
    return torch.stack([((output - targets[:, i]) ** 2).mean() for i, output in enumerate(outputs.values())])
