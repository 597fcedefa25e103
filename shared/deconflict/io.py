"""Atomic file output: a killed run never leaves a half-written file that looks valid.

Every result file the project writes (checkpoints, tables, figures, metrics, trajectories) goes
through :func:`atomic_path`: the data is written to a temporary file in the destination folder and
renamed over the destination only once it is complete. ``os.replace`` is atomic on POSIX file
systems, so a reader sees either the old file or the new one, never a torn mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "read_json", "write_csv", "write_json", "write_text"]


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``destination``; on success rename it to ``destination``.

    The parent folder is created if needed. If the body raises, the temporary file is removed and
    ``destination`` is left untouched.

    >>> with atomic_path("out/table.csv") as tmp:          # doctest: +SKIP
    ...     dataframe.to_csv(tmp)
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:  # make the bytes durable before the rename
            os.fsync(handle.fileno())
        os.replace(tmp, destination)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(destination: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``destination`` atomically."""
    with atomic_path(destination) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(destination)


def write_json(destination: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented, key-sorted JSON to ``destination`` atomically.

    Non-finite floats are refused (``allow_nan=False``): JSON has no NaN, and a metrics file with
    ``NaN`` in it would be silently unreadable by ``dvc metrics``.
    """
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=False) + "\n"
    return write_text(destination, text)


def write_csv(destination: str | os.PathLike[str], frame: Any, float_format: str = "%.10g") -> Path:
    """Write a pandas DataFrame as CSV (no index) atomically; floats with 10 significant digits."""
    with atomic_path(destination) as tmp:
        frame.to_csv(tmp, index=False, float_format=float_format)
    return Path(destination)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
