"""`lineage stack up | status | down | env | repo` with the stack faked (nothing is started),
and `lineage sagemaker ...` with the SageMaker runtime faked under the real operations: the
options become the configuration the runner gets and the jobs it is handed, a missing setting
is refused before any AWS call."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from lineage.config import Settings
from lineage.sagemaker.endpoints import Answer, DeployResult
from lineage.sagemaker.inspection import JobStatus
from lineage.sagemaker.jobs import SageMakerConfig
from local.stack import StackStatus
from local.stack.stack import ServiceStatus
from tests.helpers import CliRun, FakeRunner

Cli = Callable[..., CliRun]
ECR = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"


class FakeStack:
    def __init__(self, home: Path, healthy: bool) -> None:
        self.home, self.healthy = home, healthy
        self.repos: list[str] = []

    def status(self) -> StackStatus:
        git = ServiceStatus("git", "http://127.0.0.1:8300", 101, True, True, None)
        mlflow = ServiceStatus("mlflow", "http://127.0.0.1:5000", 102, self.healthy, True, None)
        return StackStatus(self.home, {"git": git, "mlflow": mlflow}, {})

    def up(self, report: Callable[[str], None]) -> StackStatus:
        report("starting mlflow")
        return self.status()

    def down(self, report: Callable[[str], None]) -> list[str]:
        return ["mlflow", "git"] if self.healthy else []

    def create_repo(self, name: str) -> tuple[str, bool]:
        self.repos.append(name)
        return f"http://127.0.0.1:8300/git/{name.removesuffix('.git')}.git", len(self.repos) == 1


@pytest.fixture
def stacks(monkeypatch: pytest.MonkeyPatch, home: Path) -> list[tuple[str | None, FakeStack]]:
    """Each stack the commands asked for, with the runtime they asked for."""
    made: list[tuple[str | None, FakeStack]] = []

    def stack_for(settings: Settings, runtime: str | None = None) -> FakeStack:
        assert settings.home == home
        made.append((runtime, FakeStack(home, healthy=len(made) != 1)))  # the 2nd is not
        return made[-1][1]

    monkeypatch.setattr("lineage.cli.stack.stack_for", stack_for)
    return made


def test_stack_status_exits_3_when_a_service_is_not_healthy(
    cli: Cli, stacks: list[tuple[str | None, FakeStack]]
) -> None:
    up = cli("stack", "up", "--runtime", "docker", "--json")
    assert up.code == 0 and up.json()["healthy"] is True
    assert "starting mlflow" in up.stderr  # progress on stderr, JSON alone on stdout
    unhealthy = cli("stack", "status", "--json")
    assert unhealthy.code == 3 and unhealthy.json()["services"]["mlflow"]["healthy"] is False
    healthy = cli("stack", "status")
    assert healthy.code == 0 and "http://127.0.0.1:5000" in healthy.stdout
    assert [runtime for runtime, _ in stacks] == ["docker", None, None]


def test_stack_down_and_repo(cli: Cli, stacks: list[tuple[str | None, FakeStack]]) -> None:
    assert cli("stack", "down").stdout == "stopped: mlflow, git\n"
    assert cli("stack", "down").stdout == "nothing was running\n"
    created = cli("stack", "repo", "cxr.git", "--json")
    assert created.json() == {
        "name": "cxr",
        "url": "http://127.0.0.1:8300/git/cxr.git",
        "created": True,
    }


def test_stack_env_prints_what_plain_clients_need_as_shell_lines(cli: Cli) -> None:
    shown = cli("stack", "env", "--json").json()
    exported = shown["export"]
    assert exported["MLFLOW_TRACKING_URI"].startswith("http://127.0.0.1:")
    assert exported["AWS_ACCESS_KEY_ID"] and exported["AWS_SECRET_ACCESS_KEY"]  # the stack's
    assert "AWS_SESSION_TOKEN" in shown["unset"]  # a user's token would break its signatures
    lines = cli("stack", "env").stdout.splitlines()
    parsed = dict(shlex.split(line)[1].split("=", 1) for line in lines if line.startswith("export"))
    assert parsed == exported
    assert lines[-1] == f"unset {' '.join(shown['unset'])}"


class FakeSageMaker(FakeRunner):
    """lineage.sagemaker.runner.SageMakerRunner: a FakeRunner that also records the
    configuration it was made with and the deploys it was asked for."""

    made: ClassVar[list[FakeSageMaker]] = []

    def __init__(self, config: SageMakerConfig, base: Settings, report: Any = None) -> None:
        super().__init__(repo_url=config.dvc_repo_url)
        self.config, self.settings = config, config.settings(base)
        self.digests = {f"{ECR}/t:1": "sha256:" + "0" * 64}
        FakeSageMaker.made.append(self)


@pytest.fixture
def launcher(monkeypatch: pytest.MonkeyPatch) -> type[FakeSageMaker]:
    """The SageMaker runtime faked under the real operations (their own tests show what
    they do with a runner); the consent snapshot and the index are not this tier's."""
    FakeSageMaker.made = []
    monkeypatch.setattr("lineage.cli.sagemaker.sagemaker_runner", FakeSageMaker)

    def snapshot(_: Settings, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "snapshot.json").write_text("{}")
        return directory

    monkeypatch.setattr("lineage.ops.process.take_consent_snapshot", snapshot)
    monkeypatch.setattr("lineage.ops.train.index_version", lambda *_: True)
    return FakeSageMaker


def test_sagemaker_pipeline_refuses_what_it_cannot_run_before_any_aws_call(
    cli: Cli, launcher: type[FakeSageMaker]
) -> None:
    no_repo = cli("sagemaker", "pipeline", "--version", "v1", "--fraction", "1")
    assert no_repo.code == 1
    assert (
        no_repo.stderr == "error: --dvc-repo-url is required; pass the dataset repository's URL\n"
    )
    no_images = cli(
        *("sagemaker", "pipeline", "--version", "v1", "--fraction", "1"),
        *("--dvc-repo-url", "https://github.com/acme/datasets.git"),
    )
    assert no_images.code == 1
    assert no_images.stderr == (
        "error: no image registry; push the images (`make push REGISTRY=...`) and pass "
        "--image-registry with it\n"
    )
    assert launcher.made == []


def test_sagemaker_pipeline_hands_the_runner_its_configuration_and_the_jobs(
    cli: Cli, launcher: type[FakeSageMaker], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINEAGE_IMAGE_REGISTRY", ECR)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("LINEAGE_SAGEMAKER_POLL_S", "2.5")
    ran = cli(
        *("sagemaker", "pipeline", "--version", "v1", "--fraction", "0.5", "--role", "arn:role"),
        *("--bucket", "b", "--dvc-repo-url", "https://github.com/acme/cxr-data.git"),
        *("--mlflow-uri", "arn:aws:sagemaker:eu-west-1:1:mlflow-app/a", "--pattern", "record"),
        *("--instance-count", "2", "--instance-type", "ml.g5.xlarge", "--wait", "--json"),
        *("--signing-kms-key-id", "arn:aws:kms:eu-west-1:1:key/k"),
    )
    assert ran.code == 0, ran.stderr
    ((made),) = launcher.made
    assert made.config.signing_kms_key_id == "arn:aws:kms:eu-west-1:1:key/k"
    config = made.config
    assert (config.role, config.bucket, config.image_registry) == ("arn:role", "b", ECR)
    assert (config.region, config.poll_s, config.image_tag) == ("eu-west-1", 2.5, "latest")
    assert config.training_instance_type == config.processing_instance_type == "ml.g5.xlarge"
    ((processing, _),) = made.processed
    ((training, _, commit),) = made.trained
    tag = processing.environment["PIPELINE_RUN_ID"]
    assert processing.environment["DVC_REPO_URL"] == "https://github.com/acme/cxr-data.git"
    assert processing.arguments[processing.arguments.index("--data-fraction") + 1] == "0.5"
    assert processing.inputs[0].source == f"s3://bucket/consent/{tag}/"  # the record pattern
    assert (training.instance_count, training.hyperparameters["dvc_tag"]) == (2, tag)
    assert training.environment["MLFLOW_TRACKING_URI"] == config.mlflow_uri
    shown = ran.json()  # the JSON `sagemaker pipeline` always printed
    assert list(shown) == ["pipeline_run_id", "images", "processing", "training"]
    assert shown["pipeline_run_id"] == shown["processing"]["tag"] == tag
    assert shown["images"] == made.digests
    assert shown["processing"]["job_name"] == processing.name
    assert shown["training"]["status"] == "Completed"  # --wait
    assert shown["training"]["model_data"] == f"s3://bucket/training/{training.name}/model.tar.gz"
    assert (shown["training"]["indexed"], shown["training"]["data_git_commit_id"]) == (True, commit)


def test_sagemaker_pipeline_without_wait_returns_once_training_is_created(
    cli: Cli, launcher: type[FakeSageMaker], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINEAGE_IMAGE_REGISTRY", ECR)
    ran = cli(
        *("sagemaker", "pipeline", "--version", "v1", "--fraction", "0.5", "--role", "arn:role"),
        *("--bucket", "b", "--dvc-repo-url", "https://github.com/acme/cxr-data.git", "--json"),
        *("--mlflow-uri", "arn:aws:sagemaker:eu-west-1:1:mlflow-app/a"),
    )
    assert ran.code == 0, ran.stderr
    ((made),) = launcher.made
    ((training, _, _),) = made.trained
    assert made.finished == []
    assert ran.json()["training"] == {"job_name": training.name, "status": "InProgress"}
    assert f"lineage sagemaker status {training.name}" in ran.stderr


def test_sagemaker_deploy_status_logs_and_invoke(
    cli: Cli, launcher: type[FakeSageMaker], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[str, str, str]] = []

    def deploy(runner: FakeSageMaker, ref: str, endpoint: str, instance: str) -> DeployResult:
        asked.append((ref, endpoint, instance))
        return DeployResult(endpoint, None, "cxr/2", "m", "s3://b/m.tar.gz", "i", "", {}, False)

    monkeypatch.setattr("lineage.cli.sagemaker.deploy_sagemaker", deploy)
    ran = cli(
        *("sagemaker", "deploy", "--model", "cxr@champion", "--endpoint-name", "prod"),
        *("--image-registry", ECR, "--region", "eu-west-1"),
    )
    assert ran.code == 0, ran.stderr
    assert ran.stdout == "prod InService: cxr/2 (m) from s3://b/m.tar.gz\n"
    assert asked == [("cxr@champion", "prod", "ml.m5.large")]
    assert launcher.made[0].config.region == "eu-west-1"

    def status(region: str | None, name: str) -> JobStatus:
        assert (region, name) == (None, "t-1")
        return JobStatus(
            name, "training", "Failed", "Training", "OOM", "/aws/sagemaker/TrainingJobs", ["s1"]
        )

    monkeypatch.setattr("lineage.cli.sagemaker.status", status)
    monkeypatch.setattr("lineage.cli.sagemaker.job_logs", lambda region, name: ["a", "b"])
    shown = cli("sagemaker", "status", "t-1", "--json").json()
    assert (shown["status"], shown["failure_reason"], shown["log_streams"]) == (
        "Failed",
        "OOM",
        ["s1"],
    )
    printed = cli("sagemaker", "status", "t-1").stdout
    assert "t-1 (training): Failed / Training" in printed and "log: /aws/sagemaker/" in printed
    assert cli("sagemaker", "logs", "t-1").stdout == "a\nb\n"

    def invoke(region: str | None, endpoint: str, files: list[Path]) -> list[Answer]:
        lineage = {"model_name": "cxr", "model_version": "2", "data_git_commit_id": "c" * 40}
        return [Answer(str(f), {"label": "normal", "lineage": lineage}, None) for f in files]

    monkeypatch.setattr("lineage.cli.sagemaker.invoke", invoke)
    answered = cli("sagemaker", "invoke", "x.png", "--endpoint-name", "prod")
    assert answered.stdout == "x.png: normal  (cxr/2, data cccccccccccc)\n"
