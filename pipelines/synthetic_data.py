"""Stage entry point: write the smoke profile's synthetic NYUv2 and CityScapes (the MTAN on-disk format).

    python pipelines/synthetic_data.py --params pipelines/params.yaml --out data/synthetic

Writes ``<out>/nyuv2`` and ``<out>/cityscapes`` with the sizes of the ``synthetic`` section (see
:mod:`deconflict.data.synthetic`: learnable structure, unlabelled pixels and depth holes like the
real data). The folders are replaced as a whole, so a killed stage never leaves half a dataset.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from deconflict.cli import entrypoint
from deconflict.config import load_yaml
from deconflict.data import write_synthetic
from deconflict.errors import ConfigError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, required=True, help="pipelines/params.yaml")
    parser.add_argument("--section", default="synthetic")
    parser.add_argument("--out", type=Path, required=True, help="folder receiving nyuv2/ and cityscapes/")
    return parser.parse_args(argv)


@entrypoint
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    section = load_yaml(args.params).get(args.section)
    if not isinstance(section, dict):
        raise ConfigError(f"{args.params} has no `{args.section}` section.")
    seed = int(section.get("seed", 0))
    args.out.mkdir(parents=True, exist_ok=True)
    for dataset in ("nyuv2", "cityscapes"):
        spec = section.get(dataset)
        if not isinstance(spec, dict) or not {"train", "val", "size"} <= set(spec):
            raise ConfigError(f"{args.params} {args.section}.{dataset} needs train, val and size ([H, W]).")
        staging = Path(tempfile.mkdtemp(prefix=f".{dataset}-", dir=args.out))
        write_synthetic(staging, dataset, train=int(spec["train"]), val=int(spec["val"]),
                        size=tuple(spec["size"]), seed=seed)
        target = args.out / dataset
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
        print(f"{dataset}: {spec['train']} train + {spec['val']} val items of {spec['size'][0]}×{spec['size'][1]} in {target}")


if __name__ == "__main__":
    raise SystemExit(main())
