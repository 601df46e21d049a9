"""The SageMaker job requests, and what a pipeline run returns.

Every job is built by the operations for every runtime (`lineage.ops.process.build_spec`,
`lineage.ops.train.build_spec`), then placed on SageMaker here: the role, the instance type,
S3 locations in your bucket, images in ECR and their digests. The config files a local run
writes and the requests sent here come from one description, so a local run is faithful by
construction. Nothing here calls AWS except through the `upload` it is given.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lineage import contract
from lineage.config import Settings
from lineage.errors import ConfigError, LineageError
from lineage.gitops import TOKEN_SECRET_ENV
from lineage.jobresult import ProcessingResult, TrainingResult
from lineage.jobspec import Channel, ProcessingJobSpec, TrainingJobSpec

# (local file, S3 key, what it is) -> None: puts a file in the configured bucket
Upload = Callable[[Path, str, str], None]


@dataclass(frozen=True)
class SageMakerConfig:
    """Where the pipeline runs. Everything else comes from the job descriptions."""

    role: str
    bucket: str
    mlflow_uri: str
    image_registry: str
    image_tag: str = "latest"
    region: str | None = None
    dvc_repo_url: str = ""
    processing_instance_type: str = "ml.m5.xlarge"
    training_instance_type: str = "ml.m5.xlarge"
    git_token_secret: str | None = None
    poll_s: float = 30.0
    result_timeout_s: float = 300.0
    # the jobs sign their statements with this KMS key (kms:Sign on it for the role)
    signing_kms_key_id: str | None = None

    def settings(self, base: Settings) -> Settings:
        """The job descriptions' settings: this bucket, this MLflow, these images."""
        return dataclasses.replace(
            base,
            dvc_bucket=self.bucket,
            mlflow_bucket=self.bucket,
            mlflow_uri_override=self.mlflow_uri,
            image_registry=self.image_registry,
            image_tag=self.image_tag,
            aws_region=self.region or base.aws_region,
        )

    def job_environment(self, image: str, digest: str = "") -> dict[str, str]:
        """What every job gets besides its own variables: its image (and digest, so the run
        records the exact image), the secret's *name*."""
        env = {"LINEAGE_IMAGE_URI": image}
        if digest:
            env["LINEAGE_IMAGE_DIGEST"] = digest
        if self.region:
            env["AWS_DEFAULT_REGION"] = self.region
        if self.git_token_secret:
            env[TOKEN_SECRET_ENV] = self.git_token_secret
        if self.signing_kms_key_id:  # an id, no secret: the role's kms:Sign does the signing
            env[contract.SIGNING_KMS_ENV] = self.signing_kms_key_id
        return {**env, **public_openlineage_env()}


_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "AUTH")


def public_openlineage_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The OpenLineage settings a SageMaker job needs to emit events (a job's Environment is
    visible in DescribeTrainingJob, so anything that looks like a credential stays out: give
    the job its catalogue credentials through its role, e.g. the DataZone transport)."""
    from lineage.openlineage.emit import forwarded_env

    return {
        k: v
        for k, v in forwarded_env(environ).items()
        if not any(word in k.upper() for word in _SECRET_WORDS) and "@" not in v
    }


MODEL_TAG = "lineage:model"  # NAME/VERSION on a deployed endpoint, its config and model


def lineage_tags(**values: str) -> list[dict[str, str]]:
    """SageMaker tags, so the console shows the lineage too (keys `lineage:<name>`); the
    audits find deployed endpoints by them (`MODEL_TAG`)."""
    return [
        {"Key": f"lineage:{key.replace('_', '-')}", "Value": value[:256]}
        for key, value in values.items()
        if value
    ]


def processing_request(
    config: SageMakerConfig,
    settings: Settings,
    digests: Mapping[str, str],
    base: ProcessingJobSpec,
) -> tuple[ProcessingJobSpec, dict[str, Any]]:
    """The processing job's description placed on SageMaker, and its CreateProcessingJob
    request (tagged with the pipeline run id the description gives the job)."""
    run_id = base.environment.get("PIPELINE_RUN_ID", "")
    spec = dataclasses.replace(
        base,
        environment={
            **base.environment,
            **config.job_environment(base.image_uri, digests.get(base.image_uri, "")),
        },
        role_arn=config.role,
        instance_type=config.processing_instance_type,
        region=settings.aws_region,
    )
    spec.validate()  # 256-character values, LocalPath under /opt/ml/processing, name
    return spec, {**spec.create_request(), "Tags": lineage_tags(pipeline_run_id=run_id)}


def training_request(
    config: SageMakerConfig,
    settings: Settings,
    digests: Mapping[str, str],
    base: TrainingJobSpec,
    commit: str | None,
    upload: Upload,
) -> tuple[TrainingJobSpec, dict[str, Any]]:
    """The training job's description placed on SageMaker (local channel files uploaded to
    the bucket first), and its CreateTrainingJob request, tagged with the dataset tag it
    trains on (the pipeline run id) and, when known, the data commit."""
    run_id = base.hyperparameters.get("dvc_tag", "")
    name = base.name
    spec = dataclasses.replace(
        base,
        environment={
            **base.environment,
            **config.job_environment(base.image_uri, digests.get(base.image_uri, "")),
        },
        role_arn=config.role,
        instance_type=config.training_instance_type,
        region=settings.aws_region,
        output_path=f"s3://{config.bucket}/training",
        checkpoint_s3_uri=f"s3://{config.bucket}/checkpoints/{name}",
        channels=[_placed_channel(config, c, name, upload) for c in base.channels],
    )
    spec.validate()
    tags = lineage_tags(pipeline_run_id=run_id, data_commit=commit or "")
    return spec, {**spec.create_request(), "Tags": tags}


def _placed_channel(config: SageMakerConfig, channel: Channel, job: str, upload: Upload) -> Channel:
    """A local channel source (e.g. pretrained weights) goes to the bucket first."""
    if channel.source.startswith("s3://"):
        return channel
    path = Path(channel.source)
    if not path.is_file():
        raise ConfigError(f"channel {channel.name}: {path} does not exist")
    prefix = f"inputs/{job}/{channel.name}/"
    upload(path, f"{prefix}{path.name}", f"channel {channel.name}")
    return Channel(channel.name, f"s3://{config.bucket}/{prefix}")


def training_output(spec: TrainingJobSpec, data: bytes) -> tuple[TrainingResult, str]:
    """The training job's result file, read from its output.tar.gz, and where its model is."""
    prefix = f"{spec.output_path.rstrip('/')}/{spec.name}/output"
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        member = archive.extractfile(contract.TRAINING_RESULT_FILE)
        if member is None:
            raise LineageError(
                f"{prefix}/{contract.OUTPUT_ARCHIVE} has no {contract.TRAINING_RESULT_FILE}"
            )
        found = json.loads(member.read())
    source = f"{prefix}/{contract.OUTPUT_ARCHIVE}"
    return TrainingResult.from_json(found, source), f"{prefix}/{contract.MODEL_ARCHIVE}"


@dataclass(frozen=True)
class PipelineResult:
    """What `lineage sagemaker pipeline` did: the dataset tag, the images (with digests), the
    processing job and its result, the training job and, when waited for, its result.

    `processed` and `trained` are the jobs' own result files (their keys are the jobs'
    contract, not ours), hence mappings rather than fields."""

    pipeline_run_id: str
    images: Mapping[str, str]
    processing_job: str
    processed: Mapping[str, Any]
    training_job: str
    training_status: str = "InProgress"
    trained: Mapping[str, Any] = field(default_factory=dict)  # empty until waited for
    indexed: bool | None = None  # whether the registered version joined the lineage index

    @classmethod
    def started(
        cls,
        images: Mapping[str, str],
        processing_job: str,
        processed: ProcessingResult,
        training_job: str,
    ) -> PipelineResult:
        """The training job was created: the dataset tag is the one processing published."""
        return cls(processed.tag, images, processing_job, processed.to_json(), training_job)

    def completed(self, trained: TrainingResult, model_data: str, indexed: bool) -> PipelineResult:
        """The training job completed with `trained`; its model lies at `model_data`."""
        return dataclasses.replace(
            self,
            training_status="Completed",
            trained={**trained.to_json(), "model_data": model_data},
            indexed=indexed,
        )

    def training(self) -> dict[str, Any]:
        """The training part of the JSON: name, status, then its result's keys."""
        found = {"job_name": self.training_job, "status": self.training_status, **self.trained}
        return found if self.indexed is None else {**found, "indexed": self.indexed}

    def to_json(self) -> dict[str, Any]:
        """What `pipeline --json` prints (scripts and the integration tests read these keys)."""
        return {
            "pipeline_run_id": self.pipeline_run_id,
            "images": dict(self.images),
            "processing": {"job_name": self.processing_job, **self.processed},
            "training": self.training(),
        }
