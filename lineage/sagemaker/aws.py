"""AWS access for the SageMaker runner: one boto3 session, and the checks that turn a wrong role,
bucket or image into an error that says what to do.

boto3 rather than the SageMaker Python SDK: our job descriptions (`lineage.jobspec`) already
are the exact CreateProcessingJob / CreateTrainingJob requests, so the SDK's estimator layer
would only re-derive them (and pull in a large dependency tree). The endpoints come from the
standard chain (``AWS_ENDPOINT_URL`` included, which is how the tests point at moto).
"""

from __future__ import annotations

import re
from typing import Any

import boto3
from botocore.config import Config

from lineage.errors import ConfigError
from lineage.sagemaker.errors import AWS_FAILURES, error_code, failure

ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
ECR_IMAGE = re.compile(
    r"^(?P<registry>\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?)/(?P<repository>[^:@]+)"
    r"(?::(?P<tag>[\w.-]+))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)


def session(region: str | None) -> boto3.session.Session:
    return boto3.session.Session(region_name=region)


def client(aws: boto3.session.Session, service: str) -> Any:
    """A client with standard retries (typed loosely: the service name is a run-time value)."""
    factory: Any = aws.client
    return factory(service, config=Config(retries={"max_attempts": 5, "mode": "standard"}))


def call(what: str, hint: str, function: Any, **kwargs: Any) -> Any:
    """One AWS call; a failure becomes an `AwsError` naming the call, AWS's code and message,
    and the next step. No retry of our own: the client's standard mode has retried what is
    transient, and creating calls are not safely repeatable (a lost answer to a create that
    succeeded would come back as "already exists"). Pollers retry reads themselves
    (`lineage.sagemaker.polling.retry_call`)."""
    try:
        return function(**kwargs)
    except AWS_FAILURES as exc:
        raise failure(what, exc, hint) from None


def check_role(role: str | None) -> str:
    if not role:
        raise ConfigError(
            "no execution role", "pass --role arn:aws:iam::<account>:role/<SageMaker role>"
        )
    if not ROLE_ARN.match(role):
        raise ConfigError(
            f"--role {role!r} is not an IAM role ARN", "use arn:aws:iam::<account>:role/<name>"
        )
    return role


def check_bucket(s3: Any, bucket: str | None) -> str:
    if not bucket:
        raise ConfigError("no bucket", "pass --bucket with an S3 bucket the role can write")
    try:
        s3.head_bucket(Bucket=bucket)
    except AWS_FAILURES as exc:
        code = error_code(exc)
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise ConfigError(
                f"bucket {bucket} does not exist", f"create it (aws s3 mb s3://{bucket})"
            ) from None
        raise failure(
            f"HeadBucket {bucket}",
            exc,
            "check that your credentials (and the role) may read and write it",
        ) from None
    return bucket


def check_image(ecr_for: Any, image: str) -> str:
    """The image must be in ECR (SageMaker pulls from there); returns its digest."""
    match = ECR_IMAGE.match(image)
    if match is None:
        raise ConfigError(
            f"{image} is not an ECR image URI",
            "push the images with `make push REGISTRY=<acct>.dkr.ecr.<region>.amazonaws.com` "
            "and pass --image-registry with that registry",
        )
    region = match["registry"].split(".")[3]
    ecr = ecr_for(region)
    image_id = (
        {"imageDigest": match["digest"]}
        if match["digest"]
        else {"imageTag": match["tag"] or "latest"}
    )
    try:
        found = ecr.describe_images(
            registryId=match["registry"].split(".")[0],
            repositoryName=match["repository"],
            imageIds=[image_id],
        )
    except AWS_FAILURES as exc:
        if error_code(exc) in ("ImageNotFoundException", "RepositoryNotFoundException"):
            raise ConfigError(
                f"image {image} is not in ECR",
                "build and push it: make images REGISTRY=... TAG=... && make push REGISTRY=... "
                "TAG=...",
            ) from None
        raise failure(
            f"DescribeImages {image}", exc, "check the ecr:DescribeImages permission"
        ) from None
    details = found.get("imageDetails") or []
    return str(details[0].get("imageDigest", "")) if details else ""
