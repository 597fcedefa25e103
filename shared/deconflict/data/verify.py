"""Check a copy of NYUv2 / CityScapes (MTAN format) against the public release, and pin it by hashes.

    python -m deconflict.data.verify nyuv2 data/nyuv2                 # layout, counts, shapes, values
    python -m deconflict.data.verify nyuv2 data/nyuv2 --write-manifest data/nyuv2/SHA256SUMS
    python -m deconflict.data.verify nyuv2 data/nyuv2 --manifest data/nyuv2/SHA256SUMS

The upstream publishes no checksums (and Dropbox builds its zip archives on the fly, so an
archive hash would not be stable): this checks the extracted content instead — every split and
folder present, the public file counts, indices 0 … N−1, every array's shape and dtype, labels
in {−1, 0 … C−1}, finite values — and can write a ``sha256sum``-compatible manifest of every file
so that a lab pins its copy and verifies it later (``sha256sum -c`` reads the same file).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from deconflict.data.mtan import MTANDataset
from deconflict.errors import DatasetError
from deconflict.numerics import all_finite
from deconflict.tasks import SemanticSegmentation

__all__ = ["file_hashes", "main", "verify_dataset"]


def verify_dataset(
    cls: type[MTANDataset], root: str | Path, *, public: bool = True, sample: int | None = None
) -> list[str]:
    """Problems found in the copy at ``root`` (empty: it matches). ``public``: require the public
    counts and size; ``sample``: check only every k-th item's values (all shapes are always read)."""
    problems = []
    for split in ("train", "val"):
        try:
            dataset = cls(root, split)
        except DatasetError as error:
            problems.append(str(error))
            continue
        if public and len(dataset) != cls.counts[split]:
            problems.append(f"{split}: {len(dataset)} items, the public release has {cls.counts[split]}.")
        step = sample or 1
        for index in range(len(dataset)):
            try:
                image, targets = dataset[index]
            except DatasetError as error:
                problems.append(str(error))
                continue
            if public and tuple(image.shape[-2:]) != cls.size:
                problems.append(f"{split}/{index}: size {tuple(image.shape[-2:])}, the public release is {cls.size}.")
            if index % step:
                continue
            for task in dataset.tasks():
                if isinstance(task, SemanticSegmentation):
                    label = targets[task.name]
                    bad = label[(label != task.ignore_index) & ((label < 0) | (label >= task.classes))]
                    if bad.numel():
                        problems.append(
                            f"{split}/{index}: labels {sorted(set(bad.tolist()))[:5]} outside "
                            f"{task.ignore_index}, 0…{task.classes - 1}."
                        )
            for name, tensor in [("image", image), *targets.items()]:
                if tensor.is_floating_point() and not all_finite(tensor):
                    problems.append(f"{split}/{index}: {name} has NaN or Inf.")
    return problems


def file_hashes(root: str | Path) -> dict[str, str]:
    """SHA-256 of every ``.npy`` file under ``root``, keyed by path relative to ``root``."""
    root = Path(root)
    hashes = {}
    for path in sorted(root.rglob("*.npy")):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        hashes[path.relative_to(root).as_posix()] = digest.hexdigest()
    return hashes


def main(argv: list[str] | None = None) -> int:
    from deconflict.data import DATASETS
    from deconflict.io import write_text

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", choices=[n for n, c in DATASETS.items() if issubclass(c, MTANDataset)])
    parser.add_argument("root", type=Path)
    parser.add_argument("--any-size", action="store_true", help="do not require the public counts and size")
    parser.add_argument("--write-manifest", type=Path, help="write sha256sum-style hashes of every file here")
    parser.add_argument("--manifest", type=Path, help="compare the files with this manifest")
    args = parser.parse_args(argv)
    problems = verify_dataset(DATASETS[args.dataset], args.root, public=not args.any_size)
    if args.manifest or args.write_manifest:
        hashes = file_hashes(args.root)
        if args.write_manifest:
            write_text(args.write_manifest, "".join(f"{h}  {p}\n" for p, h in hashes.items()))
        if args.manifest:
            expected = {}
            for line in args.manifest.read_text().splitlines():  # "<sha256>  <path>", as sha256sum writes
                if line.strip():
                    digest, path = line.split(maxsplit=1)
                    expected[path.strip()] = digest
            for path in sorted(set(expected) | set(hashes)):
                if expected.get(path) != hashes.get(path):
                    if path not in hashes:
                        problems.append(f"{path}: missing")
                    elif path not in expected:
                        problems.append(f"{path}: not in the manifest")
                    else:
                        problems.append(f"{path}: hash differs")
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{args.dataset} at {args.root}: " + ("OK" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
