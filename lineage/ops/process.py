"""`lineage process`: build the Processing job description and run it on the chosen runtime."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lineage import contract
from lineage.config import Settings
from lineage.errors import ConfigError, LineageError
from lineage.jobresult import ProcessingResult
from lineage.jobspec import (
    ProcessingInput,
    ProcessingJobSpec,
    ProcessingOutput,
    dataset_tag,
    job_name,
)
from lineage.openlineage.emit import forwarded_env
from lineage.ops.runtime import local_runner
from lineage.runtime import JobRunner
from lineage.tracking import DEFAULT_EXPERIMENT

DEFAULT_REPO = "datasets"
PATTERNS = ("dataset", "record")


@dataclass(frozen=True)
class ProcessOptions:
    version: str
    fraction: float
    source: str = "digits"
    val_split: float = 0.1
    test_split: float = 0.1
    seed: int = 42
    repo: str = DEFAULT_REPO
    experiment: str = DEFAULT_EXPERIMENT
    pipeline_run_id: str | None = None
    runtime: str = "process"
    pattern: str = "dataset"  # dataset | record


@dataclass(frozen=True)
class ProcessResult:
    """What `lineage process` did: the job's own result (the dataset version it published),
    the job's name and, when it kept any, where its OpenLineage events are (for replay)."""

    output: ProcessingResult
    job_name: str
    openlineage_events: str | None = None

    def to_json(self) -> dict[str, Any]:
        """What `process --json` prints: the job's result file, then what the run adds."""
        found = {**self.output.to_json(), "job_name": self.job_name}
        if self.openlineage_events is not None:
            found["openlineage_events"] = self.openlineage_events
        return found


def build_spec(
    settings: Settings,
    options: ProcessOptions,
    repo_url: str,
    consent_source: str | None = None,
) -> ProcessingJobSpec:
    """The job description; `consent_source` (record pattern) is where the consent snapshot
    taken at job start lies (a local directory here, an s3:// prefix on SageMaker)."""
    environment = {
        "DVC_REPO_URL": repo_url,
        "DVC_REPO_NAME": options.repo,
        "DVC_REMOTE_URL": settings.dvc_remote_url,
        "MLFLOW_TRACKING_URI": settings.mlflow_uri,
        "MLFLOW_EXPERIMENT_NAME": options.experiment,
    }
    if options.pipeline_run_id:
        environment["PIPELINE_RUN_ID"] = options.pipeline_run_id
    name = job_name(f"process-{options.version}")
    return ProcessingJobSpec(
        name=name,
        image_uri=settings.image_uri("processing"),
        arguments=[
            "--data-version",
            options.version,
            "--data-fraction",
            str(options.fraction),
            "--val-split",
            str(options.val_split),
            "--test-split",
            str(options.test_split),
            "--seed",
            str(options.seed),
            "--source",
            options.source,
            *(["--pattern", options.pattern] if options.pattern != "dataset" else []),
        ],
        environment=environment,
        inputs=[
            ProcessingInput(
                contract.CONSENT_INPUT_NAME,
                consent_source,
                f"{contract.PROCESSING_INPUT_DIR}/{contract.CONSENT_INPUT_NAME}",
            )
        ]
        if consent_source
        else [],
        outputs=[
            ProcessingOutput(
                contract.PROCESSING_RESULT_OUTPUT,
                f"{contract.PROCESSING_OUTPUT_DIR}/{contract.PROCESSING_RESULT_DIR}",
                f"s3://{settings.dvc_bucket}/jobs/{name}/output/{contract.PROCESSING_RESULT_OUTPUT}",
            )
        ],
        region=settings.aws_region,
    )


def process(
    settings: Settings,
    options: ProcessOptions,
    *,
    stream: bool = True,
    runner: JobRunner | None = None,
) -> ProcessResult:
    """Run the processing job (on the local runtime `options.runtime` unless a `runner` is
    given); return its result (tag, commit, md5, counts, ...)."""
    runner = runner or local_runner(settings, options.runtime)
    runner.prepare(("processing",))
    return run_processing_job(settings, options, runner, stream=stream)


def run_processing_job(
    settings: Settings, options: ProcessOptions, runner: JobRunner, *, stream: bool
) -> ProcessResult:
    """The processing job on a prepared runner. The dataset tag is chosen here and given to
    the job (PIPELINE_RUN_ID); the job's result must confirm it, whatever ran it."""
    if options.pattern not in PATTERNS:
        raise ConfigError(f"unknown pattern {options.pattern!r}", "use dataset or record")
    run_id = dataset_tag(options.version, options.pipeline_run_id)
    options = replace(options, pipeline_run_id=run_id)
    repo_url, url_auth = runner.dataset_repository(options.repo, create=True)
    with tempfile.TemporaryDirectory(prefix="lineage-consent-") as tmp:
        consent_source = None
        if options.pattern == "record":
            consent_source = runner.stage_consent(
                take_consent_snapshot(settings, Path(tmp)), run_id
            )
        spec = build_spec(settings, options, repo_url, consent_source)
        run = runner.run_processing(
            spec, runtime_env={**url_auth, **forwarded_env()}, stream=stream
        )
    if run.output.tag != run_id:
        raise LineageError(
            f"processing job {run.job_name} published tag {run.output.tag!r}, expected {run_id}",
            "the job did not use PIPELINE_RUN_ID: check the processing image version",
        )
    return ProcessResult(
        output=run.output, job_name=run.job_name, openlineage_events=run.openlineage_events
    )


def take_consent_snapshot(settings: Settings, directory: Path) -> Path:
    """The consent registry's state now, as the file the job reads; fails when empty."""
    from lineage.consent.store import ConsentStore

    snapshot = ConsentStore.from_settings(settings).snapshot()
    if not snapshot.consenting and not snapshot.withdrawn:
        raise ConfigError(
            "the consent registry is empty",
            "import the registry first: `lineage consent import registry.csv`",
        )
    snapshot.write(directory)
    return directory
