"""Where jobs run: one interface for the local process, local Docker and SageMaker runtimes.

The operations (`lineage.ops`) build a job's description (`jobspec`) the same way for every
runtime, choose a runner (`lineage.ops.runtime`) and hand it the description; the runner
only places and runs it. So a local run and a SageMaker run differ in nothing but the
runner: the same specs, the same result files (`jobresult`), the same checks after the job
(the tag it published, the version it registered, the index). The runners live outside the
core (`local.runner.runner`, `lineage.sagemaker.runner`); the core only names what they do.

Training is started and finished in two calls because a SageMaker pipeline may return as
soon as its training job is created (`lineage sagemaker pipeline` without `--wait`); a
local runner runs the job in `start_training` and hands its outcome back in
`finish_training`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lineage.jobresult import ProcessingResult, TrainingResult
from lineage.jobspec import ProcessingJobSpec, TrainingJobSpec

JOB_KINDS = ("processing", "training", "inference")


@dataclass(frozen=True)
class ProcessingRun:
    """A processing job that completed: its name, its result file, and where the OpenLineage
    events it kept lie (local runs, for replay)."""

    job_name: str
    output: ProcessingResult
    openlineage_events: str | None = None


@dataclass(frozen=True)
class TrainingRun:
    """A training job that completed: its name, its result file, its model.tar.gz (a local
    path or an s3:// URI) and where the OpenLineage events it kept lie."""

    job_name: str
    output: TrainingResult
    model_artifact: str
    openlineage_events: str | None = None


class JobRunner(Protocol):
    """Places a job description on a runtime and runs it.

    Every method fails with a `LineageError` carrying the job's own reason; a runner never
    returns a job that did not complete.

    `runtime_env` is what this machine adds to a job's environment without recording it in
    the description (the dataset URL's credentials, the OpenLineage transport, the local
    stack's keys). A cloud runner ignores it: its jobs get credentials from their execution
    role and the public settings through their description.
    """

    @property
    def name(self) -> str:
        """The runtime's name, as `--runtime` spells it: process, docker, sagemaker."""
        ...

    def prepare(self, kinds: Sequence[str]) -> Mapping[str, str]:
        """Check, before anything is created, that jobs of `kinds` can run (the engine, the
        images, the role and bucket); the images' digests where the runtime knows them."""
        ...

    def dataset_repository(self, repo: str, *, create: bool) -> tuple[str, dict[str, str]]:
        """The URL the jobs clone the dataset repository `repo` from (created first when
        `create` and the runtime hosts it), and the environment carrying its credentials."""
        ...

    def stage_input(self, name: str, directory: Path, run_id: str) -> str:
        """Where the files of `directory` lie for a job's input `name` (the consent snapshot,
        the evidence a job signs with): a local directory, or the s3:// prefix they were
        uploaded to."""
        ...

    def run_processing(
        self, spec: ProcessingJobSpec, *, runtime_env: Mapping[str, str], stream: bool
    ) -> ProcessingRun:
        """Run the processing job to completion and read its result back."""
        ...

    def start_training(
        self,
        spec: TrainingJobSpec,
        *,
        runtime_env: Mapping[str, str],
        stream: bool,
        data_commit: str | None = None,
    ) -> str:
        """Start the training job; its name. `data_commit`, when known, labels the job."""
        ...

    def finish_training(self, job_name: str) -> TrainingRun:
        """Wait for the training job started as `job_name` and read its result back."""
        ...
