"""Run SageMaker-contract jobs on this machine: same config files, env and paths as the cloud.

Runtimes share everything but the launch: `process` runs the job's entry point as a
subprocess under a temp `/opt/ml`; `docker` (with the container images) runs the image.
"""

from local.runner.launch import JobOutcome
from local.runner.processing import run_processing
from local.runner.training import run_training

__all__ = ["JobOutcome", "run_processing", "run_training"]
