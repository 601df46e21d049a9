"""The three images, as SageMaker starts them: the same jobs and lineage as the process
runtime, clean failures, a server that answers and stops on SIGTERM, and images that carry
their identity and nothing that should not be in them."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.tracking import MlflowClient

from lineage.ops.train import TrainOptions, build_spec
from local.runner import run_training
from tests.conftest import REPO_ROOT, RunningStack, free_port_block, run_cli
from tests.helpers import digit_images, ok
from tests.integration.conftest import run_pipeline

pytestmark = [pytest.mark.container, pytest.mark.integration]

IMAGE_FIELDS = {"image_uri", "image_digest", "image_revision"}


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def inspect(image: str) -> dict[str, Any]:
    result = docker("image", "inspect", image)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)[0]
    return data


@pytest.fixture(scope="module")
def docker_env(running_stack: RunningStack, images: dict[str, str]) -> dict[str, str]:
    return {**running_stack.env, "LINEAGE_IMAGE_TAG": "test"}


def test_images_carry_labels_users_and_entrypoints(images: dict[str, str]) -> None:
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    expected = {
        "processing": (["python", "-m", "processing"], ""),
        "training": (["python", "-m", "training"], ""),
        "inference": (["python", "-m", "inference"], "lineage"),
    }
    for name, image in images.items():
        config = inspect(image)["Config"]
        labels = config["Labels"]
        assert labels["org.opencontainers.image.revision"] == head
        assert labels["org.opencontainers.image.version"]
        assert config["Entrypoint"] == expected[name][0]
        assert config["User"] == expected[name][1]
        assert not any(key.startswith("AWS_") for key in (config.get("Env") or []))
    assert (
        inspect(images["inference"])["Config"]["Labels"][
            "com.amazonaws.sagemaker.capabilities.accept-bind-to-port"
        ]
        == "true"
    )


def test_images_hold_no_state_tests_credentials_or_opt_ml(images: dict[str, str]) -> None:
    probe = (
        "set -e; test ! -e /opt/ml; "
        "find / -xdev \\( -name .lineage -o -name .aws -o -name .git-credentials -o -name "
        ".netrc -o -name .dvc -o -name wheelhouse \\) -print; "
        'python -c \'import importlib.util as u; print("tests" if u.find_spec("tests") '
        'else "")\''
    )
    result = docker("run", "--rm", "--entrypoint", "sh", images["training"], "-c", probe)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_pipeline_in_the_images_records_the_same_lineage(
    running_stack: RunningStack, docker_env: dict[str, str]
) -> None:
    runs = {}
    for runtime in ("process", "docker"):
        repo = f"{runtime}-{uuid.uuid4().hex[:6]}"
        runs[runtime] = run_pipeline(
            running_stack, repo, f"digits-{repo}", epochs=1, runtime=runtime, env=docker_env
        )
    process, container = runs["process"], runs["docker"]
    for key in ("dataset_md5", "manifest_sha256", "counts"):
        assert process["processing"][key] == container["processing"][key], key
    client = MlflowClient(running_stack.settings.mlflow_uri)
    params = {rt: client.get_run(r["training"]["run_id"]).data.params for rt, r in runs.items()}
    differ = {
        k
        for k in params["process"].keys() | params["docker"].keys()
        if params["process"].get(k) != params["docker"].get(k)
    }
    # what must differ: the repository (and so tag, commit), the image the job ran in, and
    # the digests of each run's own model files (MLmodel records its creation time and uuid)
    assert differ - IMAGE_FIELDS <= {
        "dvc_repo_url",
        "dvc_tag",
        "data_git_commit_id",
        "weights_sha256",
        "model_sha256",
        # each run's own signed provenance, and the log head that recorded it
        "attestation_sha256",
        "tlog_head",
    }
    assert params["docker"].keys() >= IMAGE_FIELDS and not IMAGE_FIELDS & params["process"].keys()
    assert params["docker"]["image_uri"] == "model-lineage/training:test"
    assert params["docker"]["image_digest"].startswith("sha256:")
    # the same deterministic training on the same CPU, in or out of the image
    assert container["training"]["metrics"]["test_accuracy"] == pytest.approx(
        process["training"]["metrics"]["test_accuracy"]
    )


def test_two_training_containers_make_one_model_as_two_instances_would(
    running_stack: RunningStack, docker_env: dict[str, str]
) -> None:
    """`--runtime docker --instance-count 2`: two containers of the training image, each
    with its own /opt/ml, one run, one version, the model from the leader only."""
    repo = f"docker2-{uuid.uuid4().hex[:6]}"
    result = run_pipeline(
        running_stack, repo, f"digits-{repo}", epochs=1, runtime="docker", env=docker_env, hosts=2
    )
    training = result["training"]
    assert (training["world_size"], training["hosts"]) == (2, ["algo-1", "algo-2"])
    client = MlflowClient(running_stack.settings.mlflow_uri)
    assert [v.version for v in client.search_model_versions(f"name = 'digits-{repo}'")] == ["1"]
    params = client.get_run(training["run_id"]).data.params
    assert params["world_size"] == "2" and params["image_uri"] == "model-lineage/training:test"
    job_dir = Path(training["model_artifact"]).parent.parent
    assert not any((job_dir / "algo-2" / "opt" / "ml" / "model").iterdir())


def test_training_image_fails_cleanly_on_a_bad_hyperparameter(
    running_stack: RunningStack, docker_env: dict[str, str], tmp_path: Path
) -> None:
    settings = running_stack.settings
    spec = build_spec(
        settings.__class__.from_env(docker_env),
        TrainOptions(tag="v0-none", model_name=f"bad-{uuid.uuid4().hex[:6]}"),
        settings.repo_url("datasets"),
    )
    spec.hyperparameters["epochs"] = "abc"
    outcome = run_training(
        spec,
        jobs_root=tmp_path / "jobs",
        runtime_env=settings.client_env(),
        runtime="docker",
        stream=False,
    )
    assert outcome.status == "Failed" and outcome.exit_code != 0
    assert "epochs='abc' is not an integer" in outcome.message
    assert "epochs='abc'" in (outcome.base_dir / "output" / "failure").read_text()


@pytest.fixture(scope="module")
def trained(running_stack: RunningStack, docker_env: dict[str, str]) -> dict[str, Any]:
    repo = f"serve-{uuid.uuid4().hex[:6]}"
    result = run_pipeline(running_stack, repo, f"digits-{repo}", epochs=1, env=docker_env)
    return dict(result["training"])


def test_inference_image_serves_like_the_process_and_stops_on_sigterm(
    docker_env: dict[str, str], trained: dict[str, Any], tmp_path: Path
) -> None:
    ref = f"{trained['model_name']}/{trained['model_version']}"
    ports = {runtime: free_port_block(1) for runtime in ("process", "docker")}
    answers: dict[str, Any] = {}
    files = [str(p) for p in digit_images(tmp_path, 4)]
    try:
        for runtime, port in ports.items():
            deployed = ok(
                run_cli(
                    "deploy",
                    "--model",
                    ref,
                    "--port",
                    str(port),
                    "--runtime",
                    runtime,
                    "--json",
                    env=docker_env,
                    timeout=300,
                )
            )
            assert httpx.get(f"{deployed['endpoint']}/ping", timeout=5).status_code == 200
            answers[runtime] = ok(
                run_cli(
                    "invoke", "--endpoint", deployed["endpoint"], *files, "--json", env=docker_env
                )
            )
        for served_by_process, served_by_image in zip(
            answers["process"], answers["docker"], strict=True
        ):
            assert served_by_image["label"] == served_by_process["label"]
            assert served_by_image["probabilities"] == pytest.approx(
                served_by_process["probabilities"], abs=1e-5
            )
            assert served_by_image["lineage"] == served_by_process["lineage"]
        traced = run_cli(
            "trace", "--endpoint", f"http://127.0.0.1:{ports['docker']}", "--json", env=docker_env
        )
        assert traced.returncode == 0 and json.loads(traced.stdout)["ok"]

        name = f"lineage-endpoint-{ports['docker']}"
        started = time.monotonic()
        assert docker("kill", "--signal", "TERM", name).returncode == 0
        waited = docker("wait", name, timeout=60)
        assert waited.returncode == 0 and time.monotonic() - started < 30
    finally:
        for port in ports.values():
            run_cli("deploy", "--stop", "--port", str(port), env=docker_env)


def test_images_can_reach_aws_git_and_mlflow_apps(images: dict[str, str]) -> None:
    """codecommit:: URLs (git-remote-codecommit) and MLflow App ARNs (sagemaker-mlflow) work
    inside the jobs, as they must on SageMaker."""
    probe = (
        "command -v git-remote-codecommit && "
        "python -c 'import sagemaker_mlflow, importlib.metadata as m; "
        'print(m.version("sagemaker-mlflow"))\''
    )
    for name in ("processing", "training"):
        result = docker("run", "--rm", "--entrypoint", "sh", images[name], "-c", probe)
        assert result.returncode == 0, (name, result.stderr)
        assert "git-remote-codecommit" in result.stdout


INFERENCE_IMAGE_LIMIT_MB = 600


def test_the_inference_image_is_small_and_has_no_torch(images: dict[str, str]) -> None:
    sizes = {name: inspect(image)["Size"] / 1e6 for name, image in images.items()}
    print("image sizes (MB):", {n: round(s) for n, s in sizes.items()})
    assert sizes["inference"] < INFERENCE_IMAGE_LIMIT_MB
    for name in ("inference", "processing"):  # neither needs torch (nor its CUDA libraries)
        probe = docker(
            "run",
            "--rm",
            "--entrypoint",
            "python",
            images[name],
            "-c",
            "import importlib.util as u; print(u.find_spec('torch'), u.find_spec('nvidia'))",
        )
        assert probe.returncode == 0, probe.stderr
        assert probe.stdout.strip() == "None None", (name, probe.stdout)
    imported = docker(
        "run",
        "--rm",
        "--entrypoint",
        "python",
        images["inference"],
        "-c",
        "import onnxruntime, inference.serve",
    )
    assert imported.returncode == 0, imported.stderr


def test_the_inference_image_refuses_a_model_without_onnx(
    docker_env: dict[str, str], trained: dict[str, Any], images: dict[str, str], tmp_path: Path
) -> None:
    """A model registered before the ONNX export: the torch-free image says so and exits."""
    from lineage.config import Settings
    from lineage.ops.deploy import materialize

    info = materialize(
        Settings.from_env(docker_env),
        f"{trained['model_name']}/{trained['model_version']}",
        tmp_path / "endpoint",
    )
    model_dir = info.model_dir
    (model_dir / "model.onnx").unlink()
    for path in [model_dir, *model_dir.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    result = docker(
        "run",
        "--rm",
        "--volume",
        f"{model_dir}:/opt/ml/model:ro",
        images["inference"],
        "serve",
        timeout=120,
    )
    assert result.returncode != 0
    assert "has no model.onnx" in result.stdout + result.stderr
    assert "this image has no torch" in result.stdout + result.stderr


def test_the_sagemaker_sdk_hosts_the_inference_image_and_it_answers_with_lineage(
    docker_env: dict[str, str], trained: dict[str, Any], images: dict[str, str], tmp_path: Path
) -> None:
    """The official SDK v3 local mode (create_model / create_endpoint / invoke_endpoint with
    image/png) runs the torch-free image on the model the registry serves."""
    from lineage.config import Settings
    from lineage.ops.deploy import materialize

    built = subprocess.run(["make", "sdk-venv"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]
    ref = f"{trained['model_name']}/{trained['model_version']}"
    info = materialize(Settings.from_env(docker_env), ref, tmp_path / "endpoint")
    work = Path(tempfile.mkdtemp(prefix="lineage-sdk-", dir="/tmp"))
    png = digit_images(tmp_path, 1)[0]
    hosted = subprocess.run(
        [
            str(REPO_ROOT / ".venv-sdk" / "bin" / "python"),
            str(Path(__file__).parent / "sdk_host.py"),
            images["inference"],
            str(info.model_dir),
            str(png),
            str(work),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert hosted.returncode == 0, (hosted.stdout + hosted.stderr)[-3000:]
    answer = json.loads((work / "answer.json").read_text())
    assert answer["status"] == 200
    lineage = answer["body"]["lineage"]
    assert f"{lineage['model_name']}/{lineage['model_version']}" == ref
    assert lineage["data_git_commit_id"] == trained["data_git_commit_id"]
    assert f"run_id={trained['run_id']}" in answer["headers"]["x-amzn-sagemaker-custom-attributes"]
