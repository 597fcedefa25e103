"""Root stage entry point: the index of every table and figure of every paper.

    python pipelines/report.py --papers papers --out papers

Finds every rendered table's and figure's ``manifest.json`` (``papers/*/outputs/*/``) and writes
``index.md`` and ``index.html`` into ``--out``, listing each notebook's tables, figures and metrics,
the profile that made them, and links to the files and the executed notebook; and
``reproduced_on.json``: the CPU vendor of the machine that made them (the smoke profile's numbers are
bit for bit the same on machines of one vendor; ``make verify`` reads it to pick its tolerance).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from deconflict.cli import entrypoint
from deconflict.io import write_text
from deconflict.portable import cpu_vendor
from deconflict.reporting.index import collect, discover, render_html, render_markdown


@entrypoint
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--papers", type=Path, required=True, help="the folder of the paper folders")
    parser.add_argument("--out", type=Path, required=True, help="folder for index.md and index.html")
    args = parser.parse_args(argv)
    entries = collect(args.out, discover(args.papers))
    write_text(args.out / "index.md", render_markdown(entries, args.out))
    write_text(args.out / "index.html", render_html(entries, args.out))
    profiles = sorted({str(e.manifest.get("profile", "?")) for e in entries})
    machine = {"cpu_vendor": cpu_vendor(), "profiles": profiles}
    write_text(args.out / "reproduced_on.json", json.dumps(machine, indent=2) + "\n")
    print(
        f"indexed {sum(len(e.manifest['artifacts']) for e in entries)} artifacts from {len(entries)} notebooks "
        f"into {args.out / 'index.md'} and {args.out / 'index.html'}"
    )


if __name__ == "__main__":
    sys.exit(main())
