"""The training image on two instances through the official SageMaker Python SDK v3 local
mode (`create_training_job` with `InstanceCount=2`: containers `algo-1-*` and `algo-2-*` on
the SDK's `sagemaker-local` compose network), against a stack bound to the docker bridge
address so the SDK's containers can reach it; then the model it produced is hosted through
the SDK and answers with its lineage."""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lineage.config import Settings
from lineage.credentials import write_private
from lineage.ops.train import TrainOptions, build_spec
from local.stack import LocalStack
from local.stack.compose import bridge_gateway
from tests.conftest import RunningStack, run_cli, stack_env
from tests.helpers import (
    SDK_INJECTED,
    digit_images,
    make_sdk_venv,
    run_sdk_script,
    sdk_host_answer,
)

pytestmark = [pytest.mark.container, pytest.mark.integration]


@pytest.fixture(scope="module")
def bridge_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """A private stack on the docker bridge address (so: token-gated git, MLflow auth)."""
    env = {
        **stack_env(tmp_path_factory.mktemp("bridge") / "home"),
        "LINEAGE_HOST": bridge_gateway(),
    }
    settings = Settings.from_env(env)
    stack = LocalStack(settings)
    stack.up()
    try:
        yield RunningStack(env=env, settings=settings, stack=stack)
    finally:
        stack.down()


def test_the_sdk_trains_on_two_instances_one_run_one_version_and_the_model_serves(
    bridge_stack: RunningStack, images: dict[str, str], tmp_path: Path
) -> None:
    make_sdk_venv()
    settings, repo = bridge_stack.settings, f"sdk-{uuid.uuid4().hex[:6]}"
    published = run_cli(
        "process", "--version", "s1", "--fraction", "0.15", "--repo", repo, "--json",
        env=bridge_stack.env, timeout=600,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr[-2000:]
    tag = json.loads(published.stdout)["tag"]

    spec = build_spec(
        settings,
        TrainOptions(tag=tag, epochs=1, model_name=repo, instance_count=2),
        settings.repo_url(repo),
    )
    environment = {
        **{k: v for k, v in settings.client_env().items() if k not in SDK_INJECTED},
        **spec.environment,
    }
    work = Path(tempfile.mkdtemp(prefix="lineage-sdk-train-", dir="/tmp"))
    try:
        job_file = work / "job-request.json"
        job = {
            "name": f"{repo}-job",
            "instance_count": 2,
            "hyperparameters": spec.hyperparameters,
            "environment": environment,
        }
        write_private(job_file, json.dumps(job))
        keys = {
            "PATH": "/usr/bin:/bin:/usr/local/bin",
            "HOME": str(work),
            "AWS_ACCESS_KEY_ID": settings.credentials.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": settings.credentials.s3_secret_key,
        }
        run_sdk_script("sdk_train.py", images["training"], str(job_file), str(work), env=keys)
        described = json.loads((work / "job.json").read_text())
        assert described["TrainingJobStatus"] == "Completed"

        client = MlflowClient(settings.mlflow_uri)
        experiment = client.get_experiment_by_name("model-lineage")
        assert experiment is not None
        runs = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.model_name = '{repo}'"
        )
        assert len(runs) == 1  # only the leader logged
        assert [v.version for v in client.search_model_versions(f"name = '{repo}'")] == ["1"]
        params = runs[0].data.params
        assert params["world_size"] == "2" and params["instance_count"] == "2"
        hosts = params["hosts"].split(",")
        assert [h.split("-")[:2] for h in hosts] == [["algo", "1"], ["algo", "2"]]

        # the artifact SageMaker collects from every host holds only the leader's model
        artifact = Path(described["ModelArtifacts"]["S3ModelArtifacts"].removeprefix("file://"))
        model_dir = tmp_path / "model"
        with tarfile.open(artifact) as archive:
            archive.extractall(model_dir, filter="data")
        lineage = json.loads((model_dir / "lineage.json").read_text())
        assert (lineage["model_version"], lineage["world_size"]) == ("1", 2)
        assert lineage["run_id"] == runs[0].info.run_id

        png = digit_images(tmp_path, 1)[0]
        answer = sdk_host_answer(images["inference"], model_dir, png)
        assert answer["status"] == 200
        served = answer["body"]["lineage"]
        assert (served["model_name"], served["model_version"]) == (repo, "1")
        assert served["data_git_commit_id"] == params["data_git_commit_id"]
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the SDK's compose file holds the credentials
