"""`lineage process`: build the Processing job description and run it on the local stack."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lineage import contract
from lineage.config import Settings
from lineage.errors import ConfigError
from lineage.jobresult import ProcessingResult
from lineage.jobspec import ProcessingInput, ProcessingJobSpec, ProcessingOutput, job_name
from lineage.openlineage.emit import KEEP_DIR, forwarded_env
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


def process(settings: Settings, options: ProcessOptions, *, stream: bool = True) -> ProcessResult:
    """Run the processing job; return its result (tag, commit, md5, counts, ...)."""
    # the local runtime, imported here: `lineage sagemaker` uses this module's build_spec
    from local.runner import run_processing
    from local.runner.launch import require_completed
    from local.stack import stack_for

    if options.pattern not in PATTERNS:
        raise ConfigError(f"unknown pattern {options.pattern!r}", "use dataset or record")
    stack = stack_for(settings)
    repo_url, _ = stack.create_repo(options.repo)
    with tempfile.TemporaryDirectory(prefix="lineage-consent-") as tmp:
        consent_dir = None
        if options.pattern == "record":
            consent_dir = take_consent_snapshot(settings, Path(tmp))
        spec = build_spec(settings, options, repo_url, consent_dir)
        outcome = run_processing(
            spec,
            jobs_root=settings.home / "jobs",
            runtime_env={**settings.client_env(), **forwarded_env()},
            runtime=options.runtime,
            stream=stream,
        )
    lineage_dir = outcome.output_dir / contract.PROCESSING_RESULT_DIR
    require_completed(outcome, "processing")
    kept = lineage_dir / KEEP_DIR  # the OpenLineage events it produced, for replay
    return ProcessResult(
        output=ProcessingResult.read(lineage_dir / contract.PROCESSING_RESULT_FILE),
        job_name=outcome.name,
        openlineage_events=str(kept) if kept.is_dir() else None,
    )


def take_consent_snapshot(settings: Settings, directory: Path) -> str:
    """The consent registry's state now, as the file the job reads; fails when empty."""
    from lineage.consent.store import ConsentStore

    snapshot = ConsentStore.from_settings(settings).snapshot()
    if not snapshot.consenting and not snapshot.withdrawn:
        raise ConfigError(
            "the consent registry is empty",
            "import the registry first: `lineage consent import registry.csv`",
        )
    snapshot.write(directory)
    return str(directory)
