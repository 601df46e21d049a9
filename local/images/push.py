"""`make push`: the bake targets to Amazon ECR.

ECR login goes through boto3 (``GetAuthorizationToken``), so the standard AWS credential
chain applies and no AWS CLI is needed; repositories are created when missing (scan on push);
each tag is pushed and its digest printed, which is what the SageMaker runner and the
lineage records use to name the exact image. ``--dry-run`` makes no AWS or docker call.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
from dataclasses import dataclass

from lineage.errors import ConfigError, LineageError
from local.images.bake import BuildTarget

ECR_HOST = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?$"
)


@dataclass(frozen=True)
class PushItem:
    tag: str  # full reference, registry/repository:tag
    repository: str  # without registry and tag


def parse_registry(registry: str) -> tuple[str, str]:
    """(account, region) of an ECR registry host."""
    match = ECR_HOST.match(registry)
    if match is None:
        raise ConfigError(
            f"REGISTRY={registry!r} is not an ECR registry",
            "use REGISTRY=<account>.dkr.ecr.<region>.amazonaws.com",
        )
    return match["account"], match["region"]


def push_plan(targets: list[BuildTarget], registry: str) -> list[PushItem]:
    items = []
    for target in targets:
        for tag in target.tags:
            if not tag.startswith(f"{registry}/"):
                raise ConfigError(
                    f"{target.name} is tagged {tag}, not in {registry}",
                    "build with the same REGISTRY: make images REGISTRY=... then make push",
                )
            repository = tag[len(registry) + 1 :].rsplit(":", 1)[0]
            items.append(PushItem(tag, repository))
    return items


def push_images(targets: list[BuildTarget], *, dry_run: bool) -> list[dict[str, str]]:
    registry = os.environ.get("REGISTRY", "")
    if not registry:
        raise ConfigError(
            "REGISTRY is not set", "make push REGISTRY=<account>.dkr.ecr.<region>.amazonaws.com"
        )
    _account, region = parse_registry(registry)
    items = push_plan(targets, registry)
    if dry_run:
        print(f"would log in to {registry} (ECR GetAuthorizationToken, region {region})")
        for item in items:
            print(f"would create ECR repository {item.repository} if missing")
            print(f"would run: docker push {item.tag}")
        return []
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    ecr = boto3.client("ecr", region_name=region)
    try:
        token = ecr.get_authorization_token()["authorizationData"][0]
        user, password = base64.b64decode(token["authorizationToken"]).decode().split(":", 1)
        for item in items:
            _ensure_repository(ecr, item.repository)
    except (BotoCoreError, ClientError) as exc:
        raise LineageError(
            f"ECR refused: {exc}",
            "check AWS credentials and the ecr:GetAuthorizationToken, ecr:CreateRepository, "
            "ecr:DescribeRepositories and push permissions",
        ) from None
    login = subprocess.run(
        ["docker", "login", "--username", user, "--password-stdin", f"https://{registry}"],
        input=password,
        capture_output=True,
        text=True,
        check=False,
    )
    if login.returncode != 0:
        raise LineageError(f"docker login to {registry} failed: {login.stderr.strip()[-300:]}")
    pushed = []
    for item in items:
        print(f"pushing {item.tag}", flush=True)
        result = subprocess.run(
            ["docker", "push", item.tag], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise LineageError(
                f"docker push {item.tag} failed: {result.stderr.strip()[-300:]}",
                "is the image built with this REGISTRY? (make images REGISTRY=...)",
            )
        digest = re.search(r"digest: (sha256:[0-9a-f]{64})", result.stdout)
        pushed.append({"image": item.tag, "digest": digest[1] if digest else ""})
        print(f"  {item.tag}@{digest[1] if digest else '?'}")
    return pushed


def _ensure_repository(ecr: object, name: str) -> None:
    from botocore.exceptions import ClientError

    client = ecr  # typed loosely: boto3 clients are generated at run time
    try:
        client.describe_repositories(repositoryNames=[name])  # type: ignore[attr-defined]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "RepositoryNotFoundException":
            raise
        client.create_repository(  # type: ignore[attr-defined]
            repositoryName=name, imageScanningConfiguration={"scanOnPush": True}
        )
        print(f"created ECR repository {name}")
