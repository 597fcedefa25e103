"""Layer 2 — tasks as objects (``deconflict.tasks``).

A :class:`Task` says, for one output of a multi-task model, its output activation, loss, metrics
(with their direction and the columns the papers print), and how its target is stored and follows
the image under augmentation (see :mod:`deconflict.tasks.base`). Tasks are found by kind:

>>> from deconflict import tasks
>>> tasks.get("segmentation", classes=13)
SemanticSegmentation(name='segmentation', channels=13)
>>> tasks.resolve({"segmentation": 13, "depth": 1})        # name → output channels
(SemanticSegmentation(name='segmentation', channels=13), Depth(name='depth', channels=1))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from deconflict.errors import ConfigError
from deconflict.registry import Registry
from deconflict.tasks.base import MetricColumn, Task, TaskLoss, Window, describe, resize_window, task_names
from deconflict.tasks.dense import Depth, SemanticSegmentation, SurfaceNormal

#: every kind of task, by name
TASKS: Registry[type[Task]] = Registry("task")
for _cls in (SemanticSegmentation, Depth, SurfaceNormal):
    TASKS.add(_cls.kind, _cls)


def available() -> list[str]:
    """The registered kinds of task."""
    return TASKS.available()


def get(kind: str, **kwargs: Any) -> Task:
    """A task of the registered ``kind`` (e.g. ``get("segmentation", classes=13)``)."""
    return TASKS[kind](**kwargs)


def resolve(tasks: Iterable[Task] | Mapping[str, Task | int]) -> tuple[Task, ...]:
    """Task objects from tasks, or from a mapping name → task or name → output channels (the name
    is then the task's kind: ``{"segmentation": 13, "depth": 1, "normal": 3}``)."""
    if isinstance(tasks, Mapping):
        resolved = []
        for name, spec in tasks.items():
            if isinstance(spec, Task):
                resolved.append(spec)
            elif isinstance(spec, int) and not isinstance(spec, bool):
                resolved.append(TASKS[name].from_channels(name, spec))
            else:
                raise ConfigError(f"task {name!r}: give a Task or a number of output channels, got {spec!r}.")
    else:
        resolved = list(tasks)
        if not all(isinstance(task, Task) for task in resolved):
            raise ConfigError(f"expected Task objects, got {resolved!r}.")
    if not resolved:
        raise ConfigError("no task given: a multi-task model needs at least one, e.g. {'segmentation': 13}.")
    names = [task.name for task in resolved]
    if len(set(names)) != len(names):
        raise ConfigError(f"task names must be unique, got {names}.")
    return tuple(resolved)


__all__ = [
    "TASKS",
    "Depth",
    "MetricColumn",
    "SemanticSegmentation",
    "SurfaceNormal",
    "Task",
    "TaskLoss",
    "Window",
    "available",
    "describe",
    "get",
    "resize_window",
    "resolve",
    "task_names",
]
