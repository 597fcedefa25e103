"""Helpers for the command-line entry points in ``pipelines/``."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from deconflict.errors import DeconflictError

__all__ = ["entrypoint"]


def entrypoint(main: Callable[..., Any]) -> Callable[..., int]:
    """Wrap ``main`` so that a :class:`DeconflictError` prints one line and exits with status 2.

    Bad input (an unknown method, a profile other than smoke/full, a missing dataset, a NaN loss)
    is the user's to fix: they get the message, not a stack trace from deep inside torch.
    """

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            main(*args, **kwargs)
        except DeconflictError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(
                "interrupted: completed runs and checkpoints are kept; run the same command to resume.", file=sys.stderr
            )
            return 130
        return 0

    return wrapper
