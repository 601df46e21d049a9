"""`lineage stack up|status|down|repo`: the embedded services as one unit.

State layout under LINEAGE_HOME (default ``./.lineage``)::

    git/<name>.git     bare repositories served over smart HTTP
    s3/                SeaweedFS data (the DVC remote and MLflow artifacts)
    mlflow/mlflow.db   MLflow backend store (SQLite)
    run/<svc>.pid      pid of each running service
    logs/<svc>.log     each service's output

`up` is idempotent: a service whose pid file names a live process of this home is left
alone. Ports are checked before anything starts, so a clash leaves nothing half started.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from botocore.exceptions import BotoCoreError, ClientError

from lineage.config import MLFLOW_ADMIN, Settings, export_stack_auth
from lineage.credentials import write_private
from lineage.errors import StackError
from lineage.storage import ensure_bucket, s3_client
from local.gitserver.server import valid_repo_name
from local.stack import process
from local.stack.services import ServiceSpec, git_spec, http_ok, mlflow_spec, s3_spec

SERVICE_NAMES = ("git", "s3", "mlflow")
# SeaweedFS waits up to 15 s for its filer's gRPC streams to close, then 1 s for the volume
# server (preStopSeconds): a shorter grace would SIGKILL it mid-shutdown.
STOP_GRACE_S = {"git": 10.0, "s3": 30.0, "mlflow": 15.0}
POLL_INTERVAL_S = 0.25

Reporter = Callable[[str], None]


def quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    url: str
    pid: int | None
    healthy: bool | None  # None: an external service we do not health-check
    embedded: bool
    log: str | None
    container: str | None = None  # the docker stack's container

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "pid": self.pid,
            "healthy": self.healthy,
            "embedded": self.embedded,
            "log": self.log,
            "container": self.container,
        }


@dataclass(frozen=True)
class StackStatus:
    home: Path
    services: dict[str, ServiceStatus]
    config: dict[str, Any]

    @property
    def healthy(self) -> bool:
        return all(s.healthy is not False for s in self.services.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "home": str(self.home),
            "healthy": self.healthy,
            "services": {name: s.to_json() for name, s in self.services.items()},
            "config": self.config,
        }


class LocalStack:
    """The embedded git server, S3 store and MLflow server of one LINEAGE_HOME."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.home

    # -- paths ---------------------------------------------------------------------------------
    def pid_file(self, name: str) -> Path:
        return self.home / "run" / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    @property
    def git_root(self) -> Path:
        return self.home / "git"

    def embedded_names(self) -> list[str]:
        names = ["git"]
        if self.settings.embedded_s3:
            names.append("s3")
        if self.settings.embedded_mlflow:
            names.append("mlflow")
        return names

    def spec(self, name: str) -> ServiceSpec:
        builders = {"git": git_spec, "s3": s3_spec, "mlflow": mlflow_spec}
        return builders[name](self.settings)

    # -- up ------------------------------------------------------------------------------------
    def up(self, report: Reporter = quiet) -> StackStatus:
        """Start every embedded service that is not running; return when all are healthy."""
        self._prepare_home()
        if self.settings.exposed:
            report(exposure_warning(self.settings))
        to_start: list[ServiceSpec] = []
        for name in self.embedded_names():
            self._reap_orphans(name, report)
            pid = process.running_pid(self.pid_file(name), str(self.home))
            if pid is not None:
                report(f"{name}: already running (pid {pid})")
                continue
            to_start.append(self.spec(name))  # resolves binaries: fails before anything starts
        self._check_ports(to_start)
        started: dict[str, int] = {}
        for spec in to_start:
            for path, text in spec.files.items():
                write_private(path, text)
            env = {**service_base_env(), **spec.env, "PYTHONUNBUFFERED": "1"}
            started[spec.name] = process.spawn(
                spec.argv,
                pid_file=self.pid_file(spec.name),
                log_file=self.log_file(spec.name),
                env=env,
                cwd=self.home,
            )
            report(f"{spec.name}: started (pid {started[spec.name]}), waiting for {spec.url}")
        self._wait_healthy(to_start, started, report)
        self._ensure_buckets(report)
        for database in (self.home / "mlflow").glob("*.db"):  # runs, params, registry
            database.chmod(0o600)
        export_stack_auth(self.settings)
        return self.status()

    def _prepare_home(self) -> None:
        prepare_home(self.home)

    def _reap_orphans(self, name: str, report: Reporter) -> None:
        """A service whose leader was killed (SIGKILL, OOM) can leave workers that still hold
        its port (MLflow's uvicorn worker): they are in the leader's process group, which
        stays ours while any member lives, so they are stopped before anything starts."""
        leader = process.read_pid(self.pid_file(name))
        if leader is None or process.is_alive(leader):
            return
        survivors = process.group_members(leader)
        if survivors:
            report(f"{name}: stopping {len(survivors)} orphaned process(es) of pid {leader}")
            process.terminate_group(leader, STOP_GRACE_S[name])
        self.pid_file(name).unlink(missing_ok=True)

    def _check_ports(self, specs: list[ServiceSpec]) -> None:
        for spec in specs:
            for port, env_var in spec.ports.items():
                if not process.port_free(self.settings.host, port):
                    raise StackError(
                        f"port {port} for the {spec.name} service is already in use by "
                        "another program",
                        f"stop that program or set {env_var} to a free port",
                    )

    def _wait_healthy(
        self, specs: list[ServiceSpec], pids: dict[str, int], report: Reporter
    ) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout
        pending = {spec.name: spec for spec in specs}
        started_at = time.monotonic()
        while pending:
            for name, spec in list(pending.items()):
                if not process.is_alive(pids[name]):
                    self.pid_file(name).unlink(missing_ok=True)
                    raise StackError(
                        f"the {name} service exited during start-up",
                        f"read the cause in {self.log_file(name)} (last lines below), fix it, "
                        "then run `lineage stack up` again",
                        details=process.tail(self.log_file(name)),
                    )
                if spec.health():
                    report(f"{name}: healthy after {time.monotonic() - started_at:.1f}s")
                    del pending[name]
            if not pending:
                break
            if time.monotonic() > deadline:
                for name in pending:
                    process.terminate(pids[name], STOP_GRACE_S[name])
                    self.pid_file(name).unlink(missing_ok=True)
                name = next(iter(pending))
                raise StackError(
                    f"the {name} service did not become healthy within "
                    f"{self.settings.startup_timeout:.0f}s",
                    f"read the cause in {self.log_file(name)} (last lines below), or raise "
                    "LINEAGE_STARTUP_TIMEOUT on a slow machine",
                    details=process.tail(self.log_file(name)),
                )
            time.sleep(POLL_INTERVAL_S)

    def _ensure_buckets(self, report: Reporter) -> None:
        ensure_buckets(self.settings, report, str(self.log_file("s3")))

    # -- status --------------------------------------------------------------------------------
    def status(self) -> StackStatus:
        services: dict[str, ServiceStatus] = {}
        embedded = self.embedded_names()
        for name in SERVICE_NAMES:
            if name in embedded:
                pid = process.running_pid(self.pid_file(name), str(self.home))
                url = {
                    "git": self.settings.git_url,
                    "s3": self.settings.s3_endpoint,
                    "mlflow": self.settings.mlflow_uri,
                }[name]
                healthy = pid is not None and health_of(name, url)
                services[name] = ServiceStatus(
                    name, url, pid, healthy, True, str(self.log_file(name))
                )
            else:
                services[name] = self._external_status(name)
        return StackStatus(self.home, services, self.settings.describe())

    def _external_status(self, name: str) -> ServiceStatus:
        from lineage.redact import redact_url

        if name == "s3":
            url = self.settings.s3_endpoint
            try:
                s3_client(self.settings, timeout=HEALTH_TIMEOUT).list_buckets()
                healthy: bool | None = True
            except Exception:  # noqa: BLE001 - a health check: any failure is unhealthy
                healthy = False
        else:
            url = self.settings.mlflow_uri
            healthy = http_ok(f"{url}/health") if url.startswith("http") else None
        return ServiceStatus(name, redact_url(url), None, healthy, False, None)

    # -- down ----------------------------------------------------------------------------------
    def down(self, report: Reporter = quiet) -> list[str]:
        """Stop every running embedded service (SIGTERM, SIGKILL after a grace period).

        All are signalled at once and waited for in parallel: SeaweedFS alone needs ~17 s.
        """
        running = {}
        for name in SERVICE_NAMES:
            self._reap_orphans(name, report)
            pid = process.running_pid(self.pid_file(name), str(self.home))
            if pid is not None:
                running[name] = pid
        with ThreadPoolExecutor(max_workers=len(SERVICE_NAMES)) as pool:
            outcome = dict(
                zip(
                    running,
                    pool.map(lambda n: process.terminate(running[n], STOP_GRACE_S[n]), running),
                    strict=True,
                )
            )
        for name, pid in running.items():
            self.pid_file(name).unlink(missing_ok=True)
            killed = "" if outcome[name] else ", killed after grace"
            report(f"{name}: stopped (pid {pid}){killed}")
        # Services this process started and another one stopped (a `lineage stack down` run
        # elsewhere, then `up` again under new pids) are still its children to reap.
        process.reap_ended()
        return list(running)

    # -- repos ---------------------------------------------------------------------------------
    def create_repo(self, name: str) -> tuple[str, bool]:
        """Create (or find) bare repo `name` on the running git server; return its clone URL."""
        return create_repo(self.settings, name, str(self.log_file("git")))


HEALTH_TIMEOUT = 3.0
PROBE_KEY = ".lineage-probe"


def probe_bucket(client: Any, bucket: str) -> None:
    """Read back one existing object (if any) and write, read and delete a probe."""
    listed = client.list_objects_v2(Bucket=bucket, MaxKeys=1).get("Contents", [])
    for obj in listed:
        client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    client.put_object(Bucket=bucket, Key=PROBE_KEY, Body=b"ok")
    if client.get_object(Bucket=bucket, Key=PROBE_KEY)["Body"].read() != b"ok":
        raise StackError(f"bucket {bucket} returned other bytes than were written")
    client.delete_object(Bucket=bucket, Key=PROBE_KEY)


def service_base_env() -> dict[str, str]:
    """The machine's environment for a service, without AWS_* (SeaweedFS would make a
    user's AWS key pair its admin; MLflow's S3 client would mix a session token into our
    keys) and without SeaweedFS's WEED_* overrides: each service gets exactly its own."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "WEED_", "MLFLOW_TRACKING_"))
    }


def exposure_warning(settings: Settings) -> str:
    """What binding beyond loopback exposes, said before anything starts."""
    mlflow = (
        f"MLflow http://{settings.host}:{settings.mlflow_port} (basic auth, user {MLFLOW_ADMIN})"
        if settings.embedded_mlflow
        else "no MLflow (external)"
    )
    return (
        f"WARNING: LINEAGE_HOST={settings.host} is not loopback: other machines and "
        "containers that can route to it reach "
        f"the S3 store http://{settings.host}:{settings.s3_port} (the DVC remote: patient "
        f"images; signed requests only), the git server http://{settings.host}:"
        f"{settings.git_port} (token needed for every request) and {mlflow}. SeaweedFS's "
        "master, volume and filer stay on 127.0.0.1. Credentials: "
        f"{settings.home / 'credentials.json'} (0600)."
    )


def health_of(name: str, url: str) -> bool:
    path = {"git": "/health", "s3": "/healthz", "mlflow": "/health"}[name]
    return http_ok(url + path)


STATE_DIRS = ("git", "s3", "mlflow", "run", "logs")


def prepare_home(home: Path, subdirs: tuple[str, ...] = STATE_DIRS) -> None:
    """Create LINEAGE_HOME's state directories, 0700; refuse a home that is a file or
    cannot be written."""
    if home.exists() and not home.is_dir():
        raise StackError(
            f"LINEAGE_HOME {home} exists but is not a directory",
            "point LINEAGE_HOME at a directory, or move that file away",
        )
    for sub in subdirs:
        path = home / sub
        if path.exists() and not path.is_dir():
            raise StackError(
                f"state directory is corrupt: {path} should be a directory but is a file",
                f"move {path} away (its data cannot be used), then run `lineage stack up`",
            )
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StackError(
                f"cannot create {path}: {exc.strerror}",
                "set LINEAGE_HOME to a writable directory",
            ) from None
    if not os.access(home, os.W_OK):
        raise StackError(
            f"LINEAGE_HOME {home} is not writable",
            "set LINEAGE_HOME to a writable directory",
        )
    # patient images, the consent registry and the stack's credentials live here
    home.chmod(0o700)


def ensure_buckets(settings: Settings, report: Reporter, s3_log: str) -> None:
    """Create the buckets, then wait until the store really serves them: after a crash
    SeaweedFS answers /healthz before its volumes are loaded, and reads of existing
    objects fail (InternalError) until they are, so an existing object is read back and
    a probe is written and deleted before the store counts as up."""
    client = s3_client(settings)
    deadline = time.monotonic() + settings.startup_timeout
    for bucket in (settings.dvc_bucket, settings.mlflow_bucket):
        while True:
            try:
                if ensure_bucket(client, bucket):
                    report(f"s3: created bucket {bucket}")
                if settings.embedded_s3:
                    probe_bucket(client, bucket)
                break
            except (BotoCoreError, ClientError, StackError) as exc:
                if time.monotonic() > deadline:
                    raise StackError(
                        f"the S3 store at {settings.s3_endpoint} does not serve bucket "
                        f"{bucket}: {exc}",
                        f"check the store (`lineage stack status`) and {s3_log}",
                    ) from None
                time.sleep(POLL_INTERVAL_S)


def create_repo(settings: Settings, name: str, git_log: str) -> tuple[str, bool]:
    """Create (or find) bare repo `name` on the running git server; return its clone URL."""
    name = name.removesuffix(".git")
    if not valid_repo_name(name):
        raise StackError(
            f"invalid repository name {name!r}",
            "use letters, digits, '.', '_' and '-', starting with a letter or digit",
        )
    try:
        response = httpx.post(
            f"{settings.git_url}/api/repos/{name}",
            auth=("lineage", settings.credentials.git_token),
            timeout=30,
        )
    except httpx.HTTPError:
        raise StackError(
            f"the git server at {settings.git_url} is not reachable",
            "start the stack with `lineage stack up`",
        ) from None
    if not response.is_success:
        raise StackError(
            f"the git server refused to create {name}: HTTP {response.status_code} "
            f"{response.text[:200]}",
            f"check {git_log}",
        )
    return settings.repo_url(name), bool(response.json()["created"])
