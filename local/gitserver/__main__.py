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
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=None,
        help="seconds a connection may stay silent before it is closed (default 30)",
    )
    parser.add_argument(
        "--private-read",
        action="store_true",
        help="clones and fetches need the token too (always when bound beyond loopback)",
    )
    args = parser.parse_args()
    serve(
        args.root,
        args.host,
        args.port,
        public_read=not args.private_read,
        idle_timeout=args.idle_timeout,
    )


if __name__ == "__main__":
    main()
