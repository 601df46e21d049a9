"""All configuration in one place: ``LINEAGE_*`` environment variables and their defaults.

Defaults describe the embedded local stack (git server, SeaweedFS S3 store, MLflow server as
local processes under ``.lineage/``). Pointing ``LINEAGE_S3_ENDPOINT`` or ``LINEAGE_MLFLOW_URI``
at existing services (MinIO, AWS S3, a shared MLflow) replaces the embedded one; the jobs do
not know the difference. `Settings.describe()` is what ``lineage stack status --json`` prints.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lineage.credentials import CREDENTIALS_FILE, StackCredentials
from lineage.errors import ConfigError
from lineage.redact import redact_url

GIT_TOKEN_ENV = "LINEAGE_GIT_TOKEN"  # noqa: S105 - the variable's name, not a token
GIT_AUTH_URL_ENV = "LINEAGE_GIT_AUTH_URL"  # the only server the token is sent to

# Ports below the Linux ephemeral range (32768+), away from 5000 (MLflow), 8080 (SageMaker
# serving), 8333/9333 (SeaweedFS), 9000 (MinIO).
DEFAULT_GIT_PORT = 28180
DEFAULT_S3_PORT = 28181
DEFAULT_MLFLOW_PORT = 28182
DEFAULT_SEAWEED_PORT_BASE = (
    28190  # master, master gRPC, volume, volume gRPC, filer, filer gRPC, s3 gRPC
)
SEAWEED_INTERNAL_PORTS = 7

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
STACK_RUNTIMES = ("process", "docker")
# How this home's stack runs (written by `lineage stack up --runtime docker`): its runtime,
# the address it was published on, its ports and its compose project. Later commands read
# their defaults from it, so they find the stack without the user exporting anything.
STACK_FILE = "stack.json"
# What an AWS user's shell holds besides a key pair; meaningless (or fatal) with other keys.
AMBIENT_AWS = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE")
MLFLOW_ADMIN = "admin"  # the MLflow basic-auth user of the embedded stack

ENV_VARS: dict[str, str] = {
    "LINEAGE_HOME": "state directory of the embedded stack (default ./.lineage)",
    "LINEAGE_HOST": "address the embedded services bind to and are reached at (default 127.0.0.1)",
    "LINEAGE_GIT_PORT": f"git server port (default {DEFAULT_GIT_PORT})",
    "LINEAGE_S3_PORT": f"S3 store port (default {DEFAULT_S3_PORT})",
    "LINEAGE_MLFLOW_PORT": f"MLflow server port (default {DEFAULT_MLFLOW_PORT})",
    "LINEAGE_SEAWEED_PORT_BASE": (
        f"first of {SEAWEED_INTERNAL_PORTS} internal SeaweedFS ports "
        f"(default {DEFAULT_SEAWEED_PORT_BASE})"
    ),
    "LINEAGE_S3_ENDPOINT": "use this S3 endpoint (MinIO, AWS) instead of starting SeaweedFS",
    "LINEAGE_MLFLOW_URI": "use this MLflow tracking server instead of starting one",
    "LINEAGE_DVC_BUCKET": "bucket of the DVC remote (default lineage-dvc)",
    "LINEAGE_MLFLOW_BUCKET": "bucket for MLflow artifacts (default lineage-mlflow)",
    "LINEAGE_STARTUP_TIMEOUT": "seconds `stack up` waits for each service (default 180)",
    "LINEAGE_WEED_BIN": "path of the SeaweedFS `weed` binary (default: from the venv / PATH)",
    "LINEAGE_CONSENT_DB": "SQLAlchemy URL of the consent registry (default SQLite in LINEAGE_HOME)",
    "LINEAGE_INDEX_DB": "SQLAlchemy URL of the lineage index (default SQLite in LINEAGE_HOME)",
    "LINEAGE_CONSENT_KEY": (
        "HMAC key of the consent log (default: a random key file, 0600, in LINEAGE_HOME)"
    ),
    "LINEAGE_STACK_RUNTIME": (
        "how `lineage stack up` runs the services: process (default) or docker (compose)"
    ),
    "LINEAGE_COMPOSE_PROJECT": "compose project of the docker stack (default: from LINEAGE_HOME)",
    "LINEAGE_STACK_IMAGE": "image of the docker stack's services (default model-lineage/stack:TAG)",
    "LINEAGE_S3_IMAGE": "a MinIO image as the docker stack's S3 store (instead of SeaweedFS)",
    "LINEAGE_IMAGE_REGISTRY": "registry of the job images (<acct>.dkr.ecr.<region>.amazonaws.com)",
    "LINEAGE_IMAGE_TAG": "tag of the job images (default latest)",
    "LINEAGE_SIGNING_KEY_FILE": (
        "ECDSA P-256 private key that signs (default LINEAGE_HOME/keys/signing-key.pem, 0600)"
    ),
    "LINEAGE_SIGNING_KMS_KEY_ID": "sign with this AWS KMS key (ECC_NIST_P256) instead of a file",
    "LINEAGE_TRUSTED_KEYS": (
        "public keys whose signatures count: PEM text, a PEM file or a trust.json "
        "(default LINEAGE_HOME/keys/trust.json)"
    ),
    "LINEAGE_ACTOR": "who decisions and consent events are recorded as (default the OS user)",
    "LINEAGE_INDEX_VERIFY_INTERVAL": (
        "seconds between full checks of the index's rows against the manifests (default 3600; "
        "0: before every indexed answer)"
    ),
}


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number", f"set {name} to an integer") from None
    if not 1 <= value <= 65535:
        raise ConfigError(f"{name}={value} is not a valid port", f"set {name} to 1-65535")
    return value


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number", f"set {name} to seconds") from None
    if not math.isfinite(value) or value <= 0:  # nan/inf: a sleep that raises or never ends
        raise ConfigError(f"{name}={raw!r} must be positive", f"set {name} to seconds > 0")
    return value


def read_stack_file(home: Path) -> dict[str, Any]:
    """What `lineage stack up --runtime docker` recorded for `home` ({} when nothing)."""
    try:
        data = json.loads((home / STACK_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError):  # no stack yet (or no home: said later)
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{home / STACK_FILE} is unreadable ({exc.__class__.__name__})",
            "run `lineage stack up --runtime docker` again to rewrite it",
        ) from None
    return data if isinstance(data, dict) else {}


def _stack_runtime(env: Mapping[str, str], recorded: Mapping[str, Any]) -> str:
    runtime = env.get("LINEAGE_STACK_RUNTIME") or str(recorded.get("runtime") or "process")
    if runtime not in STACK_RUNTIMES:
        raise ConfigError(
            f"LINEAGE_STACK_RUNTIME={runtime!r} is not a stack runtime",
            f"set it to one of {', '.join(STACK_RUNTIMES)}",
        )
    return runtime


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build it with `Settings.from_env()`."""

    home: Path
    host: str = "127.0.0.1"
    git_port: int = DEFAULT_GIT_PORT
    s3_port: int = DEFAULT_S3_PORT
    mlflow_port: int = DEFAULT_MLFLOW_PORT
    seaweed_port_base: int = DEFAULT_SEAWEED_PORT_BASE
    s3_endpoint_override: str | None = None
    mlflow_uri_override: str | None = None
    dvc_bucket: str = "lineage-dvc"
    mlflow_bucket: str = "lineage-mlflow"
    startup_timeout: float = 180.0
    weed_bin: str | None = None
    # an external store's key pair (the standard AWS variables); the embedded store has its own
    external_access_key_id: str | None = None
    external_secret_access_key: str | None = field(default=None, repr=False)
    aws_region: str = "us-east-1"
    image_registry: str = ""
    image_tag: str = "latest"
    consent_db_override: str | None = field(default=None, repr=False)
    index_db_override: str | None = field(default=None, repr=False)
    consent_key: str | None = field(default=None, repr=False)
    stack_runtime: str = "process"
    compose_project: str | None = None
    signing_key_file_override: str | None = None  # a path, never the key
    signing_kms_key_id: str | None = None
    trusted_keys: str | None = None  # public keys: PEM text or a path
    actor: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("LINEAGE_HOME") or ".lineage").expanduser().absolute()
        recorded = read_stack_file(home)
        if recorded:  # the docker stack's address and ports, unless the environment says
            env = {**{k: str(v) for k, v in recorded.get("env", {}).items()}, **env}
        s3_override = env.get("LINEAGE_S3_ENDPOINT") or None
        # Embedded store: its own key pair (lineage.credentials), whatever AWS_* holds.
        # External store: the standard AWS chain.
        key_id = env.get("AWS_ACCESS_KEY_ID") if s3_override else None
        secret = env.get("AWS_SECRET_ACCESS_KEY") if s3_override else None
        return cls(
            home=home,
            host=env.get("LINEAGE_HOST") or "127.0.0.1",
            git_port=_env_int(env, "LINEAGE_GIT_PORT", DEFAULT_GIT_PORT),
            s3_port=_env_int(env, "LINEAGE_S3_PORT", DEFAULT_S3_PORT),
            mlflow_port=_env_int(env, "LINEAGE_MLFLOW_PORT", DEFAULT_MLFLOW_PORT),
            seaweed_port_base=_env_int(env, "LINEAGE_SEAWEED_PORT_BASE", DEFAULT_SEAWEED_PORT_BASE),
            s3_endpoint_override=s3_override.rstrip("/") if s3_override else None,
            mlflow_uri_override=(env.get("LINEAGE_MLFLOW_URI") or "").rstrip("/") or None,
            dvc_bucket=env.get("LINEAGE_DVC_BUCKET") or "lineage-dvc",
            mlflow_bucket=env.get("LINEAGE_MLFLOW_BUCKET") or "lineage-mlflow",
            startup_timeout=env_float(env, "LINEAGE_STARTUP_TIMEOUT", 180.0),
            weed_bin=env.get("LINEAGE_WEED_BIN") or None,
            external_access_key_id=key_id or None,
            external_secret_access_key=secret or None,
            aws_region=env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or "us-east-1",
            image_registry=(env.get("LINEAGE_IMAGE_REGISTRY") or "").rstrip("/"),
            image_tag=env.get("LINEAGE_IMAGE_TAG") or "latest",
            consent_db_override=env.get("LINEAGE_CONSENT_DB") or None,
            index_db_override=env.get("LINEAGE_INDEX_DB") or None,
            consent_key=env.get("LINEAGE_CONSENT_KEY") or None,
            stack_runtime=_stack_runtime(env, recorded),
            compose_project=env.get("LINEAGE_COMPOSE_PROJECT") or None,
            signing_key_file_override=env.get("LINEAGE_SIGNING_KEY_FILE") or None,
            signing_kms_key_id=env.get("LINEAGE_SIGNING_KMS_KEY_ID") or None,
            trusted_keys=env.get("LINEAGE_TRUSTED_KEYS") or None,
            actor=env.get("LINEAGE_ACTOR") or None,
        )

    # -- credentials ---------------------------------------------------------------------------
    @functools.cached_property
    def credentials(self) -> StackCredentials:
        """The embedded stack's own secrets (created in LINEAGE_HOME on first use)."""
        return StackCredentials.load_or_create(self.home)

    @property
    def aws_access_key_id(self) -> str | None:
        if self.embedded_s3:
            return self.credentials.s3_access_key
        return self.external_access_key_id

    @property
    def aws_secret_access_key(self) -> str | None:
        if self.embedded_s3:
            return self.credentials.s3_secret_key
        return self.external_secret_access_key

    @property
    def exposed(self) -> bool:
        """Bound beyond loopback: reachable from other machines (or containers)."""
        return self.host not in LOOPBACK_HOSTS and not self.host.startswith("127.")

    @property
    def mlflow_auth(self) -> bool:
        """The embedded MLflow asks for basic auth: when it is exposed, and always in the
        docker stack (other containers can reach it whatever address it is published on)."""
        return self.embedded_mlflow and (self.exposed or self.stack_runtime == "docker")

    # -- where things are --------------------------------------------------------------------
    @property
    def git_url(self) -> str:
        """Base URL of the git server; repos are ``<git_url>/<name>.git``."""
        return f"http://{self.host}:{self.git_port}"

    @property
    def s3_endpoint(self) -> str:
        return self.s3_endpoint_override or f"http://{self.host}:{self.s3_port}"

    @property
    def mlflow_uri(self) -> str:
        return self.mlflow_uri_override or f"http://{self.host}:{self.mlflow_port}"

    @property
    def embedded_s3(self) -> bool:
        return self.s3_endpoint_override is None

    @property
    def embedded_mlflow(self) -> bool:
        return self.mlflow_uri_override is None

    @property
    def dvc_remote_url(self) -> str:
        return f"s3://{self.dvc_bucket}/dvc"

    @property
    def mlflow_artifacts_destination(self) -> str:
        return f"s3://{self.mlflow_bucket}/artifacts"

    @property
    def seaweed_ports(self) -> list[int]:
        return list(range(self.seaweed_port_base, self.seaweed_port_base + SEAWEED_INTERNAL_PORTS))

    @property
    def consent_db(self) -> str:
        """SQLAlchemy URL of the consent registry (may hold a password: redact to show)."""
        return self.consent_db_override or f"sqlite:///{self.home / 'consent.db'}"

    @property
    def index_db(self) -> str:
        """SQLAlchemy URL of the lineage index (a cache of MLflow + git, rebuildable)."""
        return self.index_db_override or f"sqlite:///{self.home / 'index.db'}"

    @property
    def signing_key_file(self) -> Path:
        """The private key file the operator and local jobs sign with (unless KMS)."""
        if self.signing_key_file_override:
            return Path(self.signing_key_file_override).expanduser().absolute()
        return self.home / "keys" / "signing-key.pem"

    @property
    def operator(self) -> str:
        """Who the operator's decisions and consent events are recorded as."""
        import getpass

        return self.actor or getpass.getuser()

    def image_uri(self, name: str) -> str:
        """A job image, named as docker-bake.hcl tags it (processing, training, inference)."""
        prefix = f"{self.image_registry}/" if self.image_registry else ""
        return f"{prefix}model-lineage/{name}:{self.image_tag}"

    def repo_url(self, name: str) -> str:
        return f"{self.git_url}/{name}.git"

    # -- what clients (jobs, DVC, MLflow, boto3) need in their environment --------------------
    def client_env(self) -> dict[str, str]:
        """Environment for a process that talks to this stack (a job, the dvc CLI, a test):
        endpoints and credentials, passed by environment (never argv or config files).

        With the embedded store the key pair is the stack's own; merge it over an
        environment with `merge_env`, which drops the user's session token and profile."""
        env = {
            "AWS_DEFAULT_REGION": self.aws_region,
            "AWS_ENDPOINT_URL_S3": self.s3_endpoint,
            "MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint,
            "MLFLOW_TRACKING_URI": self.mlflow_uri,
            **self.stack_auth_env(),
        }
        if self.aws_access_key_id and self.aws_secret_access_key:
            env["AWS_ACCESS_KEY_ID"] = self.aws_access_key_id
            env["AWS_SECRET_ACCESS_KEY"] = self.aws_secret_access_key
        return env

    def stack_auth_env(self) -> dict[str, str]:
        """What a client of the embedded git server and MLflow needs to authenticate: the
        git token (sent only to this git server, see `lineage.gitops.tool_env`) and, when
        MLflow asks for basic auth, its user and password."""
        env = {GIT_TOKEN_ENV: self.credentials.git_token, GIT_AUTH_URL_ENV: self.git_url}
        if self.mlflow_auth:
            env["MLFLOW_TRACKING_USERNAME"] = MLFLOW_ADMIN
            env["MLFLOW_TRACKING_PASSWORD"] = self.credentials.mlflow_password
        return env

    def describe(self) -> dict[str, Any]:
        """The resolved settings as plain JSON-able data, credentials redacted."""
        return {
            "home": str(self.home),
            "host": self.host,
            "stack_runtime": self.stack_runtime,
            "git_url": self.git_url,
            "s3_endpoint": redact_url(self.s3_endpoint),
            "mlflow_uri": redact_url(self.mlflow_uri),
            "embedded": {"s3": self.embedded_s3, "mlflow": self.embedded_mlflow, "git": True},
            "dvc_remote": self.dvc_remote_url,
            "mlflow_artifacts": self.mlflow_artifacts_destination,
            "ports": {
                "git": self.git_port,
                "s3": self.s3_port,
                "mlflow": self.mlflow_port,
                "seaweed_internal": self.seaweed_ports,
            },
            "startup_timeout_s": self.startup_timeout,
            "consent_db": redact_url(self.consent_db),
            "index_db": redact_url(self.index_db),
            "images": {n: self.image_uri(n) for n in ("processing", "training", "inference")},
        }


def export_stack_auth(settings: Settings) -> None:
    """Give this process what its own git and MLflow clients need to reach the embedded
    stack (the git token, MLflow's basic-auth user): only once the stack has credentials,
    and never over a value the user set. AWS variables are left alone: S3 clients get the
    stack's keys explicitly, and `lineage sagemaker` needs the user's own."""
    if not (settings.home / CREDENTIALS_FILE).exists():
        return
    for key, value in settings.stack_auth_env().items():
        os.environ.setdefault(key, value)


def merge_env(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """`extra` over `base`. When `extra` brings an AWS key pair, the session token and
    profile `base` holds are dropped unless `extra` sets them too: a user's token mixed with
    the stack's keys fails every signature check, and a profile this machine (or a job's
    container) lacks makes boto3 refuse to start."""
    merged = {**base, **extra}
    if "AWS_ACCESS_KEY_ID" in extra:
        for key in AMBIENT_AWS:
            if key not in extra:
                merged.pop(key, None)
    return merged
