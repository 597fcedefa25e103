"""Turning what a user asks for (a name, a method, or parts) into the methods of one training run."""

from __future__ import annotations

from dataclasses import dataclass

from deconflict.errors import ConfigError
from deconflict.optim._base import Aggregator, Combined, LossWeighting, Method, Regularizer
from deconflict.optim._registry import get

__all__ = ["MethodSet", "resolve"]


@dataclass
class MethodSet:
    """The loss weighting, aggregator and regularizer of one run (any may be absent but the weighting)."""

    weighting: LossWeighting
    aggregator: Aggregator | None = None
    regularizer: Regularizer | None = None

    @property
    def all(self) -> list[Method]:
        return [m for m in (self.weighting, self.aggregator, self.regularizer) if m is not None]

    def describe(self) -> str:
        return " + ".join(repr(m) for m in self.all)


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _build(method: Method | str | None) -> Method | None:
    if method is None or isinstance(method, Method):
        return method
    return get(method)


def resolve(
    method: Method | str | None = None,
    *,
    weighting: LossWeighting | str | None = None,
    aggregator: Aggregator | str | None = None,
    regularizer: Regularizer | str | None = None,
) -> MethodSet:
    """Sort ``method`` (any category) and the explicit parts into a :class:`MethodSet`.

    Without a loss weighting, equal weighting (sum) is used. Asking for two methods of the same
    kind, or a regularizer together with an aggregator, is an error that says so.
    """
    parts: dict[str, Method] = {}

    def put(candidate: Method | None, expected: str | None) -> None:
        if candidate is None:
            return
        if expected is not None and candidate.category != expected:
            raise ConfigError(
                f"{candidate.name} is {_a(candidate.category)}, not {_a(expected)}: pass it as "
                f"{candidate.category}= (or as method=)."
            )
        if isinstance(candidate, Combined):
            put(candidate.weighting, None)
            put(candidate.aggregator, None)
            return
        if candidate.category in parts:
            raise ConfigError(
                f"two {candidate.category}s given ({parts[candidate.category].name} and {candidate.name}); "
                "a run has at most one of each kind."
            )
        parts[candidate.category] = candidate

    put(_build(method), None)
    put(_build(weighting), "weighting")
    put(_build(aggregator), "aggregator")
    put(_build(regularizer), "regularizer")
    if "regularizer" in parts and "aggregator" in parts:
        raise ConfigError(
            f"{parts['regularizer'].name} regularizes the summed loss; it cannot be combined with the "
            f"aggregator {parts['aggregator'].name}."
        )
    return MethodSet(
        weighting=parts.get("weighting") or get("equal"),
        aggregator=parts.get("aggregator"),
        regularizer=parts.get("regularizer"),
    )
