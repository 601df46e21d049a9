"""`lineage sagemaker pipeline | deploy | invoke | status | logs`: the same jobs on SageMaker."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from lineage.cli.options import Fraction, Json, Pattern, Source, TestSplit, ValSplit, Version
from lineage.cli.output import console, emit_json, progress
from lineage.config import Settings, env_float
from lineage.errors import ConfigError
from lineage.gitops import repository_name
from lineage.ops.deploy import deploy_sagemaker
from lineage.ops.process import ProcessOptions
from lineage.ops.runtime import sagemaker_runner
from lineage.ops.train import TrainOptions, finish_training_job, start_pipeline
from lineage.sagemaker.endpoints import invoke
from lineage.sagemaker.inspection import job_logs, status
from lineage.sagemaker.jobs import PipelineResult, SageMakerConfig

app = typer.Typer(
    help="Run the pipeline, endpoints and queries on Amazon SageMaker.", no_args_is_help=True
)

Role = Annotated[str | None, typer.Option(help="SageMaker execution role ARN.")]
Bucket = Annotated[str | None, typer.Option(help="S3 bucket for the DVC remote and outputs.")]
MlflowUri = Annotated[
    str | None,
    typer.Option(
        help="MLflow App / tracking server ARN (or https URL); default LINEAGE_MLFLOW_URI."
    ),
]
Region = Annotated[str | None, typer.Option(help="AWS region (default from the AWS config).")]
ImageRegistry = Annotated[
    str | None,
    typer.Option(help="ECR registry of the images (default LINEAGE_IMAGE_REGISTRY)."),
]
ImageTag = Annotated[str | None, typer.Option(help="Image tag (default LINEAGE_IMAGE_TAG).")]
InstanceCount = Annotated[
    int,
    typer.Option(
        min=1,
        max=100,
        help="Training instances (ResourceConfig.InstanceCount): DistributedDataParallel "
        "across them, one MLflow run and one registered version.",
    ),
]
GitTokenSecret = Annotated[
    str | None,
    typer.Option(help="Secrets Manager secret with the git token, read by the jobs."),
]
SigningKmsKey = Annotated[
    str | None,
    typer.Option(
        help="AWS KMS key (ECC_NIST_P256, SIGN_VERIFY) the jobs sign their dataset and model "
        "statements with; the role needs kms:Sign and kms:GetPublicKey on it "
        "(default LINEAGE_SIGNING_KMS_KEY_ID)."
    ),
]


def _config(
    *,
    role: str | None,
    bucket: str | None,
    mlflow_uri: str | None,
    region: str | None,
    image_registry: str | None,
    image_tag: str | None,
    **extra: Any,
) -> tuple[SageMakerConfig, Settings]:
    settings = Settings.from_env()
    registry = image_registry or settings.image_registry
    if not registry:
        raise ConfigError(
            "no image registry",
            "push the images (`make push REGISTRY=...`) and pass --image-registry with it",
        )
    config = SageMakerConfig(
        role=role or "",
        bucket=bucket or "",
        mlflow_uri=mlflow_uri or settings.mlflow_uri_override or "",
        image_registry=registry,
        image_tag=image_tag or settings.image_tag,
        region=region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION"),
        poll_s=env_float(os.environ, "LINEAGE_SAGEMAKER_POLL_S", 30.0),
        **extra,
    )
    return config, settings


@app.command()
def pipeline(  # long: a typer command: most lines declare its options
    version: Version,
    fraction: Fraction,
    role: Role = None,
    bucket: Bucket = None,
    dvc_repo_url: Annotated[
        str, typer.Option(help="Dataset git repository (CodeCommit, GitHub...), no credentials.")
    ] = "",
    mlflow_uri: MlflowUri = None,
    source: Source = "digits",
    val_split: ValSplit = 0.1,
    test_split: TestSplit = 0.1,
    pattern: Pattern = "dataset",
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 3,
    learning_rate: Annotated[float, typer.Option(help="Adam learning rate.")] = 0.001,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 64,
    model_name: Annotated[str | None, typer.Option(help="Registered model name.")] = None,
    instance_type: Annotated[
        str, typer.Option(help="Instance type of both jobs.")
    ] = "ml.m5.xlarge",
    instance_count: InstanceCount = 1,
    git_token_secret: GitTokenSecret = None,
    signing_kms_key_id: SigningKmsKey = None,
    pipeline_run_id: Annotated[
        str | None, typer.Option(help="Dataset tag to use (default <version>-<time>-<id>).")
    ] = None,
    region: Region = None,
    image_registry: ImageRegistry = None,
    image_tag: ImageTag = None,
    wait: Annotated[bool, typer.Option(help="Wait for the training job to finish.")] = False,
    json_output: Json = False,
) -> None:
    """Processing job -> training job (the tag it published) on SageMaker, lineage recorded."""
    if not dvc_repo_url:
        raise ConfigError("--dvc-repo-url is required", "pass the dataset repository's URL")
    config, settings = _config(
        role=role,
        bucket=bucket,
        mlflow_uri=mlflow_uri,
        region=region,
        image_registry=image_registry,
        image_tag=image_tag,
        dvc_repo_url=dvc_repo_url,
        processing_instance_type=instance_type,
        training_instance_type=instance_type,
        git_token_secret=git_token_secret,
        signing_kms_key_id=signing_kms_key_id,
    )
    runner = sagemaker_runner(config, settings, progress)
    started = start_pipeline(
        runner.settings,
        ProcessOptions(
            version=version,
            repo=repository_name(dvc_repo_url),
            fraction=fraction,
            source=source,
            val_split=val_split,
            test_split=test_split,
            pattern=pattern,
            pipeline_run_id=pipeline_run_id,
        ),
        TrainOptions(
            tag="",
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            model_name=model_name,
            instance_count=instance_count,
        ),
        stream=False,
        runner=runner,
    )
    processing = started.processing
    result = PipelineResult.started(
        runner.digests, processing.job_name, processing.output, started.training_job
    )
    if wait:
        trained = finish_training_job(runner.settings, runner, started.training_job)
        result = result.completed(trained.output, trained.model_artifact, trained.indexed)
    else:
        progress(f"not waiting: follow it with `lineage sagemaker status {started.training_job}`")
    if json_output:
        emit_json(result.to_json())
    else:
        _print_pipeline(result)


def _print_pipeline(result: PipelineResult) -> None:
    training = result.training()
    console.print(f"[bold]tag[/bold]      {result.pipeline_run_id} -> {result.processed['commit']}")
    console.print(f"[bold]training[/bold] {training['job_name']} ({training['status']})")
    if training.get("model_version"):
        console.print(
            f"[bold]model[/bold]    {training['model_name']} version "
            f"{training['model_version']}, run {training['run_id']}"
        )


@app.command()
def deploy(
    model: Annotated[str, typer.Option("--model", help="NAME@ALIAS or NAME/VERSION")],
    endpoint_name: Annotated[str, typer.Option(help="SageMaker endpoint name.")],
    role: Role = None,
    bucket: Bucket = None,
    mlflow_uri: MlflowUri = None,
    instance_type: Annotated[str, typer.Option(help="Endpoint instance type.")] = "ml.m5.large",
    region: Region = None,
    image_registry: ImageRegistry = None,
    image_tag: ImageTag = None,
    json_output: Json = False,
) -> None:
    """Registry version -> model.tar.gz in S3 -> model, endpoint config, endpoint."""
    config, settings = _config(
        role=role,
        bucket=bucket,
        mlflow_uri=mlflow_uri,
        region=region,
        image_registry=image_registry,
        image_tag=image_tag,
    )
    runner = sagemaker_runner(config, settings, progress)
    result = deploy_sagemaker(runner, model, endpoint_name, instance_type)
    if json_output:
        emit_json(result.to_json())
        return
    console.print(
        f"[bold]{result.endpoint_name}[/bold] InService: {result.model} "
        f"({result.sagemaker_model}) from {result.model_data}"
    )


@app.command(name="invoke")
def invoke_command(
    files: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG).")],
    endpoint_name: Annotated[str, typer.Option(help="SageMaker endpoint name.")],
    region: Region = None,
    json_output: Json = False,
) -> None:
    """InvokeEndpoint with raw image bytes; print each answer with its lineage."""
    answers = invoke(region, endpoint_name, files)
    if json_output:
        emit_json([a.to_json() for a in answers])
        return
    for a in answers:
        answer = a.answer
        lineage = answer.get("lineage", {}) if isinstance(answer, dict) else {}
        console.print(
            f"{a.file}: {answer.get('label') if isinstance(answer, dict) else answer}"
            f"  ({lineage.get('model_name')}/{lineage.get('model_version')}, data "
            f"{str(lineage.get('data_git_commit_id'))[:12]})"
        )


@app.command(name="status")
def status_command(
    job_name: Annotated[str, typer.Argument(help="Processing or training job name.")],
    region: Region = None,
    json_output: Json = False,
) -> None:
    """A job's status, failure reason, lineage tags and log streams."""
    found = status(region, job_name)
    if json_output:
        emit_json(found.to_json())
        return
    console.print(
        f"[bold]{found.name}[/bold] ({found.kind}): {found.status}"
        + (f" / {found.secondary}" if found.secondary else "")
    )
    if found.failure_reason:
        console.print(f"[red]reason[/red]: {found.failure_reason}")
    for key, value in sorted(found.tags.items()):
        console.print(f"  {key} = {value}")
    for stream in found.log_streams:
        console.print(f"  log: {found.log_group}/{stream}")


@app.command(name="logs")
def logs_command(
    job_name: Annotated[str, typer.Argument(help="Processing or training job name.")],
    region: Region = None,
) -> None:
    """Print a job's CloudWatch log."""
    for line in job_logs(region, job_name):
        typer.echo(line)
