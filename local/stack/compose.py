"""`lineage stack up|status|down --runtime docker`: the stack as compose services.

The same three services as `LocalStack` (git server, S3 store, MLflow), run by
`local/compose.yaml` from the `stack` image, with the same interface (`up`, `status`, `down`,
`create_repo`) so that the ops layer and the CLI do not care which runtime holds the data.

Where the services are published matters more than in the process stack: jobs run in
containers, and SageMaker tooling starts them on networks of its own (the SDK's local mode:
`sagemaker-local`). The default address is the docker bridge's gateway (docker0, e.g.
172.17.0.1): the host reaches it, `--runtime docker` jobs (host network) reach it, and so
does every container on any bridge network. `up` records the address, ports and compose
project in LINEAGE_HOME/stack.json, which `Settings.from_env` reads, so the URLs recorded in
lineage (the git remote of each dataset, the MLflow URI) are the same from everywhere.

State lives in the project's named volumes (`<project>_git`, `_s3`, `_mlflow`): `down` removes
the containers and keeps them, so `up` finds the datasets, runs and models again.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from lineage.config import LOOPBACK_HOSTS, STACK_FILE, Settings, export_stack_auth
from lineage.credentials import private_dir, write_private
from lineage.errors import StackError
from lineage.redact import redact_text
from local.images.docker import require_engine
from local.stack import process
from local.stack.stack import (
    POLL_INTERVAL_S,
    Reporter,
    ServiceStatus,
    StackStatus,
    create_repo,
    ensure_buckets,
    exposure_warning,
    health_of,
    prepare_home,
    quiet,
    service_base_env,
)

LOCAL_DIR = Path(__file__).resolve().parents[1]
COMPOSE_FILE = LOCAL_DIR / "compose.yaml"
MINIO_FILE = LOCAL_DIR / "compose.minio.yaml"
SERVICES = ("git", "s3", "mlflow")
COMPOSE_TIMEOUT_S = 600.0


def compose_command() -> list[str]:
    """`docker compose` (the v2 plugin) where it exists, else Debian's `docker-compose` (v1)."""
    plugin = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, check=False
    )
    if plugin.returncode == 0:
        return ["docker", "compose"]
    legacy = subprocess.run(
        ["docker-compose", "version"], capture_output=True, text=True, check=False
    )
    if legacy.returncode == 0:
        return ["docker-compose"]
    raise StackError(
        "neither `docker compose` nor `docker-compose` is installed",
        "install Docker's compose plugin or Debian's `docker-compose`, or run the stack as "
        "processes: `lineage stack up`",
    )


def bridge_gateway() -> str:
    """The docker bridge network's gateway address: reachable from the host and from every
    container, whichever network it is on.

    Docker Desktop and docker-ce list the gateway in the bridge's IPAM config; Debian's
    `docker.io` lists only the subnet there. Then the bridge interface's own address
    (`docker0`, the gateway by construction) is read, and failing that the subnet's first
    host, which is where dockerd puts the gateway."""
    done = subprocess.run(
        [
            "docker",
            "network",
            "inspect",
            "bridge",
            "--format",
            '{{json .IPAM.Config}}|{{index .Options "com.docker.network.bridge.name"}}',
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode == 0:
        config, _, interface = done.stdout.strip().partition("|")
        address = gateway_from_ipam(config, interface or "docker0", interface_address)
        if address:
            return address
    raise StackError(
        "cannot read the docker bridge's address (`docker network inspect bridge` names no "
        "gateway or subnet, and the bridge interface has no IPv4 address)",
        "set LINEAGE_HOST to an address of this machine that containers can reach",
    )


def gateway_from_ipam(
    ipam_json: str, interface: str, address_of: Callable[[str], str | None]
) -> str | None:
    """The gateway from the bridge's IPAM config (`[{"Subnet": ..., "Gateway": ...}]`), else
    the bridge interface's address, else the first host of the IPv4 subnet."""
    try:
        entries = json.loads(ipam_json) or []
    except ValueError:
        entries = []
    configs = [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    for entry in configs:
        if entry.get("Gateway") and ":" not in str(entry["Gateway"]):
            return str(entry["Gateway"]).split("/")[0]
    found = address_of(interface)
    if found:
        return found
    for entry in configs:
        try:
            subnet = ipaddress.ip_network(str(entry.get("Subnet", "")), strict=False)
        except ValueError:
            continue
        if subnet.version == 4 and subnet.num_addresses > 2:
            return str(next(subnet.hosts()))
    return None


def interface_address(interface: str) -> str | None:
    """The IPv4 address of a network interface (`ip -4 -o addr show dev IF`), or None."""
    done = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "dev", interface],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"\binet (\d+\.\d+\.\d+\.\d+)/", done.stdout)
    return match.group(1) if done.returncode == 0 and match else None


def default_project(home: Path) -> str:
    """One compose project (and so one set of volumes) per LINEAGE_HOME."""
    return "lineage-" + hashlib.sha256(str(home).encode()).hexdigest()[:10]


def stack_image(settings: Settings) -> str:
    return os.environ.get("LINEAGE_STACK_IMAGE") or f"model-lineage/stack:{settings.image_tag}"


class ComposeStack:
    """The git server, S3 store and MLflow server of one LINEAGE_HOME, as compose services."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.home
        self.project = settings.compose_project or default_project(settings.home)

    def container(self, name: str) -> str:
        return f"{self.project}-{name}"

    def log_hint(self, name: str) -> str:
        return f"`docker logs {self.container(name)}`"

    # -- up ------------------------------------------------------------------------------------
    def up(self, report: Reporter = quiet) -> StackStatus:
        """Start (or find running) the compose services; return when all are healthy."""
        settings = self._resolved_settings()  # before anything is created or started
        prepare_home(self.home, ("run",))  # the data lives in the project's volumes
        require_engine()
        command = compose_command()
        self._refuse_running_processes()
        image = stack_image(settings)
        self._require_image(image)
        if settings.exposed:
            report(exposure_warning(settings))
        running = self.running_services()
        if not running:
            self._check_ports(settings)
        self._record(settings)
        self.settings = settings
        env = self._compose_env(image)
        started_at = time.monotonic()
        report(f"compose: starting project {self.project} ({', '.join(SERVICES)}) from {image}")
        self._compose(command, ["up", "--detach", "--no-build"], env)
        self._wait_healthy(started_at, report)
        ensure_buckets(settings, report, self.log_hint("s3"))
        export_stack_auth(settings)
        return self.status()

    def _resolved_settings(self) -> Settings:
        """The settings with the address to publish on: LINEAGE_HOST (or the recorded one)
        if set, else the docker bridge's gateway."""
        if os.environ.get("LINEAGE_HOST") or (self.home / STACK_FILE).exists():
            host = self.settings.host
        else:
            host = bridge_gateway()
        if host in LOOPBACK_HOSTS or host.startswith("127."):
            raise StackError(
                f"the docker stack cannot be published on LINEAGE_HOST={host}: inside a "
                "container that is the container's own loopback, so jobs (and MLflow itself) "
                "could not reach the services",
                "unset LINEAGE_HOST (the default is the docker bridge's address) or set it to "
                "an address of this machine that containers reach; or use the process stack",
            )
        return replace(
            self.settings, host=host, stack_runtime="docker", compose_project=self.project
        )

    def _refuse_running_processes(self) -> None:
        for name in SERVICES:
            pid = process.running_pid(self.home / "run" / f"{name}.pid", str(self.home))
            if pid is not None:
                raise StackError(
                    f"the process stack of {self.home} is running ({name}: pid {pid})",
                    "stop it first (`lineage stack down`), then start the docker stack; its "
                    f"data stays under {self.home}",
                )

    def _require_image(self, image: str) -> None:
        found = subprocess.run(
            ["docker", "image", "inspect", image], capture_output=True, check=False
        )
        if found.returncode != 0:
            raise StackError(
                f"the stack image {image} is not built",
                "build it with `make stack-image` (add BASE_IMAGE=model-lineage/base:bookworm "
                "after `make base-image` where no registry is reachable), or set "
                "LINEAGE_STACK_IMAGE",
            )

    def _check_ports(self, settings: Settings) -> None:
        ports = {
            settings.git_port: "LINEAGE_GIT_PORT",
            settings.s3_port: "LINEAGE_S3_PORT",
            settings.mlflow_port: "LINEAGE_MLFLOW_PORT",
        }
        for port, variable in ports.items():
            if not process.port_free(settings.host, port):
                raise StackError(
                    f"port {port} on {settings.host} is already in use by another program",
                    f"stop that program or set {variable} to a free port",
                )

    def _record(self, settings: Settings) -> None:
        """LINEAGE_HOME/stack.json: where later commands find this stack."""
        recorded = {
            "runtime": "docker",
            "project": self.project,
            "env": {
                "LINEAGE_HOST": settings.host,
                "LINEAGE_GIT_PORT": str(settings.git_port),
                "LINEAGE_S3_PORT": str(settings.s3_port),
                "LINEAGE_MLFLOW_PORT": str(settings.mlflow_port),
                "LINEAGE_COMPOSE_PROJECT": self.project,
            },
        }
        write_private(self.home / STACK_FILE, json.dumps(recorded, indent=1) + "\n")

    def _compose_env(self, image: str) -> dict[str, str]:
        """What compose.yaml reads: addresses, names and the credentials file's path; the
        secrets themselves stay in that file."""
        settings = self.settings
        settings.credentials  # noqa: B018 - creates the home's credentials.json if missing
        env = {
            **service_base_env(),
            "LINEAGE_HOST": settings.host,
            "LINEAGE_GIT_PORT": str(settings.git_port),
            "LINEAGE_S3_PORT": str(settings.s3_port),
            "LINEAGE_MLFLOW_PORT": str(settings.mlflow_port),
            "LINEAGE_COMPOSE_PROJECT": self.project,
            "LINEAGE_STACK_IMAGE": image,
            "LINEAGE_CREDENTIALS_FILE": str(self.home / "credentials.json"),
            "LINEAGE_DVC_BUCKET": settings.dvc_bucket,
            "LINEAGE_MLFLOW_BUCKET": settings.mlflow_bucket,
        }
        s3_image = os.environ.get("LINEAGE_S3_IMAGE")
        if s3_image:
            env["LINEAGE_S3_IMAGE"] = s3_image
            env["LINEAGE_MINIO_SECRETS"] = str(self._minio_secrets())
        return env

    def _minio_secrets(self) -> Path:
        """MinIO's root user and password (the stack's S3 key pair) as Docker secret files."""
        directory = private_dir(self.home / "run" / "minio")
        credentials = self.settings.credentials
        write_private(directory / "minio-root-user", credentials.s3_access_key)
        write_private(directory / "minio-root-password", credentials.s3_secret_key)
        return directory

    def _files(self) -> list[str]:
        files = ["-f", str(COMPOSE_FILE)]
        if os.environ.get("LINEAGE_S3_IMAGE"):
            files += ["-f", str(MINIO_FILE)]
        return files

    def _compose(
        self, command: list[str], args: list[str], env: dict[str, str]
    ) -> subprocess.CompletedProcess[str]:
        argv = [*command, "--project-name", self.project, *self._files(), *args]
        try:
            done = subprocess.run(
                argv,
                env=env,
                capture_output=True,
                text=True,
                timeout=COMPOSE_TIMEOUT_S,
                check=False,
                cwd=LOCAL_DIR,
            )
        except subprocess.TimeoutExpired:
            raise StackError(
                f"`{shlex.join(argv[:2])} {' '.join(args)}` did not finish within "
                f"{COMPOSE_TIMEOUT_S:.0f}s",
                "check the Docker engine (`docker info`) and the containers (`docker ps -a`)",
            ) from None
        if done.returncode != 0:
            raise StackError(
                f"`{' '.join(command)} {' '.join(args)}` failed (exit {done.returncode})",
                f"read the compose output below and the services' logs ({self.log_hint('s3')})",
                details=redact_text((done.stdout + done.stderr)[-3000:]),
            )
        return done

    def _wait_healthy(self, started_at: float, report: Reporter) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout
        pending = list(SERVICES)
        while pending:
            for name in list(pending):
                state = self._state(name)
                if state in ("exited", "dead", "restarting"):
                    raise StackError(
                        f"the {name} container stopped during start-up ({state})",
                        f"read the cause in {self.log_hint(name)} (last lines below), fix it, "
                        "then run `lineage stack up --runtime docker` again",
                        details=self._logs(name),
                    )
                if state == "running" and health_of(name, self._url(name)):
                    report(f"{name}: healthy after {time.monotonic() - started_at:.1f}s")
                    pending.remove(name)
            if not pending:
                return
            if time.monotonic() > deadline:
                name = pending[0]
                raise StackError(
                    f"the {name} container did not become healthy within "
                    f"{self.settings.startup_timeout:.0f}s",
                    f"read the cause in {self.log_hint(name)} (last lines below), or raise "
                    "LINEAGE_STARTUP_TIMEOUT on a slow machine",
                    details=self._logs(name),
                )
            time.sleep(POLL_INTERVAL_S)

    def _url(self, name: str) -> str:
        settings = self.settings
        return {"git": settings.git_url, "s3": settings.s3_endpoint, "mlflow": settings.mlflow_uri}[
            name
        ]

    def _state(self, name: str) -> str | None:
        """The container's state (running, exited, ...), None when there is no container."""
        done = subprocess.run(
            ["docker", "inspect", "--format", "{{.State.Status}}", self.container(name)],
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip() if done.returncode == 0 else None

    def _logs(self, name: str, lines: int = 30) -> str:
        done = subprocess.run(
            ["docker", "logs", "--tail", str(lines), self.container(name)],
            capture_output=True,
            text=True,
            check=False,
        )
        return redact_text(done.stdout + done.stderr)

    def running_services(self) -> list[str]:
        return [name for name in SERVICES if self._state(name) == "running"]

    # -- status --------------------------------------------------------------------------------
    def status(self) -> StackStatus:
        services = {}
        for name in SERVICES:
            url = self._url(name)
            healthy = self._state(name) == "running" and health_of(name, url)
            services[name] = ServiceStatus(
                name, url, None, healthy, True, self.log_hint(name), self.container(name)
            )
        return StackStatus(self.home, services, self.settings.describe())

    # -- down ----------------------------------------------------------------------------------
    def down(self, report: Reporter = quiet) -> list[str]:
        """Remove the containers and their network; the named volumes (the data) stay."""
        running = self.running_services()
        present = [name for name in SERVICES if self._state(name) is not None]
        if not present:
            return []
        self._compose(compose_command(), ["down"], self._compose_env(stack_image(self.settings)))
        for name in running:
            report(f"{name}: stopped (container {self.container(name)}); its volume stays")
        return running

    # -- repos ---------------------------------------------------------------------------------
    def create_repo(self, name: str) -> tuple[str, bool]:
        """Create (or find) bare repo `name` on the running git server; return its clone URL."""
        return create_repo(self.settings, name, self.log_hint("git"))
