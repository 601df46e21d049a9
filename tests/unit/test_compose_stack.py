"""The docker stack's pieces that need no engine: where later commands find it
(LINEAGE_HOME/stack.json), the runtime choice, what each container runs, and the compose
files as compose itself reads them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lineage.config import STACK_FILE, Settings
from lineage.credentials import StackCredentials, write_private
from lineage.errors import ConfigError, StackError
from local.stack import ComposeStack, LocalStack, stack_for
from local.stack.compose import COMPOSE_FILE, MINIO_FILE
from local.stack.container import container_settings, install_credentials, service_spec


def _record(home: Path, **env: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    recorded = {"runtime": "docker", "project": "p", "env": env}
    (home / STACK_FILE).write_text(json.dumps(recorded))


def test_later_commands_find_the_docker_stack_from_its_record(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _record(home, LINEAGE_HOST="172.17.0.1", LINEAGE_S3_PORT="41001", LINEAGE_COMPOSE_PROJECT="p")
    settings = Settings.from_env({"LINEAGE_HOME": str(home)})
    assert settings.stack_runtime == "docker"
    assert settings.s3_endpoint == "http://172.17.0.1:41001"
    assert settings.compose_project == "p"
    assert isinstance(stack_for(settings), ComposeStack)
    # the environment still wins over the record
    moved = Settings.from_env({"LINEAGE_HOME": str(home), "LINEAGE_S3_PORT": "41002"})
    assert moved.s3_endpoint == "http://172.17.0.1:41002"
    assert isinstance(stack_for(settings, "process"), LocalStack)


def test_the_docker_stack_always_asks_mlflow_clients_for_credentials(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _record(home, LINEAGE_HOST="127.0.0.2")  # loopback, yet containers reach MLflow
    settings = Settings.from_env({"LINEAGE_HOME": str(home)})
    assert not settings.exposed and settings.mlflow_auth
    assert "MLFLOW_TRACKING_PASSWORD" in settings.client_env()
    plain = Settings.from_env({"LINEAGE_HOME": str(tmp_path / "other")})
    assert plain.stack_runtime == "process" and not plain.mlflow_auth


def test_a_corrupt_record_or_unknown_runtime_is_a_clear_error(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / STACK_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match=r"stack\.json is unreadable") as caught:
        Settings.from_env({"LINEAGE_HOME": str(home)})
    assert "stack up --runtime docker" in str(caught.value)
    with pytest.raises(ConfigError, match="LINEAGE_STACK_RUNTIME='vm'"):
        Settings.from_env({"LINEAGE_HOME": str(tmp_path / "x"), "LINEAGE_STACK_RUNTIME": "vm"})
    with pytest.raises(ConfigError, match="unknown stack runtime"):
        stack_for(Settings.from_env({"LINEAGE_HOME": str(tmp_path / "x")}), "vm")


def test_the_docker_stack_refuses_a_loopback_address_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINEAGE_HOST", "127.0.0.1")
    settings = Settings.from_env(
        {"LINEAGE_HOME": str(tmp_path / "home"), "LINEAGE_HOST": "127.0.0.1"}
    )
    with pytest.raises(StackError, match="container's own loopback") as caught:
        ComposeStack(settings).up()
    assert "unset LINEAGE_HOST" in str(caught.value)
    assert not (tmp_path / "home" / STACK_FILE).exists()


# -- what runs in each container ----------------------------------------------------------------
@pytest.fixture
def in_container(tmp_path: Path) -> Settings:
    settings = container_settings({})
    home = tmp_path / "var-lib-lineage"
    settings = Settings(home=home, host=settings.host)
    mounted = tmp_path / "mounted.json"
    credentials = StackCredentials.generate()
    write_private(mounted, json.dumps(credentials.__dict__))
    install_credentials(settings, mounted)
    return settings


def test_credentials_are_installed_private_and_a_missing_mount_is_refused(
    in_container: Settings, tmp_path: Path
) -> None:
    installed = in_container.home / "credentials.json"
    assert installed.stat().st_mode & 0o777 == 0o600
    assert in_container.credentials.s3_access_key.startswith("LINEAGE")
    with pytest.raises(StackError, match="not mounted") as caught:
        install_credentials(in_container, tmp_path / "absent.json")
    assert "lineage stack up --runtime docker" in str(caught.value)


def test_each_container_runs_the_process_stacks_spec_bound_for_the_compose_network(
    in_container: Settings,
) -> None:
    env = {
        "LINEAGE_COMPOSE_S3_URL": "http://172.17.0.1:41001",
        "LINEAGE_ADVERTISED_HOST": "10.1.2.3",
    }
    mlflow = service_spec("mlflow", in_container, env)
    assert mlflow.env["MLFLOW_S3_ENDPOINT_URL"] == "http://172.17.0.1:41001"
    allowed = mlflow.argv[mlflow.argv.index("--allowed-hosts") + 1].split(",")
    assert {"10.1.2.3", "10.1.2.3:*", "mlflow"} <= set(allowed)
    assert "basic-auth" in mlflow.argv  # always: other containers reach it
    s3 = service_spec("s3", in_container, env)
    assert "-s3.ip.bind=0.0.0.0" in s3.argv and "-ip.bind=127.0.0.1" in s3.argv
    assert "--private-read" in service_spec("git", in_container, env).argv
    secrets = [in_container.credentials.s3_secret_key, in_container.credentials.mlflow_password]
    for spec in (mlflow, s3):
        assert not [s for s in secrets if s in " ".join(spec.argv)]
    with pytest.raises(StackError, match="LINEAGE_COMPOSE_S3_URL is not set"):
        service_spec("mlflow", in_container, {})


# -- the compose files, as compose reads them ---------------------------------------------------
def _compose_config(files: list[Path], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = ["docker-compose"] if shutil.which("docker-compose") else ["docker", "compose"]
    argv = [*command, "--project-name", "t"]
    for path in files:
        argv += ["-f", str(path)]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LINEAGE_")}
    return subprocess.run(
        [*argv, "config"], env={**clean, **env}, capture_output=True, text=True, check=False
    )


needs_compose = pytest.mark.skipif(
    not shutil.which("docker-compose"), reason="docker-compose is not installed"
)


def _services(rendered: str) -> dict[str, Any]:
    import yaml

    services: dict[str, Any] = yaml.safe_load(rendered)["services"]
    return services


@needs_compose
def test_the_compose_file_publishes_our_image_on_the_given_address(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials.json"
    credentials.write_text("{}")
    env = {
        "LINEAGE_HOST": "172.17.0.1",
        "LINEAGE_S3_PORT": "41001",
        "LINEAGE_CREDENTIALS_FILE": str(credentials),
        "LINEAGE_STACK_IMAGE": "model-lineage/stack:t",
        "LINEAGE_COMPOSE_PROJECT": "proj",
    }
    done = _compose_config([COMPOSE_FILE], env)
    assert done.returncode == 0, done.stderr
    services = _services(done.stdout)
    assert set(services) == {"git", "s3", "mlflow"}
    for name, service in services.items():
        assert service["image"] == "model-lineage/stack:t"
        assert service["command"] == [name]
        assert service["container_name"] == f"proj-{name}"
        assert f"{credentials}:/run/secrets/lineage-credentials.json:ro" in service["volumes"]
        assert all(str(port).startswith("172.17.0.1:") for port in service["ports"])
    assert "172.17.0.1:41001:28181/tcp" in services["s3"]["ports"]
    assert services["mlflow"]["environment"]["LINEAGE_COMPOSE_S3_URL"] == "http://172.17.0.1:41001"
    assert services["mlflow"]["depends_on"]["s3"]["condition"] == "service_healthy"

    unset = _compose_config([COMPOSE_FILE], {k: v for k, v in env.items() if k != "LINEAGE_HOST"})
    assert unset.returncode != 0 and "LINEAGE_HOST" in unset.stderr


@needs_compose
def test_minio_is_one_variable_away(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials.json"
    credentials.write_text("{}")
    env = {
        "LINEAGE_HOST": "172.17.0.1",
        "LINEAGE_CREDENTIALS_FILE": str(credentials),
        "LINEAGE_S3_IMAGE": "minio/minio:RELEASE.2025-04-22T22-12-26Z",
        "LINEAGE_MINIO_SECRETS": str(tmp_path / "minio"),
    }
    done = _compose_config([COMPOSE_FILE, MINIO_FILE], env)
    assert done.returncode == 0, done.stderr
    s3 = _services(done.stdout)["s3"]
    assert s3["image"] == "minio/minio:RELEASE.2025-04-22T22-12-26Z"
    assert s3["command"][:2] == ["server", "/var/lib/lineage/s3"]
    assert s3["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    assert s3["environment"]["MINIO_ROOT_PASSWORD_FILE"] == "minio-root-password"
    assert not [k for k in s3["environment"] if k in ("MINIO_ROOT_PASSWORD", "MINIO_ROOT_USER")]


def test_a_home_that_is_a_file_is_left_for_stack_up_to_explain(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("not a directory")
    settings = Settings.from_env({"LINEAGE_HOME": str(home)})
    assert settings.stack_runtime == "process"
    with pytest.raises(StackError, match="not a directory"):
        LocalStack(settings).up()


def test_the_bridge_address_is_found_when_dockerd_lists_no_gateway() -> None:
    """Debian's docker.io lists the bridge's subnet but no gateway in its IPAM config: the
    bridge interface's address is used, else the subnet's first host (where dockerd puts
    the gateway); a listed gateway wins over both."""
    from local.stack.compose import gateway_from_ipam

    def no_interface(_: str) -> str | None:
        return None

    listed = '[{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]'
    assert gateway_from_ipam(listed, "docker0", lambda _: "10.9.9.9") == "172.17.0.1"
    subnet_only = '[{"Subnet": "172.18.0.0/16"}]'
    assert gateway_from_ipam(subnet_only, "docker0", lambda name: "172.18.0.1") == "172.18.0.1"
    assert gateway_from_ipam(subnet_only, "docker0", no_interface) == "172.18.0.1"
    v6_then_v4 = '[{"Subnet": "fd00::/64", "Gateway": "fd00::1"}, {"Subnet": "10.5.0.0/24"}]'
    assert gateway_from_ipam(v6_then_v4, "docker0", no_interface) == "10.5.0.1"
    assert gateway_from_ipam("null", "docker0", no_interface) is None
    assert gateway_from_ipam("not json", "docker0", no_interface) is None
