"""SageMaker endpoints: creating one for a registry version, invoking it, and finding which
endpoints serve which model version.

Every resource a deploy creates (model, endpoint config, endpoint) carries the lineage tags
(`lineage:model` = NAME/VERSION, the run, the data commit); an update re-tags the endpoint,
so the tags always name what it serves. That is how the audits (`lineage impact --sagemaker`)
find SageMaker endpoints: ListEndpoints, then ListTags on each, without any state of ours.
What is found is plain data of the core (`lineage.serving`), so the audits below can read it
without importing this runtime.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lineage.errors import LineageError
from lineage.sagemaker import aws
from lineage.sagemaker.errors import AWS_FAILURES, AwsError, Kind, failure
from lineage.sagemaker.inspection import ENDPOINT_LOG_GROUP, resource_tags
from lineage.sagemaker.jobs import MODEL_TAG
from lineage.sagemaker.polling import Pacing, retry_call
from lineage.serving import EndpointListing, SageMakerEndpoint

Report = Callable[[str], None]
# endpoints that serve, or may again: a Failed or Deleting one serves nothing
_GONE = {"Failed", "Deleting"}


@dataclass(frozen=True)
class DeployResult:
    """What `lineage sagemaker deploy` did."""

    endpoint_name: str
    endpoint_arn: str | None
    model: str  # NAME/VERSION in the registry
    sagemaker_model: str
    model_data: str
    image: str
    image_digest: str
    lineage: Mapping[str, Any]
    updated: bool  # the endpoint existed and was moved to this model

    def to_json(self) -> dict[str, Any]:
        """What `deploy --json` prints (scripts and the integration tests read these keys)."""
        return {
            "endpoint_name": self.endpoint_name,
            "endpoint_arn": self.endpoint_arn,
            "model": self.model,
            "sagemaker_model": self.sagemaker_model,
            "model_data": self.model_data,
            "image": self.image,
            "image_digest": self.image_digest,
            "lineage": dict(self.lineage),
            "updated": self.updated,
        }


def endpoint_status(sagemaker: Any, name: str) -> str | None:
    """The endpoint's status; None when there is no endpoint by that name."""
    try:
        described = aws.call(
            f"DescribeEndpoint {name}",
            "check sagemaker:DescribeEndpoint",
            sagemaker.describe_endpoint,
            EndpointName=name,
        )
    except AwsError as exc:
        if exc.kind is Kind.NOT_FOUND:
            return None
        raise
    return str(described["EndpointStatus"])


def create_endpoint(
    sagemaker: Any,
    model_request: dict[str, Any],
    endpoint_name: str,
    instance_type: str,
    report: Report,
) -> bool:
    """CreateModel, CreateEndpointConfig, then CreateEndpoint or UpdateEndpoint; True when
    the endpoint existed (and was updated, and re-tagged to name its new model)."""
    model_name, tags = model_request["ModelName"], model_request["Tags"]
    report(f"CreateModel {model_name}")
    aws.call(
        "CreateModel", "check iam:PassRole for the role", sagemaker.create_model, **model_request
    )
    variant = {
        "VariantName": "AllTraffic",
        "ModelName": model_name,
        "InitialInstanceCount": 1,
        "InstanceType": instance_type,
        "InitialVariantWeight": 1.0,
    }
    report(f"CreateEndpointConfig {model_name} ({instance_type})")
    aws.call(
        "CreateEndpointConfig",
        "check the instance type and quotas",
        sagemaker.create_endpoint_config,
        EndpointConfigName=model_name,
        ProductionVariants=[variant],
        Tags=tags,
    )
    exists = endpoint_status(sagemaker, endpoint_name) is not None
    if not exists:
        report(f"CreateEndpoint {endpoint_name}")
        aws.call(
            "CreateEndpoint",
            "check sagemaker:CreateEndpoint",
            sagemaker.create_endpoint,
            EndpointName=endpoint_name,
            EndpointConfigName=model_name,
            Tags=tags,
        )
        return False
    report(f"UpdateEndpoint {endpoint_name}")
    described = aws.call(
        "UpdateEndpoint",
        "check sagemaker:UpdateEndpoint",
        sagemaker.update_endpoint,
        EndpointName=endpoint_name,
        EndpointConfigName=model_name,
    )
    aws.call(  # AddTags overwrites: the lineage tags now name the new version
        f"AddTags {endpoint_name}",
        "check sagemaker:AddTags",
        sagemaker.add_tags,
        ResourceArn=described["EndpointArn"],
        Tags=tags,
    )
    return True


def wait_endpoint(
    sagemaker: Any, name: str, *, pacing: Pacing, report: Report, timeout_s: float = 3600
) -> dict[str, Any]:
    """Poll until the endpoint is InService; fail with SageMaker's reason and the log group."""
    deadline = pacing.clock() + timeout_s
    last = None
    while True:
        described: dict[str, Any] = retry_call(
            f"DescribeEndpoint {name}",
            "check sagemaker:DescribeEndpoint",
            sagemaker.describe_endpoint,
            pacing=pacing,
            deadline=deadline,
            EndpointName=name,
        )
        status = described["EndpointStatus"]
        if status != last:
            report(f"{name}: {status}")
            last = status
        if status == "InService":
            return dict(described)
        if status == "Failed":
            raise LineageError(
                f"endpoint {name} failed: {described.get('FailureReason', 'no reason')}",
                f"read the container log in CloudWatch ({ENDPOINT_LOG_GROUP}/{name}); a "
                "failed /ping usually means the model could not be loaded",
            )
        if pacing.clock() > deadline:
            raise LineageError(f"endpoint {name} is still {status} after {timeout_s:.0f}s")
        pacing.sleep(pacing.poll_s)


@dataclass(frozen=True)
class Answer:
    """One `lineage sagemaker invoke` answer: the file sent and what the endpoint said."""

    file: str
    answer: Any  # the endpoint's JSON, or {"raw": text} when it did not answer JSON
    custom_attributes: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "answer": self.answer,
            "custom_attributes": self.custom_attributes,
        }


def invoke(region: str | None, endpoint_name: str, files: list[Path]) -> list[Answer]:
    """InvokeEndpoint with each file's raw bytes (the content type from its name)."""
    runtime = aws.client(aws.session(region), "sagemaker-runtime")
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
        answers.append(Answer(str(path), answer, response.get("CustomAttributes")))
    return answers


def _tagged(sagemaker: Any, summary: Mapping[str, Any], region: str) -> SageMakerEndpoint | None:
    """The endpoint of a ListEndpoints summary, if its tags say which model it serves."""
    try:
        tags = resource_tags(sagemaker, str(summary["EndpointArn"]))
    except AwsError as exc:
        if exc.kind is Kind.NOT_FOUND:  # deleted since the listing
            return None
        raise
    model = tags.get(MODEL_TAG)
    if not model:
        return None
    return SageMakerEndpoint(
        name=str(summary["EndpointName"]),
        arn=str(summary["EndpointArn"]),
        status=str(summary["EndpointStatus"]),
        model=model,
        region=region,
        tags={k: v for k, v in tags.items() if k.startswith("lineage:")},
    )


def lineage_endpoints(
    sagemaker: Any, models: Collection[str] | None = None, *, pacing: Pacing | None = None
) -> list[SageMakerEndpoint]:
    """Every endpoint (all pages of ListEndpoints) whose `lineage:model` tag names one of
    `models` (NAME/VERSION; None: any), except those Failed or being deleted."""
    pacing = pacing or Pacing()
    region = str(sagemaker.meta.region_name)
    found: list[SageMakerEndpoint] = []
    token = None
    while True:
        page = retry_call(
            "ListEndpoints",
            "check sagemaker:ListEndpoints",
            sagemaker.list_endpoints,
            pacing=pacing,
            MaxResults=100,
            **({"NextToken": token} if token else {}),
        )
        for summary in page.get("Endpoints", []):
            if summary.get("EndpointStatus") in _GONE:
                continue
            endpoint = _tagged(sagemaker, summary, region)
            if endpoint and (models is None or endpoint.model in models):
                found.append(endpoint)
        token = page.get("NextToken")
        if not token:
            return sorted(found, key=lambda e: e.name)


def find_endpoints(region: str | None = None) -> EndpointListing:
    """Every lineage-tagged endpoint in `region` (default: the AWS configuration's)."""
    try:
        sagemaker = aws.client(aws.session(region), "sagemaker")
    except AWS_FAILURES as exc:  # no region: the client cannot even be made
        raise failure("listing SageMaker endpoints", exc) from None
    return EndpointListing(str(sagemaker.meta.region_name), tuple(lineage_endpoints(sagemaker)))
