"""``python -m inference serve``: the container's entry point for ``docker run IMAGE serve``."""

from inference.serve import main
from lineage.jobentry import require_command

require_command("serve")
main()
