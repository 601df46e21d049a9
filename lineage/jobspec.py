"""One description of a job, shared by the local runner and the SageMaker runner.

The local runner writes `processingjobconfig.json` from exactly the request the SageMaker runner
would send to CreateProcessingJob, so a local run is faithful by construction.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lineage import contract
from lineage.errors import ConfigError

PROCESSING_ENV_VALUE_LIMIT = 256  # BOTO ProcessingEnvironmentValue
LOCAL_ACCOUNT = "000000000000"
LOCAL_ROLE = f"arn:aws:iam::{LOCAL_ACCOUNT}:role/lineage-local"
_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


def check_job_name(name: str) -> None:
    if not _JOB_NAME.match(name):
        raise ConfigError(f"invalid job name {name!r}", "use letters, digits and -, 63 at most")


def check_environment(environment: dict[str, str], value_limit: int, api: str) -> None:
    """SageMaker's limits on a job's Environment map: 100 keys, `value_limit` chars each."""
    if len(environment) > 100:
        raise ConfigError(f"{len(environment)} environment variables; {api} allows 100")
    for key, value in environment.items():
        if len(value) > value_limit:
            raise ConfigError(
                f"environment value {key} is {len(value)} characters; {api} allows {value_limit}",
                f"shorten {key} (e.g. a shorter repository URL or experiment name)",
            )


def job_name(prefix: str) -> str:
    """A SageMaker-valid, unique job name: ``<prefix>-<UTC stamp>-<random>``, 63 chars max."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    clean = re.sub(r"[^a-zA-Z0-9]+", "-", prefix).strip("-")[:40] or "job"
    return f"{clean}-{stamp}-{secrets.token_hex(2)}"


def dataset_tag(version: str, pipeline_run_id: str | None = None) -> str:
    """The git tag of a dataset version: the pipeline run id when there is one, else
    ``<version>-<UTC stamp>-<random>``. Tags are never reused, so they are unique."""
    if pipeline_run_id:
        return pipeline_run_id
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{version}-{stamp}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class ProcessingInput:
    name: str
    source: str  # s3:// URI (SageMaker) or local path (local runner)
    local_path: str  # must start with /opt/ml/processing/


@dataclass(frozen=True)
class ProcessingOutput:
    name: str
    local_path: str
    destination: str  # s3:// URI


@dataclass(frozen=True)
class ProcessingJobSpec:
    name: str
    image_uri: str
    arguments: list[str]
    environment: dict[str, str]
    entrypoint: list[str] = field(default_factory=list)
    inputs: list[ProcessingInput] = field(default_factory=list)
    outputs: list[ProcessingOutput] = field(default_factory=list)
    instance_type: str = "ml.m5.xlarge"
    instance_count: int = 1
    volume_size_gb: int = 30
    role_arn: str = LOCAL_ROLE
    region: str = "us-east-1"
    max_runtime_s: int = 24 * 3600

    def validate(self) -> None:
        check_job_name(self.name)
        check_environment(self.environment, PROCESSING_ENV_VALUE_LIMIT, "SageMaker Processing")
        local_paths = [(i.name, i.local_path) for i in self.inputs] + [
            (o.name, o.local_path) for o in self.outputs
        ]
        for name, local_path in local_paths:
            if not local_path.startswith(contract.PROCESSING_DIR):
                raise ConfigError(f"{name}: LocalPath must begin with {contract.PROCESSING_DIR}")

    @property
    def arn(self) -> str:
        return f"arn:aws:sagemaker:{self.region}:{LOCAL_ACCOUNT}:processing-job/{self.name}"

    def create_request(self) -> dict[str, Any]:
        """The CreateProcessingJob request (what the SageMaker runner sends)."""
        app: dict[str, Any] = {"ImageUri": self.image_uri}
        if self.entrypoint:
            app["ContainerEntrypoint"] = list(self.entrypoint)
        if self.arguments:
            app["ContainerArguments"] = list(self.arguments)
        return {
            "ProcessingJobName": self.name,
            "AppSpecification": app,
            "Environment": dict(self.environment),
            "ProcessingInputs": [
                {
                    "InputName": i.name,
                    "S3Input": {
                        "S3Uri": i.source,
                        "LocalPath": i.local_path,
                        "S3DataType": "S3Prefix",
                        "S3InputMode": "File",
                        "S3DataDistributionType": "FullyReplicated",
                        "S3CompressionType": "None",
                    },
                }
                for i in self.inputs
            ],
            "ProcessingOutputConfig": {
                "Outputs": [
                    {
                        "OutputName": o.name,
                        "S3Output": {
                            "S3Uri": o.destination,
                            "LocalPath": o.local_path,
                            "S3UploadMode": "EndOfJob",
                        },
                    }
                    for o in self.outputs
                ]
            },
            "ProcessingResources": {
                "ClusterConfig": {
                    "InstanceCount": self.instance_count,
                    "InstanceType": self.instance_type,
                    "VolumeSizeInGB": self.volume_size_gb,
                }
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": self.max_runtime_s},
            "RoleArn": self.role_arn,
        }

    def job_config(self) -> dict[str, Any]:
        """`/opt/ml/config/processingjobconfig.json`: the request plus the job's ARN."""
        return {"ProcessingJobArn": self.arn, **self.create_request()}

    def resource_config(self) -> dict[str, Any]:
        hosts = [f"algo-{i + 1}" for i in range(self.instance_count)]
        return {"current_host": hosts[0], "hosts": hosts}


TRAINING_ENV_VALUE_LIMIT = 512  # BOTO TrainingEnvironmentValue
HYPERPARAMETER_VALUE_LIMIT = 2500
MAX_INSTANCE_COUNT = 100  # ResourceConfig.InstanceCount's API maximum


@dataclass(frozen=True)
class Channel:
    name: str
    source: str  # s3:// prefix (SageMaker) or local path (local runner)


@dataclass(frozen=True)
class TrainingJobSpec:
    name: str
    image_uri: str
    hyperparameters: dict[str, str]  # always strings on the wire
    environment: dict[str, str]
    channels: list[Channel] = field(default_factory=list)
    output_path: str = "s3://lineage-mlflow/training"
    checkpoint_s3_uri: str | None = None
    instance_type: str = "ml.m5.xlarge"
    instance_count: int = 1
    volume_size_gb: int = 30
    role_arn: str = LOCAL_ROLE
    region: str = "us-east-1"
    max_runtime_s: int = 24 * 3600

    def validate(self) -> None:
        check_job_name(self.name)
        check_environment(self.environment, TRAINING_ENV_VALUE_LIMIT, "SageMaker Training")
        if not 1 <= self.instance_count <= MAX_INSTANCE_COUNT:
            raise ConfigError(
                f"instance count {self.instance_count}: SageMaker takes 1 to {MAX_INSTANCE_COUNT}"
            )
        for key, value in self.hyperparameters.items():
            if not isinstance(value, str):
                raise ConfigError(f"hyperparameter {key} must be a string on the wire")
            if len(value) > HYPERPARAMETER_VALUE_LIMIT:
                raise ConfigError(f"hyperparameter {key} exceeds {HYPERPARAMETER_VALUE_LIMIT}")

    @property
    def arn(self) -> str:
        return f"arn:aws:sagemaker:{self.region}:{LOCAL_ACCOUNT}:training-job/{self.name}"

    def create_request(self) -> dict[str, Any]:
        """The CreateTrainingJob request (what the SageMaker runner sends)."""
        request: dict[str, Any] = {
            "TrainingJobName": self.name,
            "AlgorithmSpecification": {
                "TrainingImage": self.image_uri,
                "TrainingInputMode": "File",
            },
            "HyperParameters": dict(self.hyperparameters),
            "OutputDataConfig": {"S3OutputPath": self.output_path},
            "ResourceConfig": {
                "InstanceType": self.instance_type,
                "InstanceCount": self.instance_count,
                "VolumeSizeInGB": self.volume_size_gb,
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": self.max_runtime_s},
            "RoleArn": self.role_arn,
            "Environment": dict(self.environment),
        }
        if self.channels:  # the API refuses an empty list: no channels, no key
            request["InputDataConfig"] = [
                {
                    "ChannelName": c.name,
                    "DataSource": {
                        "S3DataSource": {
                            "S3DataType": "S3Prefix",
                            "S3Uri": c.source,
                            "S3DataDistributionType": "FullyReplicated",
                        }
                    },
                    "InputMode": "File",
                }
                for c in self.channels
            ]
        if self.checkpoint_s3_uri:
            request["CheckpointConfig"] = {
                "S3Uri": self.checkpoint_s3_uri,
                "LocalPath": contract.CHECKPOINT_DIR,
            }
        return request

    def input_data_config(self) -> dict[str, Any]:
        """`inputdataconfig.json`: channel -> its mode, as the platform writes it."""
        return {
            c.name: {
                "TrainingInputMode": "File",
                "S3DistributionType": "FullyReplicated",
                "RecordWrapperType": "None",
            }
            for c in self.channels
        }

    @property
    def hosts(self) -> list[str]:
        """The hosts' names as SageMaker gives them (algo-1 ... algo-N; algo-1 leads)."""
        return [f"algo-{i + 1}" for i in range(self.instance_count)]

    def resource_config(
        self, current_host: str | None = None, network_interface: str = "eth0"
    ) -> dict[str, Any]:
        """`resourceconfig.json` as host `current_host` (the first by default) sees it."""
        hosts = self.hosts
        return {
            "current_host": current_host or hosts[0],
            "hosts": hosts,
            "current_instance_type": self.instance_type,
            "current_group_name": "homogeneousCluster",
            "instance_groups": [
                {
                    "instance_group_name": "homogeneousCluster",
                    "instance_type": self.instance_type,
                    "hosts": hosts,
                }
            ],
            "network_interface_name": network_interface,
        }
