"""Methods by name: ``available()`` lists them, ``get(name, **hparams)`` builds one."""

from __future__ import annotations

from typing import Any, TypeVar

from deconflict.errors import InvalidHyperparameterError, UnknownMethodError
from deconflict.optim._base import Method

__all__ = ["register", "available", "get", "method_class", "canonical_name"]

_REGISTRY: dict[str, type[Method]] = {}
_ALIASES: dict[str, str] = {}

M = TypeVar("M", bound=type[Method])


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def register(*aliases: str):
    """Class decorator: register a method under its ``name`` and any ``aliases``."""

    def decorate(cls: M) -> M:
        key = _normalise(cls.name)
        if not key or key in _REGISTRY:
            raise RuntimeError(f"cannot register method {cls.__name__} under {cls.name!r}")
        _REGISTRY[key] = cls
        for alias in aliases:
            _ALIASES[_normalise(alias)] = key
        return cls

    return decorate


def available(category: str | None = None) -> list[str]:
    """Sorted names of the registered methods (optionally only ``aggregator`` or ``weighting``)."""
    return sorted(key for key, cls in _REGISTRY.items() if category in (None, cls.category))


def canonical_name(name: str) -> str:
    """The registered name for ``name`` or one of its aliases; unknown names raise."""
    if not isinstance(name, str):
        raise UnknownMethodError(f"method name must be a string, got {name!r}; valid names: {', '.join(available())}.")
    key = _normalise(name)
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise UnknownMethodError(
            f"unknown method {name!r}; valid names: {', '.join(available())}"
            + (f" (aliases: {', '.join(sorted(_ALIASES))})" if _ALIASES else "")
            + "."
        )
    return key


def method_class(name: str) -> type[Method]:
    """The class registered under ``name`` (or an alias)."""
    return _REGISTRY[canonical_name(name)]


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
