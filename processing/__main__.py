"""``python -m processing``: the Processing job's entry point (the image's ENTRYPOINT)."""

from processing.job import main

main()
