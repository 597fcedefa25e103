"""Train several runs of the plan one after another in one process: what `make repro`'s local workers
(`pipelines/launch.py --workers N`) do with their share of the stale runs.

    python pipelines/train_batch.py --report results.json -- "--run a --out runs/a --work work/a" "--run b ..."

Each argument after ``--`` holds the arguments of one training stage's own command (``python train.py
<arguments>`` in its ``dvc.yaml``, run in ``pipelines/``). Every run goes through the same
:func:`train.main` its own process would run, seeds everything itself and so computes the same bits
(``tests/test_launch.py`` trains runs both ways and compares their files), without paying the
interpreter's, PyTorch's and TorchDynamo's start-up once per run (~4 s of a ~13 s smoke run). A run that
fails does not stop the others. The report (written atomically) lists each run's arguments, exit status
and seconds.
"""

from __future__ import annotations

from deconflict.portable import pin_process

if __name__ == "__main__":
    pin_process()  # the smoke profile's portable numerics, before NumPy and PyTorch are imported

import argparse
import shlex
import sys
import time
import traceback
from pathlib import Path

import train

from deconflict.io import write_json


def run_one(arguments: str) -> int:
    """One stage's ``train.py`` in this process; its exit status (a crash is status 1, with its trace)."""
    try:
        status = train.main(shlex.split(arguments))
    except SystemExit as exit:  # argparse's errors
        status = exit.code if isinstance(exit.code, int) else 1
    except Exception:  # a bug, not bad input (train.main turns bad input into status 2 itself)
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return int(status or 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--report", type=Path, required=True, help="JSON file for each run's status and seconds")
    parser.add_argument("stages", nargs="+", help="the arguments of each stage's train.py, one string per stage")
    args = parser.parse_args(argv)
    results = []
    for arguments in args.stages:
        started = time.perf_counter()
        status = run_one(arguments)
        results.append({"arguments": arguments, "status": status, "seconds": time.perf_counter() - started})
    write_json(args.report, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
