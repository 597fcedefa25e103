"""Run folders keyed by what defines a run, so a killed pipeline resumes and a changed one restarts.

A run's key hashes its defining settings *and* the source code of the library. A pipeline stage
that is killed and started again finds the folders (and checkpoints) of the runs it already did
and resumes them; after a change of settings or of code the key changes, so nothing stale is
ever reused. :func:`prune_runs` removes folders no longer part of the plan.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from deconflict.config import load_yaml
from deconflict.errors import ConfigError

__all__ = ["code_version", "plan_entry", "prune_runs", "run_key"]


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of every ``.py`` file of the installed ``deconflict`` package (16 hex digits)."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def run_key(settings: dict[str, Any]) -> str:
    """12 hex digits identifying a run by its settings and the library's code version."""
    text = json.dumps({"settings": settings, "code": code_version()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def prune_runs(runs_dir: Path, keep: set[str]) -> list[str]:
    """Delete sub-folders of ``runs_dir`` whose names are not in ``keep``; return their names."""
    removed = []
    if runs_dir.is_dir():
        for child in sorted(runs_dir.iterdir()):
            if child.is_dir() and child.name not in keep:
                shutil.rmtree(child)
                removed.append(child.name)
    return removed


def plan_entry(plan_file: Path, section: str, name: str) -> dict[str, Any]:
    """Entry ``name`` of the run plan's ``section`` (``runs`` or ``scans`` of ``pipelines/runs.yaml``),
    without its ``family`` (which the plan adds for DVC), or an error that says how to regenerate it."""
    entries = load_yaml(plan_file).get(section) or {}
    if name not in entries:
        raise ConfigError(
            f"no {section[:-1]} {name!r} in {plan_file}; run `python pipelines/plan_runs.py --write` after "
            f"adding it to a paper's tables (known: {len(entries)})."
        )
    entry = dict(entries[name])
    entry.pop("family", None)
    return entry
