"""S3 access for the embedded store, MinIO and AWS alike (one client factory, one bucket rule)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from lineage.config import Settings
from lineage.errors import StackError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def s3_client(settings: Settings, *, timeout: float = 10.0) -> S3Client:
    """A boto3 S3 client for the configured endpoint, path-style (what SeaweedFS/MinIO need).
    The embedded store's client uses the stack's keys only: the user's AWS profile and session
    token (from the environment) must neither replace nor mix with them."""
    make = keyed_session().client if settings.embedded_s3 else boto3.client
    client: S3Client = make(
        "s3",
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key,
        region_name=settings.aws_region,
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": 2, "mode": "standard"},
        ),
    )
    return client


def keyed_session() -> boto3.session.Session:
    """A boto3 session for explicitly given keys: it does not read AWS_PROFILE (a profile
    this machine lacks would make boto3 refuse to start) and so takes no session token."""
    import botocore.session

    core = botocore.session.Session(session_vars={"profile": (None, None, None, None)})
    return boto3.session.Session(botocore_session=core)


def ensure_bucket(client: S3Client, bucket: str) -> bool:
    """Create `bucket` unless it exists. Returns True if it was created."""
    try:
        client.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise StackError(
                f"cannot access bucket {bucket}: {code or exc}",
                "check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and "
                "LINEAGE_DVC_BUCKET/LINEAGE_MLFLOW_BUCKET",
            ) from None
    except BotoCoreError as exc:
        raise StackError(f"S3 store unreachable: {exc}", "check LINEAGE_S3_ENDPOINT") from None
    client.create_bucket(Bucket=bucket)
    return True
