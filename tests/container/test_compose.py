"""The docker stack (local/compose.yaml, `lineage stack up --runtime docker`) from nothing:
its services come up healthy and closed to anonymous clients, keep no secret where `docker
inspect` shows it, run a `--runtime docker` pipeline, serve the model it registered to the
SageMaker SDK's local mode (containers on `sagemaker-local`, another network), and keep the
dataset, run and model across down and up."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import pytest

from lineage.config import Settings
from lineage.ops.deploy import materialize
from local.stack.compose import bridge_gateway
from tests.conftest import run_cli, stack_env
from tests.helpers import digit_images, make_sdk_venv, ok, sdk_host_answer

pytestmark = [pytest.mark.container, pytest.mark.integration]


@dataclass
class ComposeRun:
    env: dict[str, str]
    project: str
    up_seconds: float

    @property
    def settings(self) -> Settings:
        return Settings.from_env({**os.environ, **self.env})


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False)


def _volumes(project: str) -> set[str]:
    listed = _docker("volume", "ls", "--format", "{{.Name}}").stdout.split()
    return {name for name in listed if name.startswith(f"{project}_")}


@pytest.fixture(scope="module")
def compose_stack(
    stack_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ComposeRun]:
    """A docker stack from nothing: a fresh home, a fresh project, no volumes."""
    project = f"lineage-test-{uuid.uuid4().hex[:8]}"
    env = {
        **stack_env(tmp_path_factory.mktemp("compose") / "home"),
        "LINEAGE_IMAGE_TAG": "test",
        "LINEAGE_COMPOSE_PROJECT": project,
    }
    env.pop("LINEAGE_SEAWEED_PORT_BASE")  # internal to the s3 container
    assert not _volumes(project)
    started = time.monotonic()
    up = ok(run_cli("stack", "up", "--runtime", "docker", "--json", env=env, timeout=600))
    run = ComposeRun(env=env, project=project, up_seconds=time.monotonic() - started)
    # this stack's git token and MLflow login, as `eval "$(lineage stack env)"` gives them:
    # they must win over another stack's that this test process may have exported
    env.update(run.settings.stack_auth_env())
    try:
        assert up["healthy"], up
        yield run
    finally:
        run_cli("stack", "down", env=env, timeout=300)
        for volume in _volumes(project):
            _docker("volume", "rm", volume)


def test_compose_up_from_nothing_is_healthy_published_for_containers_and_closed(
    compose_stack: ComposeRun,
) -> None:
    print(f"compose up from nothing: {compose_stack.up_seconds:.1f}s")
    settings = compose_stack.settings
    gateway = bridge_gateway()
    assert settings.stack_runtime == "docker" and settings.host == gateway
    recorded = Path(compose_stack.env["LINEAGE_HOME"]) / "stack.json"
    assert recorded.stat().st_mode & 0o777 == 0o600
    status = ok(run_cli("stack", "status", "--json", env=compose_stack.env))
    assert status["config"]["stack_runtime"] == "docker"
    for name, service in status["services"].items():
        assert service["healthy"] is True, name
        assert service["container"] == f"{compose_stack.project}-{name}"
        assert service["url"].startswith(f"http://{gateway}:")
    assert _volumes(compose_stack.project) == {
        f"{compose_stack.project}_{name}" for name in ("git", "s3", "mlflow")
    }

    # nothing answers an anonymous client
    assert httpx.put(f"{settings.s3_endpoint}/lineage-dvc/x", content=b"x").status_code == 403
    refs = f"{settings.git_url}/x.git/info/refs?service=git-upload-pack"
    assert httpx.get(refs).status_code == 401
    search = f"{settings.mlflow_uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(search).status_code == 401
    auth = ("admin", settings.credentials.mlflow_password)
    assert httpx.get(search, auth=auth).status_code == 200

    # no secret in what `docker inspect` shows (argv, environment, labels)
    credentials = settings.credentials
    secrets = [
        credentials.s3_secret_key,
        credentials.git_token,
        credentials.mlflow_password,
        credentials.volume_jwt_key,
        credentials.filer_jwt_key,
    ]
    for name in ("git", "s3", "mlflow"):
        shown = _docker("inspect", f"{compose_stack.project}-{name}").stdout
        assert shown and not [s for s in secrets if s in shown], name


# a docker pipeline, the SDK hosting its model, then down and up: 397 s on a quiet machine,
# past the suite's 900 s while the other worker trained and signed models of its own
@pytest.mark.timeout(1800)
def test_a_docker_pipeline_serves_through_the_sdk_and_survives_down_and_up(
    compose_stack: ComposeRun,
    images: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env, repo = compose_stack.env, f"compose-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    pipeline = run_cli(
        "pipeline", "--version", "c1", "--fraction", "0.15", "--epochs", "1",
        "--runtime", "docker", "--repo", repo, "--model-name", repo, "--json",
        env=env, timeout=1500,
    )  # fmt: skip
    result = ok(pipeline)
    print(f"pipeline --runtime docker on the compose stack: {time.monotonic() - started:.1f}s")
    assert "index was not updated" not in pipeline.stderr, pipeline.stderr[-2000:]
    training = result["training"]
    assert training["model_version"] == "1"
    assert result["processing"]["dvc_repo_url"] == compose_stack.settings.repo_url(repo)
    traced = ok(run_cli("trace", "--model", f"{repo}/1", "--json", env=env))
    assert traced["ok"] is True

    # the registered model, hosted by the SageMaker SDK's local mode (network sagemaker-local)
    make_sdk_venv()
    settings = compose_stack.settings
    for key, value in settings.stack_auth_env().items():  # this stack's, for this test only
        monkeypatch.setenv(key, value)
    previous = mlflow.get_tracking_uri()  # materialize points the process's MLflow here
    monkeypatch.setenv("MLFLOW_TRACKING_URI", previous)
    try:
        served = materialize(settings, f"{repo}/1", tmp_path / "endpoint")
    finally:
        mlflow.set_tracking_uri(previous)
    png = digit_images(tmp_path, 1)[0]
    answer = sdk_host_answer(images["inference"], served.model_dir, png)
    assert answer["status"] == 200
    lineage = answer["body"]["lineage"]
    assert (lineage["model_name"], lineage["model_version"]) == (repo, "1")
    assert lineage["data_git_commit_id"] == training["data_git_commit_id"]

    # down keeps the volumes; up finds the dataset, the run and the model again
    down = run_cli("stack", "down", env=env, timeout=300)
    assert down.returncode == 0, down.stderr[-2000:]
    assert _docker("inspect", f"{compose_stack.project}-mlflow").returncode != 0
    assert len(_volumes(compose_stack.project)) == 3
    started = time.monotonic()
    assert ok(run_cli("stack", "up", "--json", env=env, timeout=600))["healthy"]
    print(f"compose up with existing volumes: {time.monotonic() - started:.1f}s")
    retraced = ok(run_cli("trace", "--model", f"{repo}/1", "--json", env=env))
    assert retraced["ok"] is True
    assert (retraced["run"], retraced["data"]) == (traced["run"], traced["data"])
