"""The same pipeline on Amazon SageMaker: processing -> training -> registry -> endpoint.

Every job is built by the functions the local runner uses (`lineage.ops.process.build_spec`,
`lineage.ops.train.build_spec`), then sent as the request `lineage.jobspec` renders: the
config files a local run writes and the requests sent here come from one description, so a
local run is faithful by construction. What differs is only where things are: the role, the
instance type, S3 locations in your bucket, images in ECR, and no endpoint overrides.

The dataset tag is the pipeline run id, chosen here and passed to the processing job as
``PIPELINE_RUN_ID`` (the reference sample's convention); the processing job's own result
(``result.json`` in its output) must confirm it before training starts.
"""

from __future__ import annotations

import dataclasses
import io
import json
import mimetypes
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lineage import contract
from lineage.config import Settings
from lineage.errors import ConfigError, LineageError
from lineage.gitops import TOKEN_SECRET_ENV
from lineage.jobspec import Channel, ProcessingJobSpec, TrainingJobSpec, dataset_tag, job_name
from lineage.ops.process import ProcessOptions, take_consent_snapshot
from lineage.ops.process import build_spec as build_processing_spec
from lineage.ops.train import TrainOptions
from lineage.ops.train import build_spec as build_training_spec
from lineage.redact import redact_url
from lineage.sagemaker import aws

Report = Callable[[str], None]
PROCESSING_LOG_GROUP = "/aws/sagemaker/ProcessingJobs"
TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
ENDPOINT_LOG_GROUP = "/aws/sagemaker/Endpoints"
TERMINAL = {"Completed", "Failed", "Stopped"}


def _quiet(_: str) -> None:
    return None


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


def lineage_tags(**values: str) -> list[dict[str, str]]:
    """SageMaker tags, so the console shows the lineage too (keys `lineage:<name>`)."""
    return [
        {"Key": f"lineage:{key.replace('_', '-')}", "Value": value[:256]}
        for key, value in values.items()
        if value
    ]


class Launcher:
    def __init__(self, config: SageMakerConfig, base: Settings, report: Report = _quiet) -> None:
        self.config = config
        self.settings = config.settings(base)
        self.report = report
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

    # -- job requests (shared descriptions + SageMaker placement) ------------------------------
    def processing_job(
        self, options: ProcessOptions, run_id: str, consent_source: str | None
    ) -> tuple[ProcessingJobSpec, dict[str, Any]]:
        base = build_processing_spec(
            self.settings,
            dataclasses.replace(options, pipeline_run_id=run_id),
            self.config.dvc_repo_url,
            consent_source,
        )
        spec = dataclasses.replace(
            base,
            environment={
                **base.environment,
                **self.config.job_environment(base.image_uri, self.digests.get(base.image_uri, "")),
            },
            role_arn=self.config.role,
            instance_type=self.config.processing_instance_type,
            region=self.settings.aws_region,
        )
        spec.validate()  # 256-character values, LocalPath under /opt/ml/processing, name
        request = {**spec.create_request(), "Tags": lineage_tags(pipeline_run_id=run_id)}
        return spec, request

    def training_job(
        self, options: TrainOptions, run_id: str, commit: str
    ) -> tuple[TrainingJobSpec, dict[str, Any]]:
        base = build_training_spec(self.settings, options, self.config.dvc_repo_url)
        name = base.name
        spec = dataclasses.replace(
            base,
            environment={
                **base.environment,
                **self.config.job_environment(base.image_uri, self.digests.get(base.image_uri, "")),
            },
            role_arn=self.config.role,
            instance_type=self.config.training_instance_type,
            region=self.settings.aws_region,
            output_path=f"s3://{self.config.bucket}/training",
            checkpoint_s3_uri=f"s3://{self.config.bucket}/checkpoints/{name}",
            channels=[self._upload_channel(c, name) for c in base.channels],
        )
        spec.validate()
        request = {
            **spec.create_request(),
            "Tags": lineage_tags(pipeline_run_id=run_id, data_commit=commit),
        }
        return spec, request

    def _upload_channel(self, channel: Channel, job: str) -> Channel:
        """A local channel source (e.g. pretrained weights) goes to the bucket first."""
        if channel.source.startswith("s3://"):
            return channel
        path = Path(channel.source)
        if not path.is_file():
            raise ConfigError(f"channel {channel.name}: {path} does not exist")
        key = f"inputs/{job}/{channel.name}/{path.name}"
        aws.call(
            f"upload {path}",
            "check s3:PutObject on the bucket",
            self.s3.upload_file,
            Filename=str(path),
            Bucket=self.config.bucket,
            Key=key,
        )
        return Channel(channel.name, f"s3://{self.config.bucket}/inputs/{job}/{channel.name}/")

    # -- running --------------------------------------------------------------------------------
    def pipeline(
        self,
        process_options: ProcessOptions,
        train_options: TrainOptions,
        *,
        wait: bool = True,
    ) -> dict[str, Any]:
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
        output = spec.outputs[0].destination.rstrip("/") + "/result.json"
        processed = self._read_json(output, "the processing job's result")
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
        result: dict[str, Any] = {
            "pipeline_run_id": run_id,
            "images": digests,
            "processing": {"job_name": spec.name, **processed},
            "training": {"job_name": training.name, "status": "InProgress"},
        }
        if not wait:
            self.report(f"not waiting: follow it with `lineage sagemaker status {training.name}`")
            return result
        self.wait("training", training.name)
        trained = self._training_result(training)
        result["training"] = {"job_name": training.name, "status": "Completed", **trained}
        # the registered version joins the lineage index, as a local run's does (audits
        # would otherwise call the index out of date until `lineage index rebuild`)
        from lineage.ops.train import index_version

        result["training"]["indexed"] = index_version(self.settings, result["training"])
        return result

    def _upload_consent_snapshot(self, run_id: str) -> str:
        with tempfile.TemporaryDirectory(prefix="lineage-consent-") as tmp:
            take_consent_snapshot(self.settings, Path(tmp))
            key = f"consent/{run_id}/snapshot.json"
            aws.call(
                "upload the consent snapshot",
                "check s3:PutObject on the bucket",
                self.s3.upload_file,
                Filename=str(Path(tmp) / "snapshot.json"),
                Bucket=self.config.bucket,
                Key=key,
            )
        return f"s3://{self.config.bucket}/consent/{run_id}/"

    def wait(self, kind: str, name: str) -> dict[str, Any]:
        """Poll until the job ends; report each status change; fail with the job's reason."""
        describe = (
            self.sagemaker.describe_processing_job
            if kind == "processing"
            else self.sagemaker.describe_training_job
        )
        key = "ProcessingJobName" if kind == "processing" else "TrainingJobName"
        status_key = "ProcessingJobStatus" if kind == "processing" else "TrainingJobStatus"
        last = None
        while True:
            job = aws.call(
                f"Describe {kind} job {name}",
                "check sagemaker:Describe* permission",
                describe,
                **{key: name},
            )
            status = job[status_key]
            detail = job.get("SecondaryStatus", "")
            if (status, detail) != last:
                self.report(f"{name}: {status}" + (f" ({detail})" if detail else ""))
                last = (status, detail)
            if status in TERMINAL:
                break
            time.sleep(self.config.poll_s)
        if status != "Completed":
            raise LineageError(
                failure_message(kind, name, job, self._log_streams(kind, name)),
                f"`lineage sagemaker logs {name}` prints the job's log",
            )
        return dict(job)

    def _read_json(self, uri: str, what: str) -> dict[str, Any]:
        data = self._read_object(uri, what)
        result: dict[str, Any] = json.loads(data)
        return result

    def _read_object(self, uri: str, what: str) -> bytes:
        """An output the job wrote; S3 outputs are uploaded as the job ends, so wait a little."""
        parts = urlsplit(uri)
        deadline = time.monotonic() + self.config.result_timeout_s
        while True:
            try:
                body = self.s3.get_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"))["Body"]
                return bytes(body.read())
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise LineageError(
                        f"{what} ({uri}) cannot be read: {exc.__class__.__name__}",
                        "the job completed without writing it: read its log",
                    ) from None
            time.sleep(min(self.config.poll_s, 2.0))

    def _training_result(self, spec: TrainingJobSpec) -> dict[str, Any]:
        uri = f"{spec.output_path.rstrip('/')}/{spec.name}/output/output.tar.gz"
        data = self._read_object(uri, "the training job's output.tar.gz")
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            member = archive.extractfile(contract.TRAINING_RESULT_FILE)
            if member is None:
                raise LineageError(f"{uri} has no {contract.TRAINING_RESULT_FILE}")
            result: dict[str, Any] = json.loads(member.read())
        result["model_data"] = f"{spec.output_path.rstrip('/')}/{spec.name}/output/model.tar.gz"
        return result

    def _log_streams(self, kind: str, name: str) -> list[str]:
        group = PROCESSING_LOG_GROUP if kind == "processing" else TRAINING_LOG_GROUP
        logs = aws.client(self.session, "logs")
        try:
            found = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=f"{name}/")
        except Exception:
            return []
        return [f"{group}/{s['logStreamName']}" for s in found.get("logStreams", [])]

    # -- deploying ------------------------------------------------------------------------------
    def deploy(self, ref: str, endpoint_name: str, instance_type: str) -> dict[str, Any]:
        from lineage.ops.deploy import deploy_lineage_run, materialize

        image = self.settings.image_uri("inference")
        digests = self.preflight(image)
        with tempfile.TemporaryDirectory(prefix="lineage-deploy-") as tmp:
            info = materialize(self.settings, ref, Path(tmp) / "endpoint")
            name, version = info["model_name"], info["model_version"]
            key = f"models/{name}/{version}/model.tar.gz"
            self.report(f"upload model.tar.gz to s3://{self.config.bucket}/{key}")
            aws.call(
                "upload model.tar.gz",
                "check s3:PutObject on the bucket",
                self.s3.upload_file,
                Filename=info["model_data"],
                Bucket=self.config.bucket,
                Key=key,
            )
        lineage = info["lineage"]
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
        endpoint_url = (
            f"https://runtime.sagemaker.{self.settings.aws_region}.amazonaws.com"
            f"/endpoints/{endpoint_name}"
        )
        with deploy_lineage_run(self.settings, info, endpoint_url):
            exists = self._create_endpoint(
                model_name, model_request, endpoint_name, instance_type, tags
            )
            described = self._wait_endpoint(endpoint_name)
        return {
            "endpoint_name": endpoint_name,
            "endpoint_arn": described.get("EndpointArn"),
            "model": f"{name}/{version}",
            "sagemaker_model": model_name,
            "model_data": f"s3://{self.config.bucket}/{key}",
            "image": image,
            "image_digest": digests.get(image, ""),
            "lineage": lineage,
            "updated": exists,
        }

    def _create_endpoint(
        self,
        model_name: str,
        model_request: dict[str, Any],
        endpoint_name: str,
        instance_type: str,
        tags: list[dict[str, str]],
    ) -> bool:
        """CreateModel, CreateEndpointConfig, then CreateEndpoint or UpdateEndpoint; True
        when the endpoint existed (and was updated)."""
        self.report(f"CreateModel {model_name}")
        aws.call(
            "CreateModel",
            "check iam:PassRole for the role",
            self.sagemaker.create_model,
            **model_request,
        )
        config_request = {
            "EndpointConfigName": model_name,
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": model_name,
                    "InitialInstanceCount": 1,
                    "InstanceType": instance_type,
                    "InitialVariantWeight": 1.0,
                }
            ],
            "Tags": tags,
        }
        self.report(f"CreateEndpointConfig {model_name} ({instance_type})")
        aws.call(
            "CreateEndpointConfig",
            "check the instance type and quotas",
            self.sagemaker.create_endpoint_config,
            **config_request,
        )
        exists = self._endpoint_status(endpoint_name) is not None
        if exists:
            self.report(f"UpdateEndpoint {endpoint_name}")
            aws.call(
                "UpdateEndpoint",
                "check sagemaker:UpdateEndpoint",
                self.sagemaker.update_endpoint,
                EndpointName=endpoint_name,
                EndpointConfigName=model_name,
            )
        else:
            self.report(f"CreateEndpoint {endpoint_name}")
            aws.call(
                "CreateEndpoint",
                "check sagemaker:CreateEndpoint",
                self.sagemaker.create_endpoint,
                EndpointName=endpoint_name,
                EndpointConfigName=model_name,
                Tags=tags,
            )
        return exists

    def _endpoint_status(self, name: str) -> str | None:
        try:
            return str(self.sagemaker.describe_endpoint(EndpointName=name)["EndpointStatus"])
        except Exception as exc:
            if "Could not find" in str(exc) or "ValidationException" in str(exc):
                return None
            raise

    def _wait_endpoint(self, name: str, timeout_s: float = 3600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        last = None
        while True:
            described = aws.call(
                "DescribeEndpoint",
                "check sagemaker:DescribeEndpoint",
                self.sagemaker.describe_endpoint,
                EndpointName=name,
            )
            status = described["EndpointStatus"]
            if status != last:
                self.report(f"{name}: {status}")
                last = status
            if status == "InService":
                return dict(described)
            if status == "Failed":
                raise LineageError(
                    f"endpoint {name} failed: {described.get('FailureReason', 'no reason')}",
                    f"read the container log in CloudWatch ({ENDPOINT_LOG_GROUP}/{name}); a "
                    "failed /ping usually means the model could not be loaded",
                )
            if time.monotonic() > deadline:
                raise LineageError(f"endpoint {name} is still {status} after {timeout_s:.0f}s")
            time.sleep(self.config.poll_s)


def failure_message(kind: str, name: str, job: dict[str, Any], streams: list[str]) -> str:
    status = job.get("ProcessingJobStatus") or job.get("TrainingJobStatus")
    reason = job.get("FailureReason") or job.get("ExitMessage") or "no reason given"
    where = (
        ", ".join(streams)
        if streams
        else (f"{PROCESSING_LOG_GROUP if kind == 'processing' else TRAINING_LOG_GROUP}/{name}/*")
    )
    return f"{kind} job {name} {str(status).lower()}: {reason} (log: {where})"


def invoke(
    session_region: str | None, endpoint_name: str, files: list[Path]
) -> list[dict[str, Any]]:
    runtime = aws.client(aws.session(session_region), "sagemaker-runtime")
    answers = []
    for path in files:
        if not path.is_file():
            raise LineageError(f"{path} does not exist", "pass image files")
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        response = aws.call(
            f"InvokeEndpoint {endpoint_name}",
            "check the endpoint is InService (`lineage sagemaker status`)",
            runtime.invoke_endpoint,
            EndpointName=endpoint_name,
            ContentType=kind,
            Accept="application/json",
            Body=path.read_bytes(),
        )
        body = response["Body"].read()
        try:
            answer = json.loads(body)
        except ValueError:
            answer = {"raw": body.decode("utf-8", "replace")}
        answers.append(
            {
                "file": str(path),
                "answer": answer,
                "custom_attributes": response.get("CustomAttributes"),
            }
        )
    return answers


@dataclass
class JobStatus:
    name: str
    kind: str
    status: str
    secondary: str = ""
    failure_reason: str = ""
    log_group: str = ""
    log_streams: list[str] = field(default_factory=list)  # stream names in log_group
    tags: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


def status(launcher_region: str | None, name: str) -> JobStatus:
    sm = aws.client(aws.session(launcher_region), "sagemaker")
    for kind, call, key in (
        ("training", sm.describe_training_job, "TrainingJobName"),
        ("processing", sm.describe_processing_job, "ProcessingJobName"),
    ):
        try:
            job = call(**{key: name})
        except Exception:  # noqa: S112 - not this kind of job: try the other
            continue
        arn = job.get("TrainingJobArn") or job.get("ProcessingJobArn")
        tags = {}
        if arn:
            try:
                tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]}
            except Exception:
                tags = {}
        logs = aws.client(aws.session(launcher_region), "logs")
        group = TRAINING_LOG_GROUP if kind == "training" else PROCESSING_LOG_GROUP
        try:
            streams = [
                s["logStreamName"]
                for s in logs.describe_log_streams(
                    logGroupName=group, logStreamNamePrefix=f"{name}/"
                ).get("logStreams", [])
            ]
        except Exception:
            streams = []
        return JobStatus(
            name=name,
            kind=kind,
            status=str(job.get("TrainingJobStatus") or job.get("ProcessingJobStatus")),
            secondary=str(job.get("SecondaryStatus", "")),
            failure_reason=str(job.get("FailureReason") or job.get("ExitMessage") or ""),
            log_group=group,
            log_streams=streams,
            tags=tags,
            details=json.loads(json.dumps(job, default=str)),
        )
    raise LineageError(
        f"no processing or training job named {name}",
        "check the name and the region (--region / AWS_DEFAULT_REGION)",
    )


def job_logs(region: str | None, name: str) -> list[str]:
    """Every line the job logged to CloudWatch, stream by stream."""
    found = status(region, name)
    logs = aws.client(aws.session(region), "logs")
    lines: list[str] = []
    for stream in found.log_streams:
        token = None
        while True:
            kwargs: dict[str, Any] = {
                "logGroupName": found.log_group,
                "logStreamName": stream,
                "startFromHead": True,
            }
            if token:
                kwargs["nextToken"] = token
            page = logs.get_log_events(**kwargs)
            lines.extend(str(e["message"]) for e in page.get("events", []))
            if not page.get("events") or page.get("nextForwardToken") == token:
                break
            token = page.get("nextForwardToken")
    if not found.log_streams:
        raise LineageError(
            f"job {name} has no CloudWatch log streams yet", "a job that has not started has no log"
        )
    return lines
