"""Root stage entry point: the index of every table and figure of every paper.

    python pipelines/report.py --papers papers --out papers

Finds every rendered table's and figure's ``manifest.json`` (``papers/*/outputs/*/``) and writes
``index.md`` and ``index.html`` into ``--out``, listing each notebook's tables, figures and metrics,
the profile that made them, and links to the files and the executed notebook.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deconflict.cli import entrypoint
from deconflict.io import write_text
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
    print(
        f"indexed {sum(len(e.manifest['artifacts']) for e in entries)} artifacts from {len(entries)} notebooks "
        f"into {args.out / 'index.md'} and {args.out / 'index.html'}"
    )


if __name__ == "__main__":
    sys.exit(main())
