"""``python -m local.stack.container git|s3|mlflow|health NAME``: one stack service in a container.

The entry point of the `stack` image (images/Dockerfile) that `local/compose.yaml` runs three
times. Each service starts from the same `ServiceSpec` that `lineage stack up` uses for a
process, so flags, S3 identities, JWT keys, the git token and MLflow's basic auth cannot drift
between the two runtimes. What differs in a container, and only that, is set here:

- every service binds 0.0.0.0 inside its container (the host publishes it on LINEAGE_HOST);
  SeaweedFS's master, volume and filer stay on the container's loopback;
- the services are always reachable by other containers, so they always run as an exposed
  stack does: git reads need the token, MLflow asks for basic auth;
- MLflow reaches the S3 gateway at its published address (MLflow 3 hands clients download
  URLs signed for the endpoint it uses itself, so that endpoint must be one every client
  reaches), and creates the two buckets before it serves (so a plain `docker compose up`,
  without `lineage stack up`, is complete, whichever S3 image runs: ours or MinIO);
- the stack's credentials arrive as a read-only bind mount of the host's 0600 file.

Secrets never travel in argv or in the compose file: the spec's environment is passed to
`execve`, and SeaweedFS's identities and MLflow's auth config are written 0600 in the
container.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from lineage.config import Settings
from lineage.credentials import CREDENTIALS_FILE, private_dir, write_private
from lineage.errors import LineageError, StackError
from local.stack.services import ServiceSpec, git_spec, http_ok, mlflow_spec, s3_spec

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

HOME = Path("/var/lib/lineage")
CREDENTIALS_MOUNT = Path("/run/secrets/lineage-credentials.json")
BIND_ALL = "0.0.0.0"  # noqa: S104 - inside a container; the host decides what it publishes
# where MLflow reaches the S3 gateway: its published address (see local/compose.yaml)
S3_URL_ENV = "LINEAGE_COMPOSE_S3_URL"
# the address clients name (LINEAGE_HOST on the host): MLflow's DNS-rebinding guard admits it
ADVERTISED_HOST_ENV = "LINEAGE_ADVERTISED_HOST"
BUCKET_WAIT_S = 120.0
HEALTH_PATHS = {"git": "/health", "s3": "/healthz", "mlflow": "/health"}


def container_settings(env: dict[str, str] | None = None) -> Settings:
    """The stack's settings inside a container: fixed home, every port at its default."""
    env = dict(os.environ if env is None else env)
    return Settings(
        home=HOME,
        host=BIND_ALL,
        dvc_bucket=env.get("LINEAGE_DVC_BUCKET") or "lineage-dvc",
        mlflow_bucket=env.get("LINEAGE_MLFLOW_BUCKET") or "lineage-mlflow",
    )


def install_credentials(settings: Settings, mounted: Path = CREDENTIALS_MOUNT) -> None:
    """Copy the mounted credentials into the service's home (0600), where `Settings` reads
    them. A missing mount is a clear error: a stack without its own keys would be open."""
    if not mounted.is_file():
        raise StackError(
            f"the stack's credentials are not mounted at {mounted}",
            "start the stack with `lineage stack up --runtime docker` (it mounts them), or set "
            "LINEAGE_CREDENTIALS_FILE to a credentials.json of a stack home",
        )
    private_dir(settings.home)
    target = settings.home / CREDENTIALS_FILE
    write_private(target, mounted.read_text())


def service_spec(name: str, settings: Settings, env: dict[str, str]) -> ServiceSpec:
    """The process spec of `name`, adapted to the compose network (see the module doc)."""
    if name == "git":
        return git_spec(settings)
    if name == "s3":
        return s3_spec(settings)
    s3_url = env.get(S3_URL_ENV)
    if not s3_url:
        raise StackError(
            f"{S3_URL_ENV} is not set: MLflow does not know where the S3 store is published",
            "start the stack with `lineage stack up --runtime docker` (or local/compose.yaml)",
        )
    advertised = env.get(ADVERTISED_HOST_ENV) or "127.0.0.1"
    spec = mlflow_spec(settings, allowed_hosts=[advertised, "mlflow", "localhost", "127.0.0.1"])
    return replace(spec, env={**spec.env, "MLFLOW_S3_ENDPOINT_URL": s3_url})


def ensure_buckets(settings: Settings, s3_url: str, deadline_s: float = BUCKET_WAIT_S) -> None:
    """Create the DVC and MLflow buckets on the S3 service (waiting for it to answer)."""
    from lineage.storage import ensure_bucket

    client = _client_for(settings, s3_url)
    deadline = time.monotonic() + deadline_s
    for bucket in (settings.dvc_bucket, settings.mlflow_bucket):
        while True:
            try:
                if ensure_bucket(client, bucket):
                    print(f"created bucket {bucket}", flush=True)
                break
            except (BotoCoreError, ClientError, StackError) as exc:
                if time.monotonic() > deadline:
                    raise StackError(
                        f"the S3 service at {s3_url} does not serve bucket {bucket}: {exc}",
                        "read the s3 service's log (`docker logs <project>-s3`)",
                    ) from None
                time.sleep(1.0)


def _client_for(settings: Settings, s3_url: str) -> S3Client:
    """An S3 client with the stack's own keys for the gateway at `s3_url`."""
    from lineage.storage import keyed_session

    credentials = settings.credentials
    client: S3Client = keyed_session().client(
        "s3",
        endpoint_url=s3_url,
        aws_access_key_id=credentials.s3_access_key,
        aws_secret_access_key=credentials.s3_secret_key,
        region_name=settings.aws_region,
        config=Config(s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=10),
    )
    return client


def serve(name: str) -> None:
    """Prepare `name`'s files and replace this process with the service (PID 1 is then the
    service itself: `docker stop` signals it directly)."""
    env = dict(os.environ)
    settings = container_settings(env)
    install_credentials(settings)
    for sub in ("git", "s3", "mlflow", "run"):
        (settings.home / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    spec = service_spec(name, settings, env)
    for path, text in spec.files.items():
        write_private(path, text)
    if name == "mlflow":
        ensure_buckets(settings, spec.env["MLFLOW_S3_ENDPOINT_URL"])
    service_env = {
        key: value
        for key, value in env.items()
        if not key.startswith(("AWS_", "WEED_", "MLFLOW_TRACKING_"))
    }
    service_env |= {**spec.env, "PYTHONUNBUFFERED": "1"}
    sys.stdout.flush()
    os.chdir(settings.home)
    os.execve(spec.argv[0], spec.argv, service_env)  # noqa: S606 - argv from our own spec


def health(name: str) -> int:
    """Exit status of the compose health check: 0 when `name` answers on its port."""
    settings = container_settings()
    port = {"git": settings.git_port, "s3": settings.s3_port, "mlflow": settings.mlflow_port}
    return 0 if http_ok(f"http://127.0.0.1:{port[name]}{HEALTH_PATHS[name]}") else 1


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    usage = "usage: python -m local.stack.container git|s3|mlflow | health git|s3|mlflow"
    try:
        if len(args) == 2 and args[0] == "health" and args[1] in HEALTH_PATHS:
            sys.exit(health(args[1]))
        if len(args) == 1 and args[0] in HEALTH_PATHS:
            serve(args[0])
        sys.exit(usage)
    except LineageError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
