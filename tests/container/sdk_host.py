"""Host a model directory with the inference image through the official SageMaker Python SDK
v3 local mode and invoke it with a PNG, as a SageMaker user would. Run by the SDK's own
virtualenv (`make sdk-venv`), so it imports nothing of ours.

    .venv-sdk/bin/python tests/container/sdk_host.py IMAGE MODEL_DIR PNG WORK_DIR

Writes WORK_DIR/answer.json: the HTTP status, the decoded body and the response headers
(stdout is shared with docker compose's own messages).
"""

from __future__ import annotations

import json
import os
import pathlib
import sys

import boto3
from sagemaker.core.local import LocalSession


def main() -> None:
    image, model_dir, png, work = sys.argv[1:5]
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    session = LocalSession(
        boto_session=boto3.Session(
            region_name="us-east-1", aws_access_key_id="local", aws_secret_access_key="local"
        ),
        sagemaker_config={
            "SchemaVersion": "1.0",
            "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}},
        },
    )
    session.config = {"local": {"local_code": True, "container_root": work, "serving_port": 8080}}
    session.config["local"]["health_check_timeout"] = 240
    sm, runtime = session.sagemaker_client, session.sagemaker_runtime_client
    name = pathlib.Path(work).name
    sm.create_model(
        ModelName=f"{name}-model",
        PrimaryContainer={"Image": image, "ModelDataUrl": f"file://{model_dir}", "Environment": {}},
    )
    sm.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": f"{name}-model",
                "InitialInstanceCount": 1,
                "InstanceType": "local",
            }
        ],
    )
    try:
        sm.create_endpoint(EndpointName=f"{name}-endpoint", EndpointConfigName=f"{name}-config")
        answer = runtime.invoke_endpoint(
            EndpointName=f"{name}-endpoint",
            Body=pathlib.Path(png).read_bytes(),
            ContentType="image/png",
            Accept="application/json",
        )
        meta = answer["ResponseMetadata"]
        result = {
            "status": meta["HTTPStatusCode"],
            "body": json.loads(answer["Body"].read()),
            "headers": {k.lower(): v for k, v in meta["HTTPHeaders"].items()},
        }
        (pathlib.Path(work) / "answer.json").write_text(json.dumps(result))
    finally:
        sm.delete_endpoint(EndpointName=f"{name}-endpoint")


if __name__ == "__main__":
    main()
