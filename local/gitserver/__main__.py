"""``python -m local.gitserver --root DIR --host H --port P``: what `lineage stack up` starts."""

from __future__ import annotations

import argparse
from pathlib import Path

from local.gitserver.server import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m local.gitserver", description=__doc__)
    parser.add_argument("--root", required=True, type=Path, help="directory of bare repos")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    serve(args.root, args.host, args.port)


if __name__ == "__main__":
    main()
