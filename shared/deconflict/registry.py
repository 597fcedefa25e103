"""Things found by name: one :class:`Registry` per kind (methods, models, datasets, tasks, families, …).

A registry maps a name (and its aliases) to a class or factory. Names are matched after lower-casing
and turning ``-`` and spaces into ``_``; an unknown name raises :class:`~deconflict.errors.UnknownNameError`
listing the valid ones. A package exposes its registry as module functions, e.g.
``deconflict.models.available()`` / ``deconflict.models.get(name, **kwargs)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from deconflict.errors import UnknownNameError

__all__ = ["Registry", "normalise_name"]

T = TypeVar("T")


def normalise_name(name: str) -> str:
    """``"Nash-MTL"`` → ``"nash_mtl"``: the form names are compared in."""
    return name.strip().lower().replace("-", "_").replace(" ", "_")


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` is used in messages: "method", "model", "dataset", …)."""

    def __init__(self, kind: str, error: type[UnknownNameError] = UnknownNameError) -> None:
        self.kind = kind
        self._error = error
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def add(self, name: str, entry: T, *aliases: str) -> T:
        """Register ``entry`` under ``name`` (and ``aliases``); a name can be taken only once."""
        key = normalise_name(name)
        if not key or key in self._entries or key in self._aliases:
            raise RuntimeError(f"cannot register {self.kind} {name!r}: the name is empty or taken")
        self._entries[key] = entry
        for alias in aliases:
            alias_key = normalise_name(alias)
            if alias_key in self._entries or alias_key in self._aliases:
                raise RuntimeError(f"cannot register alias {alias!r} of {self.kind} {name!r}: taken")
            self._aliases[alias_key] = key
        return entry

    def register(self, name: str | None = None, *aliases: str) -> Callable[[T], T]:
        """Class decorator: register under ``name`` (default: the class's ``name`` attribute)."""

        def decorate(entry: T) -> T:
            return self.add(name or entry.name, entry, *aliases)

        return decorate

    def remove(self, name: str) -> None:
        """Forget ``name`` and its aliases (for tests that register something temporarily)."""
        key = self.canonical(name)
        del self._entries[key]
        self._aliases = {alias: target for alias, target in self._aliases.items() if target != key}

    def available(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def aliases(self) -> dict[str, str]:
        return dict(sorted(self._aliases.items()))

    def canonical(self, name: Any) -> str:
        """The registered name for ``name`` or one of its aliases; unknown names raise."""
        key = normalise_name(name) if isinstance(name, str) else None
        key = self._aliases.get(key, key) if key is not None else None
        if key not in self._entries:
            aliases = f" (aliases: {', '.join(self._aliases)})" if self._aliases else ""
            raise self._error(f"unknown {self.kind} {name!r}; valid names: {', '.join(self.available())}{aliases}.")
        return key

    def __getitem__(self, name: str) -> T:
        return self._entries[self.canonical(name)]

    def __contains__(self, name: object) -> bool:
        try:
            self.canonical(name)
        except UnknownNameError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self.available())

    def items(self) -> list[tuple[str, T]]:
        return [(name, self._entries[name]) for name in self.available()]
