"""Checkpoints written atomically; loading names the file and the problem when it fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from deconflict.errors import CheckpointError
from deconflict.io import atomic_path

__all__ = ["load_checkpoint", "save_checkpoint"]


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` to a temporary file, then rename it over ``path``."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    try:
        # Our own files: they hold RNG states and NumPy arrays, so the full unpickler is needed.
        state = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist.") from None
    except Exception as error:  # truncated or foreign file
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(error).__name__}: {error}). It is corrupt or not a "
            "deconflict checkpoint: delete it to start the run afresh."
        ) from None
    if not isinstance(state, dict) or "format" not in state:
        raise CheckpointError(f"{path} is not a deconflict checkpoint: delete it to start the run afresh.")
    return state
