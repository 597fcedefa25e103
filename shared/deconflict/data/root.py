"""Finding a dataset under the data root, with an error that says where to get it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from deconflict.errors import DatasetError, DatasetNotFoundError

__all__ = ["DatasetError", "require_dataset"]


def require_dataset(data_root: str | Path, name: str, expected: Iterable[str] = ()) -> Path:
    """Return ``data_root / name`` if it exists and holds every path in ``expected``.

    Otherwise raise :class:`DatasetNotFoundError` naming what is missing, where the dataset is
    documented (``data/<name>/README.md``) and how to point ``data_root`` elsewhere.
    """
    data_root = Path(data_root)
    folder = data_root / name
    readme = f"data/{name}/README.md"
    if not data_root.is_dir():
        raise DatasetNotFoundError(
            f"the data root {data_root} does not exist. Create it and put the datasets there (see "
            f"{readme}), or set `data_root` in params.yaml to where they are; the smoke profile needs none."
        )
    if not folder.is_dir():
        raise DatasetNotFoundError(
            f"dataset {name!r} not found at {folder}. Download it as described in {readme}, or set "
            "`data_root` in params.yaml to the folder that contains it."
        )
    missing = [item for item in expected if not (folder / item).exists()]
    if missing:
        raise DatasetNotFoundError(
            f"dataset {name!r} at {folder} is incomplete: missing {', '.join(missing)}. The expected "
            f"layout is in {readme}."
        )
    return folder
