"""Methods by name: ``available()`` lists them, ``get(name, **hparams)`` builds one."""

from __future__ import annotations

from typing import Any, TypeVar

from deconflict.errors import InvalidHyperparameterError, UnknownMethodError
from deconflict.optim._base import Method
from deconflict.registry import Registry

__all__ = ["METHODS", "available", "canonical_name", "get", "method_class", "register"]

#: every registered method class, by name
METHODS: Registry[type[Method]] = Registry("method", error=UnknownMethodError)

M = TypeVar("M", bound=type[Method])


def register(*aliases: str):
    """Class decorator: register a method under its ``name`` and any ``aliases``."""
    return METHODS.register(None, *aliases)


def available(category: str | None = None) -> list[str]:
    """Sorted names of the registered methods (optionally only ``aggregator`` or ``weighting``)."""
    return [name for name, cls in METHODS.items() if category in (None, cls.category)]


def canonical_name(name: str) -> str:
    """The registered name for ``name`` or one of its aliases; unknown names raise."""
    return METHODS.canonical(name)


def method_class(name: str) -> type[Method]:
    """The class registered under ``name`` (or an alias)."""
    return METHODS[name]


def get(name: str, **hparams: Any) -> Method:
    """Build the method registered under ``name`` with the given hyperparameters.

    >>> from deconflict import optim
    >>> optim.get("cagrad", c=0.4)
    CAGrad(c=0.4, rescale=0, reduction='mean')
    """
    cls = method_class(name)
    accepted = cls.hyperparameters()
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        listing = ", ".join(f"{key}={value!r}" for key, value in accepted.items()) or "none"
        raise InvalidHyperparameterError(
            f"{cls.name}: unknown hyperparameter(s) {', '.join(unknown)}; accepted (with defaults): {listing}."
        )
    return cls(**hparams)
