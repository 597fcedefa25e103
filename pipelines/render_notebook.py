"""Stage entry point: execute one parameterized notebook with papermill for the active profile.

    python pipelines/render_notebook.py papers/drmgf/notebooks/fig3_toy.ipynb \
        --params papers/drmgf/params.yaml --section fig3_toy \
        --out papers/drmgf/outputs/fig3_toy --executed papers/drmgf/outputs/executed/fig3_toy.ipynb

The notebook's ``parameters`` cell holds the smoke defaults; this script injects the section of
the paper's params file for the active profile (root ``params.yaml``), plus ``profile`` and
``out_dir``. The kernel runs in the notebook's folder. The executed notebook is written to a
temporary file and renamed when complete; if a cell fails it is kept as ``*.failed.ipynb`` and
the error is reported on one line.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from deconflict.cli import entrypoint
from deconflict.config import load_root_params, load_yaml, resolve_profile
from deconflict.errors import ConfigError, DeconflictError

KERNEL = "deconflict"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--params", type=Path, required=True, help="the paper's params.yaml")
    parser.add_argument("--section", help="section with the notebook's parameters (default: notebook name)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the notebook's tables/figures/metrics")
    parser.add_argument("--executed", type=Path, required=True, help="where to write the executed notebook")
    parser.add_argument("--profile", help="override the root params.yaml profile (smoke | full)")
    parser.add_argument("--kernel", default=KERNEL, help=f"Jupyter kernel (default: {KERNEL})")
    return parser.parse_args(argv)


def notebook_parameters(notebook: Path) -> dict:
    import papermill

    return papermill.inspect_notebook(str(notebook))


def check_kernel(name: str) -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    if name not in KernelSpecManager().find_kernel_specs():
        raise ConfigError(
            f"Jupyter kernel {name!r} is not installed. Run `make install` (it registers it), or "
            f"`python -m ipykernel install --sys-prefix --name {name}` in the project's environment."
        )


@entrypoint
def main(argv: list[str] | None = None) -> None:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # papermill streams cell outputs here
    notebook = args.notebook.resolve()
    if not notebook.is_file():
        raise ConfigError(f"notebook {args.notebook} does not exist.")
    root = load_root_params(args.params.parent)
    profile = args.profile or root.profile
    section_name = args.section or notebook.stem
    params = load_yaml(args.params)
    values = resolve_profile(params.get(section_name, {}), profile)

    declared = notebook_parameters(notebook)
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise ConfigError(
            f"{args.params} section {section_name!r} sets {unknown}, which the parameters cell of "
            f"{args.notebook.name} does not define (it defines {sorted(declared)})."
        )
    out_dir = args.out.resolve()
    if out_dir.exists():
        shutil.rmtree(out_dir)  # the stage owns this folder: no stale artifact survives a re-run
    out_dir.mkdir(parents=True)
    values["profile"] = profile
    values["out_dir"] = os.path.relpath(out_dir, notebook.parent)
    check_kernel(args.kernel)

    executed = args.executed.resolve()
    executed.parent.mkdir(parents=True, exist_ok=True)
    partial = executed.with_name(f".{executed.stem}.partial.ipynb")
    failed = executed.with_name(f"{executed.stem}.failed.ipynb")
    failed.unlink(missing_ok=True)
    try:
        papermill.execute_notebook(
            str(notebook), str(partial), parameters=values, cwd=str(notebook.parent),
            kernel_name=args.kernel, log_output=True, progress_bar=False,
        )
    except PapermillExecutionError as error:
        os.replace(partial, failed)
        raise DeconflictError(
            f"{args.notebook.name} failed in cell {error.exec_count}: {error.ename}: {error.evalue}. "
            f"The executed notebook is kept at {failed}."
        ) from None
    os.replace(partial, executed)
    if not (out_dir / "manifest.json").is_file():
        raise DeconflictError(
            f"{args.notebook.name} ran but wrote no manifest.json into {args.out}: its last cell must "
            "call ArtifactWriter.close()."
        )


if __name__ == "__main__":
    sys.exit(main())
