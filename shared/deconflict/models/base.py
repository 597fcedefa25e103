"""The contract every multi-task model of the project follows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from deconflict import tasks as task_registry
from deconflict.errors import ConfigError, UnknownNameError
from deconflict.registry import Registry
from deconflict.tasks import Task

__all__ = ["MODELS", "MultiTaskModel", "register"]

#: every model class (or factory), by name: ``deconflict.models.get(name, **kwargs)``
MODELS: Registry[Any] = Registry("model", error=UnknownNameError)


def register(name: str, *aliases: str):
    """Class decorator: make a model available to ``deconflict.models.get(name, ...)`` and to run definitions."""
    return MODELS.register(name, *aliases)


class MultiTaskModel(nn.Module):
    """A model with a shared part, task-specific parts and a shared representation.

    Subclasses set their tasks with :meth:`set_tasks` (``tasks``: :class:`~deconflict.tasks.Task`
    objects, which say each output's channels and activation; ``task_names`` follows) and implement:

    * :meth:`encode` — the shared part: inputs → shared representation z;
    * :meth:`decode` — the task-specific part: z → ``{task_name: output}``;
    * :meth:`shared_parameters` and :meth:`task_parameters` (one list per task, in ``task_names`` order).

    ``forward(x) = decode(encode(x))``. Splitting the two lets the training engine take per-task
    gradients either with respect to the shared parameters (parameter level) or with respect to z
    (feature level), for any optimizer.
    """

    task_names: tuple[str, ...] = ()
    tasks: tuple[Task, ...] = ()
    #: whether :meth:`decode_tasks` accepts per-task views of the representation (RotoGrad's
    #: rotations); models whose representation has no channel dimension to rotate set it False
    supports_task_views: bool = True
    #: whether :meth:`encode` returns one representation every task reads (feature-level methods and
    #: monitors need it); Recon's branched models give each task its own stream and set it False
    shared_representation: bool = True

    def set_tasks(self, tasks: Iterable[Task] | Mapping[str, Task | int]) -> tuple[Task, ...]:
        """Store the model's tasks (Task objects, or name → output channels) and their names."""
        self.tasks = task_registry.resolve(tasks)
        self.task_names = tuple(task.name for task in self.tasks)
        return self.tasks

    def task(self, name: str) -> Task:
        """The task called ``name``."""
        for task in self.tasks:
            if task.name == name:
                return task
        raise ConfigError(f"{type(self).__name__} has no task {name!r}; its tasks are {list(self.task_names)}.")

    def encode(self, inputs: Any) -> Tensor:
        raise NotImplementedError

    def decode(self, representation: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def forward(self, inputs: Any) -> dict[str, Tensor]:
        return self.decode(self.encode(inputs))

    def decode_tasks(self, representations: Sequence[Tensor]) -> dict[str, Tensor]:
        """Task t's output computed from ``representations[t]`` (for methods that give each task
        its own view of the representation, e.g. RotoGrad). This default runs :meth:`decode` once
        per task; models override it to run only task t's head."""
        return {name: self.decode(view)[name] for name, view in zip(self.task_names, representations)}

    def decode_task(self, representation: Tensor, name: str) -> Tensor:
        """Task ``name``'s output alone from the representation (what per-task streams need, e.g.
        Recon's branched models). This default runs :meth:`decode`; models override it to run only
        that task's part."""
        return self.decode(representation)[name]

    def example_inputs(self) -> Any:
        """A small batch the model accepts (None when the model cannot say): used to find the order in
        which a forward pass calls its layers (:func:`deconflict.methods.recon.conflict_layers`)."""
        return None

    def initialise(self, module: nn.Module) -> None:
        """Initialise ``module`` (a part of this model) as the model's constructor does. This default
        calls each submodule's ``reset_parameters`` (PyTorch's default initialisation)."""
        for layer in module.modules():
            reset = getattr(layer, "reset_parameters", None)
            if callable(reset):
                reset()

    def shared_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def task_parameters(self) -> list[list[nn.Parameter]]:
        raise NotImplementedError

    def head_parameters(self) -> list[list[nn.Parameter]]:
        """The output heads' parameters, one list per task (a subset of :meth:`task_parameters`).

        The Nash-MTL / FAMO code lineage counts every parameter but these as shared
        (``TrainConfig(shared="all_but_heads")``). By default the task parameters are the heads;
        models with other task-specific modules (SegNet-MTAN's attention gates) override this."""
        return self.task_parameters()

    def downstream_shared_parameters(self) -> list[nn.Parameter]:
        """Shared parameters applied *after* the shared representation (e.g. SegNet-MTAN's shared
        attention blocks). They are part of :meth:`shared_parameters`; at feature level, where the
        aggregated direction flows back through the representation only, they receive the sum of
        the task gradients, as in joint training. Empty by default."""
        return []

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """Parameters of the last shared layer (GradNorm takes its gradient norms there)."""
        raise ConfigError(
            f"{type(self).__name__} does not say which is its last shared layer: implement "
            "last_shared_parameters(), or train at level='feature' (gradients of the representation)."
        )

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)
