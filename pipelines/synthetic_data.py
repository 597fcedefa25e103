"""Stage entry point: write the smoke profile's synthetic datasets, each in its real on-disk format.

    python pipelines/synthetic_data.py --params pipelines/params.yaml --out data/synthetic

Writes ``<out>/<dataset>`` for every dataset of the ``synthetic`` section with its own writer
(``deconflict.data.get(...).write_synthetic``: learnable structure, and the real data's quirks).
Each folder is replaced as a whole, so a killed stage never leaves half a dataset.
"""

from __future__ import annotations

from deconflict.portable import pin_process

if __name__ == "__main__":
    pin_process()  # the smoke profile's portable numerics, before NumPy and PyTorch are imported

import argparse
import shutil
import tempfile
from pathlib import Path

from deconflict import data
from deconflict.cli import entrypoint
from deconflict.config import load_plugins, load_root_params, load_yaml
from deconflict.errors import ConfigError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, required=True, help="pipelines/params.yaml")
    parser.add_argument("--section", default="synthetic")
    parser.add_argument("--out", type=Path, required=True, help="folder receiving one folder per dataset")
    return parser.parse_args(argv)


@entrypoint
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    load_plugins(load_root_params(args.params.parent))
    section = load_yaml(args.params).get(args.section)
    if not isinstance(section, dict) or not isinstance(section.get("datasets"), dict):
        raise ConfigError(f"{args.params} has no `{args.section}.datasets` section (dataset → sizes).")
    seed = int(section.get("seed", 0))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, sizes in section["datasets"].items():
        dataset = data.DATASETS[name]
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=args.out))
        try:
            dataset.write_synthetic(
                staging, seed=seed, **{k: tuple(v) if isinstance(v, list) else v for k, v in (sizes or {}).items()}
            )
        except TypeError as error:
            shutil.rmtree(staging)
            raise ConfigError(f"{args.params} {args.section}.datasets.{name}: {error}") from None
        target = args.out / name
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        print(f"{name}: synthetic copy in {target} ({sizes})")


if __name__ == "__main__":
    raise SystemExit(main())
