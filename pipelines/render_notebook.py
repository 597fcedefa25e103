"""Stage entry point: execute one table's or figure's notebook with papermill for the active profile.

    python pipelines/render_notebook.py papers/drmgf/notebooks/fig3_toy.ipynb \
        --params papers/drmgf/params.yaml --table fig3_toy \
        --out papers/drmgf/outputs/fig3_toy --executed papers/drmgf/outputs/executed/fig3_toy.ipynb \
        --metrics papers/drmgf/metrics/fig3_toy.json --plots papers/drmgf/plots/fig3_toy.csv

The notebook's ``parameters`` cell holds the smoke defaults (``profile``, ``params_file``,
``table_id``, and ``out_dir = metrics_path = plots_path = None``: write nothing); this script
injects the active profile (root ``params.yaml``) and the output paths, after checking that the
paper's params declare the table. The kernel runs in the notebook's folder. The executed notebook
is written to a temporary file and renamed when complete; if a cell fails it is kept as
``*.failed.ipynb`` and the error is reported on one line.
"""

from __future__ import annotations

from deconflict.portable import pin_process

if __name__ == "__main__":
    pin_process()  # the smoke profile's portable numerics, before NumPy and PyTorch are imported

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

import nbformat

from deconflict.cli import entrypoint
from deconflict.config import load_plugins, load_root_params, paper_tables
from deconflict.errors import ConfigError, DeconflictError
from deconflict.reporting.notebooks import strip_run_metadata

KERNEL = "deconflict"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--params", type=Path, required=True, help="the paper's params.yaml")
    parser.add_argument("--table", help="the table's id in the params' `tables` (default: the notebook's name)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the notebook's tables/figures/metrics")
    parser.add_argument("--executed", type=Path, required=True, help="where to write the executed notebook")
    parser.add_argument("--metrics", type=Path, help="the stage's DVC metrics file (JSON)")
    parser.add_argument("--plots", type=Path, help="the stage's DVC plots file (CSV)")
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
    load_plugins(root)
    profile = args.profile or root.profile
    table_id = args.table or notebook.stem
    tables = paper_tables(args.params)
    if table_id not in tables:
        raise ConfigError(
            f"{args.params} declares no table {table_id!r} under `tables` (it declares {sorted(tables)})."
        )
    declared = notebook_parameters(notebook)
    values = {
        "profile": profile,
        "table_id": table_id,
        "params_file": os.path.relpath(args.params.resolve(), notebook.parent),
    }
    for name, path in (("out_dir", args.out), ("metrics_path", args.metrics), ("plots_path", args.plots)):
        if path is not None:
            values[name] = os.path.relpath(path.resolve(), notebook.parent)
    undeclared = sorted(set(values) - set(declared))
    if undeclared:
        raise ConfigError(
            f"the parameters cell of {args.notebook.name} does not define {undeclared} (it defines "
            f"{sorted(declared)}); a table notebook's parameters are profile, params_file, table_id, out_dir, "
            "metrics_path and plots_path."
        )
    out_dir = args.out.resolve()
    if out_dir.exists():
        shutil.rmtree(out_dir)  # the stage owns this folder: no stale artifact survives a re-run
    out_dir.mkdir(parents=True)
    check_kernel(args.kernel)

    executed = args.executed.resolve()
    executed.parent.mkdir(parents=True, exist_ok=True)
    partial = executed.with_name(f".{executed.stem}.partial.ipynb")
    failed = executed.with_name(f"{executed.stem}.failed.ipynb")
    failed.unlink(missing_ok=True)
    try:
        papermill.execute_notebook(
            str(notebook),
            str(partial),
            parameters=values,
            cwd=str(notebook.parent),
            kernel_name=args.kernel,
            log_output=True,
            progress_bar=False,
        )
    except PapermillExecutionError as error:
        os.replace(partial, failed)
        raise DeconflictError(
            f"{args.notebook.name} failed in cell {error.exec_count}: {error.ename}: {error.evalue}. "
            f"The executed notebook is kept at {failed}."
        ) from None
    executed_notebook = nbformat.read(partial, as_version=4)
    nbformat.write(strip_run_metadata(executed_notebook), partial)  # the same bytes wherever it ran
    os.replace(partial, executed)
    if not (out_dir / "manifest.json").is_file():
        raise DeconflictError(
            f"{args.notebook.name} ran but wrote no manifest.json into {args.out}: its last cell must "
            "call report.close()."
        )


if __name__ == "__main__":
    sys.exit(main())
