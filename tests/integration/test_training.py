"""`lineage pipeline` / `lineage train` against the real stack: the run, the registry and the
data commit agree, and bad data or input never produces a registered model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from PIL import Image

from lineage import contract, manifest
from lineage.gitops import dvc_out_md5
from lineage.hashing import file_md5, file_sha256
from lineage.jobspec import Channel
from lineage.ops.train import TrainOptions, build_spec
from lineage.storage import s3_client
from lineage.transforms import preprocess
from local.runner import run_training
from local.runner.launch import job_env
from local.runner.training import prepare_base_dir
from processing.publish import DatasetRepo
from tests.conftest import RunningStack, run_cli
from tests.helpers import checkout_with_plain_dvc, ok, remote_refs
from tests.integration.conftest import run_pipeline

pytestmark = pytest.mark.integration


@dataclass
class Trained:
    repo: str
    url: str
    result: dict[str, Any]

    @property
    def training(self) -> dict[str, Any]:
        return dict(self.result["training"])

    @property
    def tag(self) -> str:
        return str(self.result["processing"]["tag"])


@pytest.fixture(scope="module")
def trained(running_stack: RunningStack) -> Trained:
    repo = f"train-{uuid.uuid4().hex[:6]}"
    result = run_pipeline(running_stack, repo, f"digits-{repo}", epochs=2)
    return Trained(repo, running_stack.settings.repo_url(repo), result)


def test_run_records_the_commit_the_tag_resolves_to(trained: Trained) -> None:
    refs = remote_refs(trained.url)
    assert trained.training["data_git_commit_id"] == refs[f"refs/tags/{trained.tag}^{{}}"]
    assert trained.training["dvc_tag"] == trained.tag


def test_run_params_tags_and_registry(running_stack: RunningStack, trained: Trained) -> None:
    client = MlflowClient(running_stack.settings.mlflow_uri)
    run = client.get_run(trained.training["run_id"])
    params = run.data.params
    for name in (
        "data_version",
        "data_git_commit_id",
        "dvc_repo_url",
        "dvc_tag",
        "dataset_md5",
        "manifest_sha256",
        "model_architecture",
        "epochs",
        "learning_rate",
        "batch_size",
        "image_size",
        "seed",
        "code_version",
    ):
        assert name in params, name
    assert params["data_git_commit_id"] == trained.training["data_git_commit_id"]
    assert params["model_architecture"] == "mobilenet_v3_small"
    assert params["pretrained"] == "False"  # no weights can be fetched here: never pretend
    assert run.data.tags["lineage.stage"] == "training"
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.step for m in history] == [1, 2]
    best = max(m.value for m in history)
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(best)
    assert "test_accuracy" in run.data.metrics
    version = client.get_model_version(
        trained.training["model_name"], trained.training["model_version"]
    )
    assert version.run_id == run.info.run_id
    assert version.tags["data_git_commit_id"] == trained.training["data_git_commit_id"]
    assert version.tags["dvc_tag"] == trained.tag
    assert version.tags["data_version"] == "v1.0"


def test_dataset_input_digest_is_the_full_dvc_md5(
    running_stack: RunningStack, trained: Trained, tmp_path: Path
) -> None:
    run = MlflowClient(running_stack.settings.mlflow_uri).get_run(trained.training["run_id"])
    assert run.inputs is not None
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1
    dataset_dir = checkout_with_plain_dvc(running_stack, trained.url, trained.tag, tmp_path / "c")
    md5, _, _ = dvc_out_md5(dataset_dir.parent / "dataset.dvc")
    assert inputs[0].dataset.digest == md5
    assert trained.tag in inputs[0].dataset.source


def test_manifest_artifact_is_the_dataset_manifest_byte_for_byte(
    running_stack: RunningStack, trained: Trained, tmp_path: Path
) -> None:
    client = MlflowClient(running_stack.settings.mlflow_uri)
    logged = Path(
        client.download_artifacts(trained.training["run_id"], "manifest.csv", str(tmp_path / "a"))
    )
    dataset_dir = checkout_with_plain_dvc(running_stack, trained.url, trained.tag, tmp_path / "c")
    assert logged.read_bytes() == (dataset_dir / manifest.MANIFEST_NAME).read_bytes()


def test_registered_model_loads_with_stock_pyfunc_and_predicts(
    running_stack: RunningStack, trained: Trained
) -> None:
    mlflow.set_tracking_uri(running_stack.settings.mlflow_uri)
    uri = f"models:/{trained.training['model_name']}/{trained.training['model_version']}"
    model = mlflow.pyfunc.load_model(uri)
    image = preprocess(Image.new("L", (8, 8), 128), 128).unsqueeze(0).numpy().astype(np.float32)
    assert model.predict(image).shape == (1, 10)


def test_model_tar_has_mlflow_model_and_lineage_at_its_root(trained: Trained) -> None:
    with tarfile.open(trained.training["model_artifact"]) as archive:
        names = archive.getnames()
        assert "MLmodel" in names and "lineage.json" in names
        assert not any(n.startswith(("model/", "./")) for n in names)
        member = archive.extractfile("lineage.json")
        assert member is not None
        lineage = json.loads(member.read())
    assert lineage["data_git_commit_id"] == trained.training["data_git_commit_id"]
    assert lineage["model_version"] == trained.training["model_version"]
    assert lineage["run_id"] == trained.training["run_id"]
    assert lineage["image_size"] == 128


def test_same_tag_and_seed_give_equal_metrics(
    running_stack: RunningStack, trained: Trained
) -> None:
    client = MlflowClient(running_stack.settings.mlflow_uri)
    again = ok(
        run_cli(
            "train",
            "--tag",
            trained.tag,
            "--epochs",
            "2",
            "--repo",
            trained.repo,
            "--model-name",
            f"digits-{trained.repo}",
            "--json",
            env=running_stack.env,
            timeout=900,
        )
    )
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        first = [m.value for m in client.get_metric_history(trained.training["run_id"], key)]
        second = [m.value for m in client.get_metric_history(again["run_id"], key)]
        assert first == second, key
    assert again["metrics"]["test_accuracy"] == trained.training["metrics"]["test_accuracy"]


def test_promote_sets_an_alias(running_stack: RunningStack, trained: Trained) -> None:
    name = trained.training["model_name"]
    result = ok(
        run_cli(
            "promote",
            "--model",
            f"{name}/{trained.training['model_version']}",
            "--alias",
            "champion",
            "--json",
            env=running_stack.env,
        )
    )
    assert result["version"] == trained.training["model_version"]
    client = MlflowClient(running_stack.settings.mlflow_uri)
    assert client.get_model_version_by_alias(name, "champion").version == result["version"]


def _no_model(running_stack: RunningStack, name: str) -> bool:
    try:
        MlflowClient(running_stack.settings.mlflow_uri).get_registered_model(name)
    except MlflowException:
        return True
    return False


def test_tampered_object_in_s3_stops_training(running_stack: RunningStack, tmp_path: Path) -> None:
    # unique images, so tampering cannot touch objects that other tests' datasets share
    root = tmp_path / "images"
    rng = np.random.default_rng(int(uuid.uuid4().int % 2**32))
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
                root / label / f"{i}.png"
            )
    repo = f"tamper-{uuid.uuid4().hex[:6]}"
    processed = ok(
        run_cli(
            "process",
            "--version",
            "t1",
            "--fraction",
            "1.0",
            "--source",
            f"imagefolder:{root}",
            "--repo",
            repo,
            "--json",
            env=running_stack.env,
            timeout=600,
        )
    )
    dataset = checkout_with_plain_dvc(
        running_stack, running_stack.settings.repo_url(repo), processed["tag"], tmp_path / "c"
    )
    victim = next(r for r in manifest.read(dataset / manifest.MANIFEST_NAME) if r.split == "train")
    md5 = file_md5(dataset / victim.file_path)
    s3_client(running_stack.settings).put_object(
        Bucket=running_stack.settings.dvc_bucket,
        Key=f"dvc/files/md5/{md5[:2]}/{md5[2:]}",
        Body=b"tampered bytes",
    )
    name = f"tamper-{uuid.uuid4().hex[:6]}"
    result = run_cli(
        "train",
        "--tag",
        processed["tag"],
        "--epochs",
        "1",
        "--repo",
        repo,
        "--model-name",
        name,
        "--json",
        env=running_stack.env,
        timeout=600,
    )
    assert result.returncode != 0
    assert victim.file_path in result.stderr and victim.sha256 in result.stderr
    assert _no_model(running_stack, name)


def test_unknown_tag_fails_clearly(running_stack: RunningStack, trained: Trained) -> None:
    name = f"none-{uuid.uuid4().hex[:6]}"
    result = run_cli(
        "train",
        "--tag",
        "v9.9-does-not-exist",
        "--repo",
        trained.repo,
        "--model-name",
        name,
        env=running_stack.env,
        timeout=300,
    )
    assert result.returncode != 0
    assert "tag v9.9-does-not-exist does not exist" in result.stderr
    assert _no_model(running_stack, name)


def _run_spec(running_stack: RunningStack, tmp_path: Path, spec: Any) -> Any:
    return run_training(
        spec,
        jobs_root=tmp_path / "jobs",
        runtime_env=running_stack.settings.client_env(),
        stream=False,
    )


def test_bad_hyperparameter_writes_failure_and_registers_nothing(
    running_stack: RunningStack, trained: Trained, tmp_path: Path
) -> None:
    name = f"bad-{uuid.uuid4().hex[:6]}"
    spec = build_spec(
        running_stack.settings, TrainOptions(tag=trained.tag, model_name=name), trained.url
    )
    spec.hyperparameters["epochs"] = "abc"
    outcome = _run_spec(running_stack, tmp_path, spec)
    assert outcome.status == "Failed" and outcome.exit_code != 0
    assert "epochs='abc' is not an integer" in outcome.message
    assert (outcome.base_dir / "output" / "failure").read_text() == outcome.message
    assert _no_model(running_stack, name)


def test_missing_channel_fails(
    running_stack: RunningStack, trained: Trained, tmp_path: Path
) -> None:
    name = f"chan-{uuid.uuid4().hex[:6]}"
    spec = build_spec(
        running_stack.settings, TrainOptions(tag=trained.tag, model_name=name), trained.url
    )
    spec.channels.append(Channel("pretrained", str(tmp_path / "no-such-weights")))
    outcome = _run_spec(running_stack, tmp_path, spec)
    assert outcome.status == "Failed"
    assert "input channel 'pretrained'" in outcome.message and "missing" in outcome.message
    assert _no_model(running_stack, name)


def test_empty_train_split_fails(running_stack: RunningStack, tmp_path: Path) -> None:
    repo_name = f"empty-{uuid.uuid4().hex[:6]}"
    url, _ = running_stack.stack.create_repo(repo_name)
    env_backup = dict(os.environ)
    os.environ.update(running_stack.settings.client_env())
    try:
        repo = DatasetRepo(url, tmp_path / "repo", running_stack.settings.dvc_remote_url)
        tag = f"empty-{uuid.uuid4().hex[:6]}"
        repo.prepare(tag)
        (repo.dataset_dir / "test" / "a").mkdir(parents=True)
        image = repo.dataset_dir / "test" / "a" / "x.png"
        Image.new("L", (4, 4)).save(image)
        manifest.write(
            repo.dataset_dir / manifest.MANIFEST_NAME,
            [manifest.ManifestRow("test/a/x.png", "x", "test", "a", file_sha256(image))],
        )
        published = repo.publish(tag, "only a test split")
        repo.push_tag(published, {"source": "handmade", "data_version": "e1"})
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    name = f"empty-{uuid.uuid4().hex[:6]}"
    spec = build_spec(running_stack.settings, TrainOptions(tag=tag, model_name=name), url)
    outcome = _run_spec(running_stack, tmp_path, spec)
    assert outcome.status == "Failed"
    assert "has 0 training images" in outcome.message
    assert _no_model(running_stack, name)


def test_sigterm_saves_a_checkpoint_and_fails_with_a_reason(
    running_stack: RunningStack, trained: Trained, tmp_path: Path
) -> None:
    """SageMaker stops a job (or a spot instance goes) with SIGTERM, then SIGKILL 120 s later."""
    name = f"sigterm-{uuid.uuid4().hex[:6]}"
    spec = build_spec(
        running_stack.settings,
        TrainOptions(tag=trained.tag, epochs=200, model_name=name),
        trained.url,
    )
    base = prepare_base_dir(spec, tmp_path / "jobs")
    env = job_env(base, running_stack.settings.client_env(), spec.environment)
    job = subprocess.Popen(
        [sys.executable, "-m", "training", "train"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert job.stdout is not None
    for line in job.stdout:
        if line.startswith("epoch=1 "):
            job.send_signal(signal.SIGTERM)
            break
    rest = job.communicate(timeout=300)[0]
    assert job.returncode != 0, rest[-2000:]
    paths = contract.TrainingPaths(base)
    assert "stopped by SIGTERM" in paths.failure_file.read_text()
    assert (paths.checkpoint_dir / "checkpoint.pt").is_file()
    assert _no_model(running_stack, name)
