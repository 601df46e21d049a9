"""Amazon SageMaker as a `JobRunner`: processing and training jobs, and endpoints.

The operations build every job (`lineage.ops`) and choose this runner for `lineage
sagemaker ...`; it only places a description on SageMaker and runs it. Each step has a
module of its own: `jobs` (the requests: role, instances, bucket, images and digests),
`polling` (waiting, with AWS errors retried or not by `errors`), `endpoints` (deploy,
invoke, finding endpoints by lineage tags), `inspection` (status, logs), `aws` (clients,
preflight checks).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lineage import contract
from lineage.config import Settings
from lineage.errors import ConfigError
from lineage.jobresult import ProcessingResult
from lineage.jobspec import ProcessingJobSpec, TrainingJobSpec, job_name
from lineage.redact import redact_url
from lineage.runtime import ProcessingRun, TrainingRun
from lineage.sagemaker import aws, endpoints, jobs, polling
from lineage.sagemaker.endpoints import DeployResult
from lineage.sagemaker.jobs import SageMakerConfig, lineage_tags

Report = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


class SageMakerRunner:
    """One SageMaker session: its configuration, clients, and the images' digests.

    `settings` are the ones to build jobs with: the configured bucket (DVC remote and
    outputs), MLflow and image registry."""

    def __init__(
        self,
        config: SageMakerConfig,
        base: Settings,
        report: Report | None = None,
        *,
        pacing: polling.Pacing | None = None,
    ) -> None:
        self.config = config
        self.settings = config.settings(base)
        self.report = report or _quiet
        self.pacing = pacing or polling.Pacing(poll_s=config.poll_s)
        self.session = aws.session(config.region)
        self.sagemaker = aws.client(self.session, "sagemaker")
        self.s3 = aws.client(self.session, "s3")
        self.digests: dict[str, str] = {}  # image -> ECR digest, from the preflight check
        self._training: dict[str, TrainingJobSpec] = {}  # started, not yet finished

    @property
    def name(self) -> str:
        return "sagemaker"

    def prepare(self, kinds: Sequence[str]) -> Mapping[str, str]:
        """The role, the bucket, MLflow, the repository URL, the git token's secret and the
        images of `kinds` in ECR (their digests), before anything is created."""
        return self.preflight(*(self.settings.image_uri(kind) for kind in kinds))

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

        if self.config.signing_kms_key_id:
            self._check_signing_key(self.config.signing_kms_key_id)

        def ecr_for(region: str) -> Any:
            return aws.client(aws.session(region), "ecr")

        self.digests = {image: aws.check_image(ecr_for, image) for image in images}
        return self.digests

    def _check_signing_key(self, kms_key_id: str) -> None:
        """The jobs' KMS signing key must be one this operator trusts, or nothing they sign
        could be recorded (checked before anything is created)."""
        from lineage.attest.host import Evidence
        from lineage.attest.keys import key_id, kms_public_key

        kms = aws.client(self.session, "kms")
        public = aws.call(
            f"GetPublicKey {kms_key_id}",
            "check the key id and kms:GetPublicKey on it",
            kms_public_key,
            kms_key_id=kms_key_id,
            client=kms,
        )
        if Evidence(self.settings).trust.get(key_id(public)) is None:
            raise ConfigError(
                f"the signing key {kms_key_id} (key id {key_id(public)[:16]}) is not trusted here",
                f"trust it first: `lineage keys trust-kms {kms_key_id}`",
            )

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

    # -- the jobs (descriptions built by the operations, placed here) ---------------------------
    def dataset_repository(self, repo: str, *, create: bool) -> tuple[str, dict[str, str]]:
        """The configured repository (its credentials, if any, come from the secret)."""
        return self.config.dvc_repo_url, {}

    def stage_input(self, name: str, directory: Path, run_id: str) -> str:
        for path in sorted(p for p in directory.iterdir() if p.is_file()):
            self.upload(path, f"{name}/{run_id}/{path.name}", f"the {name} input")
        return f"s3://{self.config.bucket}/{name}/{run_id}/"

    def processing_job(self, spec: ProcessingJobSpec) -> tuple[ProcessingJobSpec, dict[str, Any]]:
        """`spec` placed on SageMaker, and its CreateProcessingJob request."""
        return jobs.processing_request(self.config, self.settings, self.digests, spec)

    def training_job(
        self, spec: TrainingJobSpec, data_commit: str | None = None
    ) -> tuple[TrainingJobSpec, dict[str, Any]]:
        """`spec` placed on SageMaker (its local channels uploaded), and its request."""
        return jobs.training_request(
            self.config, self.settings, self.digests, spec, data_commit, self.upload
        )

    def run_processing(
        self, spec: ProcessingJobSpec, *, runtime_env: Mapping[str, str], stream: bool
    ) -> ProcessingRun:
        placed, request = self.processing_job(spec)
        self.report(f"CreateProcessingJob {placed.name} ({placed.image_uri})")
        aws.call(
            f"CreateProcessingJob {placed.name}",
            "check the role's permissions and quotas",
            self.sagemaker.create_processing_job,
            **request,
        )
        self.wait("processing", placed.name)
        uri = f"{placed.outputs[0].destination.rstrip('/')}/{contract.PROCESSING_RESULT_FILE}"
        found = json.loads(self._read(uri, "the processing job's result"))
        return ProcessingRun(placed.name, ProcessingResult.from_json(found, uri))

    def start_training(
        self,
        spec: TrainingJobSpec,
        *,
        runtime_env: Mapping[str, str],
        stream: bool,
        data_commit: str | None = None,
    ) -> str:
        placed, request = self.training_job(spec, data_commit)
        tag = placed.hyperparameters.get("dvc_tag", "")
        self.report(f"CreateTrainingJob {placed.name} ({placed.image_uri}), dvc_tag {tag}")
        aws.call(
            f"CreateTrainingJob {placed.name}",
            "check the role's permissions and quotas",
            self.sagemaker.create_training_job,
            **request,
        )
        self._training[placed.name] = placed
        return placed.name

    def finish_training(self, job_name: str) -> TrainingRun:
        placed = self._training.pop(job_name)
        self.wait("training", placed.name)
        prefix = f"{placed.output_path.rstrip('/')}/{placed.name}/output"
        archive = self._read(f"{prefix}/{contract.OUTPUT_ARCHIVE}", "the training job's output")
        output, model_data = jobs.training_output(placed, archive)
        return TrainingRun(placed.name, output, model_data)

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
    def stage_model(self, model_archive: Path, model: str, version: str) -> str:
        """Upload a registered version's model.tar.gz to the bucket; its s3:// URI."""
        key = f"models/{model}/{version}/{contract.MODEL_ARCHIVE}"
        self.report(f"upload {contract.MODEL_ARCHIVE} to s3://{self.config.bucket}/{key}")
        self.upload(model_archive, key, contract.MODEL_ARCHIVE)
        return f"s3://{self.config.bucket}/{key}"

    def host(
        self,
        model_data: str,
        model: str,
        version: str,
        lineage: Mapping[str, Any],
        endpoint_name: str,
        instance_type: str,
        trusted_keys: str = "",
    ) -> DeployResult:
        """Model, endpoint config and endpoint for `model_data`, tagged with its lineage;
        waits until the endpoint is InService. `trusted_keys` (PEM: public keys) make the
        server refuse a model not signed by one of them."""
        image = self.settings.image_uri("inference")
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        model_name = f"{job_name(f'{model}-v{version}')[:48]}-{stamp[-6:]}"[:63]
        tags = lineage_tags(
            model=f"{model}/{version}",
            run_id=str(lineage.get("run_id", "")),
            data_commit=str(lineage.get("data_git_commit_id", "")),
            dvc_tag=str(lineage.get("dvc_tag", "")),
        )
        model_request = {
            "ModelName": model_name,
            "ExecutionRoleArn": self.config.role,
            "PrimaryContainer": {
                "Image": image,
                "ModelDataUrl": model_data,
                "Environment": {
                    "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
                    **({contract.TRUSTED_KEYS_ENV: trusted_keys} if trusted_keys else {}),
                },
            },
            "Tags": tags,
        }
        exists = endpoints.create_endpoint(
            self.sagemaker, model_request, endpoint_name, instance_type, self.report
        )
        described = endpoints.wait_endpoint(
            self.sagemaker, endpoint_name, pacing=self.pacing, report=self.report
        )
        return DeployResult(
            endpoint_name=endpoint_name,
            endpoint_arn=described.get("EndpointArn"),
            model=f"{model}/{version}",
            sagemaker_model=model_name,
            model_data=model_data,
            image=image,
            image_digest=self.digests.get(image, ""),
            lineage=dict(lineage),
            updated=exists,
        )
