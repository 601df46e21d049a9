"""``python -m training [train]``: SageMaker runs ``docker run IMAGE train``."""

import sys

from training.job import main

if len(sys.argv) > 1 and sys.argv[1] not in ("train",):
    sys.stderr.write(f"unknown command {sys.argv[1]!r}: this container runs `train`\n")
    sys.exit(2)
main()
