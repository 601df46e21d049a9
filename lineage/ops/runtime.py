"""The operations choose where jobs run: a `JobRunner` for the local process, local Docker or
SageMaker runtime. The runtimes are imported only here, when chosen, so a SageMaker command
never loads the local harness and a local one never loads boto3."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lineage.config import Settings
from lineage.errors import ConfigError
from lineage.runtime import JobRunner

if TYPE_CHECKING:
    from lineage.sagemaker.jobs import SageMakerConfig
    from lineage.sagemaker.runner import Report, SageMakerRunner

LOCAL_RUNTIMES = ("process", "docker")


def local_runner(settings: Settings, runtime: str = "process") -> JobRunner:
    """Jobs on this machine against its local stack: as subprocesses or in their images."""
    if runtime not in LOCAL_RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}", f"use one of {', '.join(LOCAL_RUNTIMES)}")
    from local.runner.runner import LocalRunner

    return LocalRunner(settings, runtime)


def sagemaker_runner(
    config: SageMakerConfig, base: Settings, report: Report | None = None
) -> SageMakerRunner:
    """Jobs on Amazon SageMaker, in `config`'s account, bucket and images. Its `settings`
    (this bucket, this MLflow, these images) are the ones to build the jobs with."""
    from lineage.sagemaker.runner import SageMakerRunner

    return SageMakerRunner(config, base, report)
