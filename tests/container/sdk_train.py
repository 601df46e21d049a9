"""Run the training image as a SageMaker training job on N instances through the official
SageMaker Python SDK v3 local mode, as a SageMaker user would. Run by the SDK's own
virtualenv (`make sdk-venv`), so it imports nothing of ours.

    .venv-sdk/bin/python tests/container/sdk_train.py IMAGE JOB_JSON WORK_DIR

JOB_JSON (mode 0600) holds {"name", "instance_count", "hyperparameters", "environment"}: the
job's Environment carries the stack's endpoints and credentials, so it travels in a private
file, not argv. The S3 key pair comes from this process's AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY: the SDK injects its session's keys into every container (a duplicate
in Environment makes compose refuse the file). Writes WORK_DIR/job.json: DescribeTrainingJob.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import boto3
from sagemaker.core.local import LocalSession


def main() -> None:
    image, job_file, work = sys.argv[1:4]
    job = json.loads(pathlib.Path(job_file).read_text())
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    session = LocalSession(
        boto_session=boto3.Session(
            region_name="us-east-1",
            aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        ),
        sagemaker_config={
            "SchemaVersion": "1.0",
            "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}},
        },
    )
    session.config = {"local": {"local_code": True, "container_root": work}}
    output = pathlib.Path(work) / "output"
    output.mkdir(parents=True, exist_ok=True)
    sm = session.sagemaker_client
    sm.create_training_job(
        TrainingJobName=job["name"],
        AlgorithmSpecification={"TrainingImage": image, "TrainingInputMode": "File"},
        HyperParameters=job["hyperparameters"],
        Environment=job["environment"],
        InputDataConfig=[],
        OutputDataConfig={"S3OutputPath": f"file://{output}"},
        ResourceConfig={
            "InstanceType": "local",
            "InstanceCount": int(job["instance_count"]),
            "VolumeSizeInGB": 1,
        },
        StoppingCondition={"MaxRuntimeInSeconds": 1800},
        RoleArn="arn:aws:iam::000000000000:role/lineage-local",
    )
    described = sm.describe_training_job(TrainingJobName=job["name"])
    (pathlib.Path(work) / "job.json").write_text(json.dumps(described, default=str))


if __name__ == "__main__":
    main()
