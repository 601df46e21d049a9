"""``python -m training [train]``: SageMaker runs ``docker run IMAGE train``."""

from lineage.jobentry import require_command
from training.job import main

require_command("train")
main()
