"""Run SageMaker-contract jobs on this machine: same config files, env and paths as the cloud.

Runtimes share everything but the launch: `process` runs the job's entry point as a
subprocess under a temp `/opt/ml`; `docker` (with the container images) runs the image.
"""

from local.runner.processing import JobOutcome, run_processing

__all__ = ["JobOutcome", "run_processing"]
