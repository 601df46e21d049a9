"""`lineage process`: build the Processing job description and run it on the local stack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lineage import contract
from lineage.config import Settings
from lineage.jobspec import ProcessingJobSpec, ProcessingOutput, job_name
from lineage.tracking import DEFAULT_EXPERIMENT
from local.runner import run_processing
from local.runner.launch import job_result
from local.stack import LocalStack

DEFAULT_REPO = "datasets"
PROCESSING_IMAGE = "model-lineage/processing:latest"


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


def build_spec(settings: Settings, options: ProcessOptions, repo_url: str) -> ProcessingJobSpec:
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
        image_uri=PROCESSING_IMAGE,
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
        ],
        environment=environment,
        outputs=[
            ProcessingOutput(
                "lineage",
                "/opt/ml/processing/output/lineage",
                f"s3://{settings.dvc_bucket}/jobs/{name}/output/lineage",
            )
        ],
        region=settings.aws_region,
    )


def process(settings: Settings, options: ProcessOptions, *, stream: bool = True) -> dict[str, Any]:
    """Run the processing job; return its result (tag, commit, md5, counts, ...)."""
    stack = LocalStack(settings)
    repo_url, _ = stack.create_repo(options.repo)
    spec = build_spec(settings, options, repo_url)
    outcome = run_processing(
        spec,
        jobs_root=settings.home / "jobs",
        runtime_env=settings.client_env(),
        runtime=options.runtime,
        stream=stream,
    )
    result = job_result(
        outcome, "processing", outcome.output_dir / contract.PROCESSING_RESULT_DIR / "result.json"
    )
    return result
