"""Run folders keyed by what defines a run, so a killed pipeline resumes and a changed one restarts.

A run's key hashes its defining settings, the source code of the library *and* its inputs (the
dataset folder, Recon's scan: :func:`inputs_fingerprint`). A pipeline stage that is killed and
started again finds the folders (and checkpoints) of the runs it already did and resumes them;
after a change of settings, of code or of data the key changes, so nothing stale is ever reused.
:func:`prune_runs` removes folders no longer part of the plan.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deconflict.config import load_yaml
from deconflict.errors import ConfigError

__all__ = ["code_version", "inputs_fingerprint", "plan_entry", "prune_runs", "run_key"]


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


def inputs_fingerprint(data: Path | None = None, files: Sequence[Path] = ()) -> dict[str, str]:
    """What a run read, for its key: ``data`` (a dataset folder) by the relative path, size and
    modification time of every file in it (``make``'s rule: no file is read, so a full-size dataset
    costs a directory walk; regenerating or replacing any file changes it), ``files`` (small inputs,
    e.g. a Recon scan's tables) by their content. A missing path fingerprints as ``"missing"``."""
    out: dict[str, str] = {}
    if data is not None:
        digest = hashlib.sha256()
        if data.is_dir():
            for path in sorted(p for p in data.rglob("*") if p.is_file()):
                stat = path.stat()
                digest.update(f"{path.relative_to(data).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            out["data"] = digest.hexdigest()[:16]
        else:
            out["data"] = "missing"
    for path in files:
        out[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "missing"
    return out


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
