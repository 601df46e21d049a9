"""``python -m inference serve``: the container's entry point for ``docker run IMAGE serve``."""

import sys

from inference.serve import main

if len(sys.argv) > 1 and sys.argv[1] != "serve":
    sys.stderr.write(f"unknown command {sys.argv[1]!r}: this container runs `serve`\n")
    sys.exit(2)
main()
