"""The same pipeline on Amazon SageMaker: processing -> training -> registry -> endpoint.

This module only orders the steps; each has a module of its own: `jobs` (the requests, built
from the job descriptions the local runner uses), `polling` (waiting, with AWS errors retried
or not by `errors`), `endpoints` (deploy, invoke, finding endpoints by lineage tags),
`inspection` (status, logs), `aws` (clients, preflight checks).

The dataset tag is the pipeline run id, chosen here and passed to the processing job as
``PIPELINE_RUN_ID`` (the reference sample's convention); the processing job's own result
(``result.json`` in its output) must confirm it before training starts.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lineage import contract
from lineage.config import Settings
from lineage.errors import ConfigError, LineageError
from lineage.jobspec import ProcessingJobSpec, TrainingJobSpec, dataset_tag, job_name
from lineage.ops.process import ProcessOptions, take_consent_snapshot
from lineage.ops.train import TrainOptions
from lineage.redact import redact_url
from lineage.sagemaker import aws, endpoints, jobs, polling
from lineage.sagemaker.endpoints import DeployResult
from lineage.sagemaker.jobs import PipelineResult, SageMakerConfig, lineage_tags
from lineage.serving import endpoint_url

Report = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


class Launcher:
    """One SageMaker session: its configuration, clients, and the images' digests."""

    def __init__(
        self,
        config: SageMakerConfig,
        base: Settings,
        report: Report = _quiet,
        *,
        pacing: polling.Pacing | None = None,
    ) -> None:
        self.config = config
        self.settings = config.settings(base)
        self.report = report
        self.pacing = pacing or polling.Pacing(poll_s=config.poll_s)
        self.session = aws.session(config.region)
        self.sagemaker = aws.client(self.session, "sagemaker")
        self.s3 = aws.client(self.session, "s3")
        self.digests: dict[str, str] = {}  # image -> ECR digest, from the preflight check

    # -- checks before anything is created -----------------------------------------------------
    def preflight(self, *images: str) -> dict[str, str]:
        aws.check_role(self.config.role)
        aws.check_bucket(self.s3, self.config.bucket)
        if not self.config.mlflow_uri:
            raise ConfigError(
                "no MLflow tracking URI", "pass --mlflow-uri (an MLflow App ARN or https URL)"
            )
        repo = self.config.dvc_repo_url
        if repo and redact_url(repo) != repo:
            raise ConfigError(
                "--dvc-repo-url carries credentials, which would be stored in the job description",
                "pass the URL without them and the token with --git-token-secret NAME",
            )
        if self.config.git_token_secret:
            secrets = aws.client(self.session, "secretsmanager")
            aws.call(
                f"DescribeSecret {self.config.git_token_secret}",
                "create the secret, or check its name and your permissions",
                secrets.describe_secret,
                SecretId=self.config.git_token_secret,
            )

        def ecr_for(region: str) -> Any:
            return aws.client(aws.session(region), "ecr")

        self.digests = {image: aws.check_image(ecr_for, image) for image in images}
        return self.digests

    def upload(self, path: Path, key: str, what: str) -> None:
        """Put a local file in the bucket (model, channel, consent snapshot)."""
        aws.call(
            f"upload {what}",
            "check s3:PutObject on the bucket",
            self.s3.upload_file,
            Filename=str(path),
            Bucket=self.config.bucket,
            Key=key,
        )

    # -- job requests (shared descriptions + SageMaker placement) ------------------------------
    def processing_job(
        self, options: ProcessOptions, run_id: str, consent_source: str | None
    ) -> tuple[ProcessingJobSpec, dict[str, Any]]:
        return jobs.processing_request(
            self.config, self.settings, self.digests, options, run_id, consent_source
        )

    def training_job(
        self, options: TrainOptions, run_id: str, commit: str
    ) -> tuple[TrainingJobSpec, dict[str, Any]]:
        return jobs.training_request(
            self.config, self.settings, self.digests, options, run_id, commit, self.upload
        )

    # -- running --------------------------------------------------------------------------------
    def pipeline(
        self, process_options: ProcessOptions, train_options: TrainOptions, *, wait: bool = True
    ) -> PipelineResult:
        processing_image = self.settings.image_uri("processing")
        training_image = self.settings.image_uri("training")
        digests = self.preflight(processing_image, training_image)
        run_id = dataset_tag(process_options.version, process_options.pipeline_run_id)
        consent_source = None
        if process_options.pattern == "record":
            consent_source = self._upload_consent_snapshot(run_id)
        spec, request = self.processing_job(process_options, run_id, consent_source)
        self.report(f"CreateProcessingJob {spec.name} ({processing_image})")
        aws.call(
            f"CreateProcessingJob {spec.name}",
            "check the role's permissions and quotas",
            self.sagemaker.create_processing_job,
            **request,
        )
        self.wait("processing", spec.name)
        output = f"{spec.outputs[0].destination.rstrip('/')}/{contract.PROCESSING_RESULT_FILE}"
        processed = json.loads(self._read(output, "the processing job's result"))
        if processed.get("tag") != run_id:
            raise LineageError(
                f"processing job {spec.name} published tag {processed.get('tag')!r}, expected "
                f"{run_id}",
                "the job did not use PIPELINE_RUN_ID: check the processing image version",
            )
        options = dataclasses.replace(train_options, tag=run_id)
        training, train_request = self.training_job(options, run_id, str(processed["commit"]))
        self.report(f"CreateTrainingJob {training.name} ({training_image}), dvc_tag {run_id}")
        aws.call(
            f"CreateTrainingJob {training.name}",
            "check the role's permissions and quotas",
            self.sagemaker.create_training_job,
            **train_request,
        )
        result = PipelineResult(run_id, digests, spec.name, processed, training.name)
        if not wait:
            self.report(f"not waiting: follow it with `lineage sagemaker status {training.name}`")
            return result
        self.wait("training", training.name)
        uri = f"{training.output_path.rstrip('/')}/{training.name}/output/{contract.OUTPUT_ARCHIVE}"
        trained = jobs.training_output(training, self._read(uri, "the training job's output"))
        result = dataclasses.replace(result, training_status="Completed", trained=trained)
        # the registered version joins the lineage index, as a local run's does (audits
        # would otherwise call the index out of date until `lineage index rebuild`)
        from lineage.ops.train import index_version

        indexed = index_version(
            self.settings,
            str(trained.get("model_name", "")),
            trained.get("model_version"),
            str(trained.get("run_id", "")),
        )
        return dataclasses.replace(result, indexed=indexed)

    def _upload_consent_snapshot(self, run_id: str) -> str:
        with tempfile.TemporaryDirectory(prefix="lineage-consent-") as tmp:
            take_consent_snapshot(self.settings, Path(tmp))
            key = f"consent/{run_id}/snapshot.json"
            self.upload(Path(tmp) / "snapshot.json", key, "the consent snapshot")
        return f"s3://{self.config.bucket}/consent/{run_id}/"

    def wait(self, kind: str, name: str) -> dict[str, Any]:
        """Poll until the job ends; report each status change; fail with the job's reason."""
        logs = aws.client(self.session, "logs")
        return polling.wait_job(
            self.sagemaker, kind, name, pacing=self.pacing, report=self.report, logs=logs
        )

    def _read(self, uri: str, what: str) -> bytes:
        pacing = dataclasses.replace(self.pacing, poll_s=min(self.config.poll_s, 2.0))
        return polling.read_object(
            self.s3, uri, what, pacing=pacing, timeout_s=self.config.result_timeout_s
        )

    # -- deploying ------------------------------------------------------------------------------
    def deploy(self, ref: str, endpoint_name: str, instance_type: str) -> DeployResult:
        from lineage.ops.deploy import deploy_lineage_run, materialize

        image = self.settings.image_uri("inference")
        digests = self.preflight(image)
        with tempfile.TemporaryDirectory(prefix="lineage-deploy-") as tmp:
            model = materialize(self.settings, ref, Path(tmp) / "endpoint")
            name, version = model.model_name, model.model_version
            key = f"models/{name}/{version}/{contract.MODEL_ARCHIVE}"
            self.report(f"upload {contract.MODEL_ARCHIVE} to s3://{self.config.bucket}/{key}")
            self.upload(model.model_data, key, contract.MODEL_ARCHIVE)
        lineage = model.lineage
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        model_name = f"{job_name(f'{name}-v{version}')[:48]}-{stamp[-6:]}"[:63]
        tags = lineage_tags(
            model=f"{name}/{version}",
            run_id=str(lineage.get("run_id", "")),
            data_commit=str(lineage.get("data_git_commit_id", "")),
            dvc_tag=str(lineage.get("dvc_tag", "")),
        )
        model_request = {
            "ModelName": model_name,
            "ExecutionRoleArn": self.config.role,
            "PrimaryContainer": {
                "Image": image,
                "ModelDataUrl": f"s3://{self.config.bucket}/{key}",
                "Environment": {"SAGEMAKER_MODEL_SERVER_WORKERS": "1"},
            },
            "Tags": tags,
        }
        url = endpoint_url(self.settings.aws_region, endpoint_name)
        with deploy_lineage_run(self.settings, model, url):
            exists = endpoints.create_endpoint(
                self.sagemaker, model_request, endpoint_name, instance_type, self.report
            )
            described = endpoints.wait_endpoint(
                self.sagemaker, endpoint_name, pacing=self.pacing, report=self.report
            )
        return DeployResult(
            endpoint_name=endpoint_name,
            endpoint_arn=described.get("EndpointArn"),
            model=f"{name}/{version}",
            sagemaker_model=model_name,
            model_data=f"s3://{self.config.bucket}/{key}",
            image=image,
            image_digest=digests.get(image, ""),
            lineage=lineage,
            updated=exists,
        )
