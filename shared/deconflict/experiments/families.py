"""Experiment families: the datasets and models that are trained and evaluated the same way.

A family groups what the papers' experiments share — their datasets, models and training
settings. Everything else (what defines a run, training it, evaluating it on its tasks,
summarising it, tables) is the generic core's. A new family registers itself in its own module::

    from deconflict.experiments.families import Family, register_family

    register_family(Family(
        name="multi_exit", datasets=("cifar100",), models=("vgg_sdn", "msdnet"),
        default_lr=0.1, description="multi-exit classification (exits are tasks)",
    ))

and adds a settings section of the same name under ``training`` in ``pipelines/params.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass

from deconflict.errors import ConfigError, UnknownNameError
from deconflict.registry import Registry

__all__ = ["FAMILIES", "Family", "family_of", "register_family"]


@dataclass(frozen=True)
class Family:
    """What a family of experiments is made of.

    Attributes:
        name: its key (``training.<name>`` in ``pipelines/params.yaml`` holds its profile settings).
        datasets: the registered datasets (``deconflict.data``) its runs train on.
        models: the registered models (``deconflict.models``) its runs may use; ``single_task_model``
            is the one a "single-task" table row trains once per task.
        default_lr: the initial learning rate of a run that does not set one (at full scale).
        description: one line for listings.
    """

    name: str
    datasets: tuple[str, ...]
    models: tuple[str, ...]
    single_task_model: str | None = None
    default_lr: float = 1e-4
    description: str = ""


#: every family, by name
FAMILIES: Registry[Family] = Registry("experiment family", error=UnknownNameError)


def register_family(family: Family) -> Family:
    """Make ``family`` known to run definitions, the run plan and the training stage."""
    return FAMILIES.add(family.name, family)


def family_of(dataset: str) -> Family:
    """The family whose runs train on ``dataset``."""
    for _, family in FAMILIES.items():
        if dataset in family.datasets:
            return family
    known = sorted(d for _, f in FAMILIES.items() for d in f.datasets)
    raise ConfigError(f"no experiment family trains on dataset {dataset!r}; the datasets are {', '.join(known)}.")


register_family(
    Family(
        name="dense",
        datasets=("nyuv2", "cityscapes"),
        models=("single", "split", "mtan", "cross_stitch"),
        single_task_model="single",
        default_lr=1e-4,
        description="dense prediction: NYUv2 / CityScapes with SegNet, SegNet-MTAN, Cross-Stitch",
    )
)
