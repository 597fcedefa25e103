"""Parameters: the root ``params.yaml``, per-paper ``params.yaml`` files and the two profiles.

The root ``params.yaml`` holds what every paper shares::

    profile: smoke        # smoke (CPU, synthetic data, minutes) | full (the papers' settings, GPU)
    device: auto          # auto | cpu | cuda
    data_root: data       # where the real datasets live (relative to the repository root)
    seeds:
      smoke: [0]
      full: [0, 1, 2]
    plugins: []           # modules to import first: your own methods, models, datasets, families, table kinds

A paper's ``params.yaml`` has one section per stage. Inside a section, the keys ``smoke`` and
``full`` hold the values that differ between profiles; every other key is shared::

    toy:
      c1: 8.0
      smoke: {steps: 600}
      full: {steps: 3000}

:func:`resolve_profile` merges the shared keys with the active profile's keys.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deconflict.errors import ConfigError

__all__ = [
    "DEVICES",
    "PROFILES",
    "RootParams",
    "find_repo_root",
    "load_plugins",
    "load_root_params",
    "load_yaml",
    "paper_tables",
    "reject_unknown",
    "resolve_device",
    "resolve_profile",
    "validate_profile",
]

PROFILES = ("smoke", "full")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class RootParams:
    """The validated root parameters."""

    profile: str
    device: str
    data_root: Path
    seeds: tuple[int, ...]
    repo_root: Path
    plugins: tuple[str, ...] = ()


def find_repo_root(start: str | Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding ``.dvc/`` and ``params.yaml``."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir() and (folder / "params.yaml").is_file():
            return folder
    raise ConfigError(
        f"no deconflict checkout found at or above {here}: expected a folder with .dvc/ and "
        "params.yaml. Run this from inside the repository."
    )


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with an error that names the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"parameter file {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"parameter file {path} is not valid YAML: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"parameter file {path} must hold a mapping, found {type(data).__name__}.")
    return data


def reject_unknown(section: Mapping[str, Any], known: Iterable[str], what: str) -> None:
    """Raise a :class:`ConfigError` naming the keys of ``section`` that are not ``known``.

    ``what`` names the kind of key in the message (e.g. "run setting")."""
    known = list(known)
    unknown = set(section) - set(known)
    if unknown:
        raise ConfigError(f"unknown {what}(s) {sorted(unknown)}; the settings are {', '.join(known)}.")


def validate_profile(profile: Any) -> str:
    """Return ``profile`` if it is ``smoke`` or ``full``, else raise a :class:`ConfigError`."""
    if profile not in PROFILES:
        raise ConfigError(
            f"unknown profile {profile!r}: use 'smoke' (CPU, synthetic data, minutes) or 'full' "
            "(the papers' settings, real data, GPU), e.g. `dvc exp run -S profile=full`."
        )
    return profile


def load_root_params(repo_root: str | Path | None = None) -> RootParams:
    """Load and validate the root ``params.yaml``."""
    root = find_repo_root(repo_root)
    params = load_yaml(root / "params.yaml")
    profile = validate_profile(params.get("profile", "smoke"))
    device = params.get("device", "auto")
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r} in params.yaml: use one of {', '.join(DEVICES)}.")
    data_root = Path(params.get("data_root", "data"))
    if not data_root.is_absolute():
        data_root = root / data_root
    seeds_by_profile = params.get("seeds", {})
    seeds = seeds_by_profile.get(profile, [0]) if isinstance(seeds_by_profile, dict) else seeds_by_profile
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"seeds.{profile} in params.yaml must be a non-empty list of integers, got {seeds!r}.")
    plugins = params.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) and p for p in plugins):
        raise ConfigError(f"plugins in params.yaml must be a list of module names, got {plugins!r}.")
    return RootParams(
        profile=profile, device=device, data_root=data_root, seeds=tuple(seeds), repo_root=root, plugins=tuple(plugins)
    )


def load_plugins(root: RootParams) -> list[str]:
    """Import the modules listed under ``plugins`` in the root ``params.yaml`` (the repository root is
    importable), so that what they register — methods, models, datasets, families, table kinds — is
    known to every stage and notebook. Returns the names imported."""
    import importlib
    import sys

    if root.plugins and str(root.repo_root) not in sys.path:
        sys.path.insert(0, str(root.repo_root))
    for name in root.plugins:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ConfigError(
                f"plugin {name!r} (params.yaml plugins) cannot be imported: {error}. Give a module importable from "
                f"the repository root {root.repo_root} or installed in the environment."
            ) from None
    return list(root.plugins)


def paper_tables(params_path: str | Path) -> dict[str, dict[str, Any]]:
    """The ``tables`` section of a paper's params file: table id → its declaration (with its ``kind``).

    A declaration with ``like: <another table's id>`` takes every field of that table that it does not
    set itself (e.g. a figure drawn from a table's rows: ``{like: table6_nyuv2, kind: run_scatter, ...}``);
    ``reference`` and ``input`` stay its own to give, since the paper's ``render`` stage reads them.
    """
    params = load_yaml(params_path)
    tables = dict(params.get("tables") or {})
    for table_id, section in tables.items():
        if not isinstance(section, dict) or "kind" not in section:
            raise ConfigError(f"{params_path} tables.{table_id}: every table needs a kind (e.g. run_table).")
    for table_id, section in list(tables.items()):
        if "like" in section:
            model = tables.get(section["like"])
            if model is None or "like" in model:
                raise ConfigError(
                    f"{params_path} tables.{table_id}: like: {section['like']!r} must name another table of this "
                    f"paper that has no like: of its own (the tables are {sorted(tables)})."
                )
            missing = [key for key in ("reference", "input") if key not in section]
            if missing:
                raise ConfigError(f"{params_path} tables.{table_id}: a like: table gives its own {missing}.")
            inherited = {key: copy.deepcopy(value) for key, value in model.items() if key not in ("title",)}
            tables[table_id] = {**inherited, **{k: v for k, v in section.items() if k != "like"}}
    return tables


def resolve_profile(section: dict[str, Any], profile: str) -> dict[str, Any]:
    """Merge a params section's shared keys with the keys of ``profile`` (which win).

    >>> resolve_profile({"lr": 0.1, "smoke": {"steps": 5}, "full": {"steps": 500}}, "smoke")
    {'lr': 0.1, 'steps': 5}
    """
    validate_profile(profile)
    merged = {key: copy.deepcopy(value) for key, value in section.items() if key not in PROFILES}
    overrides = section.get(profile) or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"the {profile!r} entry of a params section must be a mapping, got {overrides!r}.")
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **copy.deepcopy(value)}
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def resolve_device(name: str = "auto"):
    """Turn ``auto | cpu | cuda`` into a :class:`torch.device`; ``cuda`` without a GPU is an error."""
    import torch

    if name not in DEVICES:
        raise ConfigError(f"unknown device {name!r}: use one of {', '.join(DEVICES)}.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device 'cuda' was asked for but no CUDA GPU is visible: set `device: auto` or `device: cpu` "
            "in params.yaml, or run on a machine with a GPU."
        )
    return torch.device(name)
