"""`lineage sagemaker ...` against moto's server, started as a real HTTP server.

moto stands in for AWS's control plane only (it records every request it receives, which is
what these tests read); jobs "complete" at once there, so the test plays the containers' part
by writing the outputs a real job would leave in S3 (the processing result, the training
output.tar.gz). The MLflow registry and the model artifacts are the real local stack's.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from lineage.config import Settings
from lineage.ops.process import ProcessOptions
from lineage.ops.process import build_spec as build_processing_spec
from lineage.ops.train import TrainOptions
from lineage.ops.train import build_spec as build_training_spec
from lineage.sagemaker.jobs import SageMakerConfig
from lineage.sagemaker.polling import failure_message
from lineage.sagemaker.runner import SageMakerRunner
from local.runner.processing import prepare_base_dir as prepare_processing
from local.runner.training import prepare_base_dir as prepare_training
from tests.conftest import RunningStack, free_port_block, run_cli
from tests.helpers import processing_result, training_result
from tests.integration.conftest import Champion

pytestmark = pytest.mark.integration

ACCOUNT = "123456789012"
REGION = "us-east-1"
REGISTRY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/lineage-sagemaker"
TOKEN = "ghp_NeverLandsAnywhere0123456789abcdef"
REPO_URL = "https://git-codecommit.us-east-1.amazonaws.com/v1/repos/datasets"


@dataclass
class Moto:
    url: str
    env: dict[str, str]
    recording: Path
    bucket: str

    def client(self, service: str) -> Any:
        make: Any = boto3.client  # the service is a run-time string: no stub overload matches
        return make(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def entries(self) -> list[dict[str, Any]]:
        """Every recorded request. Moto's recorder writes an entry and its newline in two
        calls, so concurrent requests (boto3's multipart upload of a model.tar.gz over 8 MB)
        can put two entries on one line: read them as a stream of JSON values."""
        found: list[Any] = []
        text, decoder, at = self.recording.read_text(), json.JSONDecoder(), 0
        while True:
            while at < len(text) and text[at].isspace():
                at += 1
            if at >= len(text):
                return found
            entry, at = decoder.raw_decode(text, at)
            found.append(entry)

    def requests(self, target: str) -> list[dict[str, Any]]:
        """Bodies of every recorded request with X-Amz-Target `SageMaker.<target>`."""
        found = []
        for entry in self.entries():
            headers = {k.lower(): v for k, v in entry["headers"].items()}
            if headers.get("x-amz-target") == f"SageMaker.{target}":
                body = entry["body"]
                if entry.get("body_encoded"):
                    body = base64.b64decode(body).decode()
                found.append(json.loads(body))
        return found


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory, running_stack: RunningStack) -> Iterator[Moto]:
    port = free_port_block(1)
    recording = tmp_path_factory.mktemp("moto") / "recording.jsonl"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={
            **os.environ,
            "MOTO_ENABLE_RECORDING": "true",
            "MOTO_RECORDER_FILEPATH": str(recording),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert server.poll() is None, "moto server exited"
        try:
            if httpx.get(f"{url}/moto-api/", timeout=2).status_code < 500:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "moto server did not start"
        time.sleep(0.2)
    env = {
        **running_stack.env,
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "LINEAGE_SAGEMAKER_POLL_S": "0.1",
        "LINEAGE_IMAGE_REGISTRY": REGISTRY,
        "LINEAGE_IMAGE_TAG": "1.0.0",
    }
    moto = Moto(url, env, recording, f"lineage-{uuid.uuid4().hex[:8]}")
    moto.client("s3").create_bucket(Bucket=moto.bucket)
    ecr = moto.client("ecr")
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {},
            "layers": [],
        }
    )
    for name in ("processing", "training", "inference"):
        ecr.create_repository(repositoryName=f"model-lineage/{name}")
        ecr.put_image(
            repositoryName=f"model-lineage/{name}", imageManifest=manifest, imageTag="1.0.0"
        )
    moto.client("secretsmanager").create_secret(Name="lineage/git-token", SecretString=TOKEN)
    recording.write_text("")
    yield moto
    server.terminate()
    server.wait(timeout=30)


class PlayTheContainers(threading.Thread):
    """Write what the jobs would have left in S3, as soon as moto has the job."""

    def __init__(self, moto: Moto, commit: str, model: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.moto, self.commit, self.model = moto, commit, model
        self.done = threading.Event()

    def run(self) -> None:
        sagemaker, s3 = self.moto.client("sagemaker"), self.moto.client("s3")
        seen: set[str] = set()
        while not self.done.is_set():
            for job in sagemaker.list_processing_jobs()["ProcessingJobSummaries"]:
                name = job["ProcessingJobName"]
                if name in seen:
                    continue
                seen.add(name)
                described = sagemaker.describe_processing_job(ProcessingJobName=name)
                destination = described["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]
                bucket, _, key = destination["S3Uri"][5:].partition("/")
                tag = next(
                    r
                    for r in self.moto.requests("CreateProcessingJob")
                    if r["ProcessingJobName"] == name
                )["Environment"]["PIPELINE_RUN_ID"]
                result = processing_result(tag, commit=self.commit, dvc_repo_url=REPO_URL)
                body = json.dumps(result.to_json()).encode()
                s3.put_object(Bucket=bucket, Key=f"{key}/result.json", Body=body)
            for job in sagemaker.list_training_jobs()["TrainingJobSummaries"]:
                name = job["TrainingJobName"]
                if name in seen:
                    continue
                seen.add(name)
                described = sagemaker.describe_training_job(TrainingJobName=name)
                output = described["OutputDataConfig"]["S3OutputPath"]
                bucket, _, key = output[5:].partition("/")
                buffer = io.BytesIO()
                tag = described["HyperParameters"]["dvc_tag"]
                trained = training_result(tag, data_git_commit_id=self.commit, **self.model)
                data = json.dumps(trained.to_json()).encode()
                with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
                    info = tarfile.TarInfo("result.json")
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
                s3.put_object(
                    Bucket=bucket, Key=f"{key}/{name}/output/output.tar.gz", Body=buffer.getvalue()
                )
            time.sleep(0.05)


MLFLOW_APP = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:mlflow-app/app-abc"


def sagemaker_pipeline(
    moto: Moto, options: dict[str, str], *flags: str
) -> subprocess.CompletedProcess[str]:
    """`lineage sagemaker pipeline` for v1.0 at 5% with working defaults, `options` on top."""
    args = {
        "--role": ROLE,
        "--bucket": moto.bucket,
        "--dvc-repo-url": REPO_URL,
        "--mlflow-uri": MLFLOW_APP,
        **options,
    }
    return run_cli(
        "sagemaker",
        "pipeline",
        "--version",
        "v1.0",
        "--fraction",
        "0.05",
        *(x for k, v in args.items() for x in (k, v)),
        *flags,
        env=moto.env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def launched(moto: Moto) -> dict[str, Any]:
    player = PlayTheContainers(
        moto, "c" * 40, {"model_name": "digits-mobilenetv3", "model_version": "7"}
    )
    player.start()
    try:
        out = sagemaker_pipeline(
            moto,
            {"--git-token-secret": "lineage/git-token", "--instance-type": "ml.m5.xlarge"},
            "--wait",
            "--json",
        )
    finally:
        player.done.set()
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout)
    result["stderr"] = out.stderr
    return result


def test_processing_request_carries_image_arguments_env_and_role(
    moto: Moto, launched: dict[str, Any]
) -> None:
    [request] = moto.requests("CreateProcessingJob")
    app = request["AppSpecification"]
    assert app["ImageUri"] == f"{REGISTRY}/model-lineage/processing:1.0.0"
    assert app["ContainerArguments"] == [
        "--data-version",
        "v1.0",
        "--data-fraction",
        "0.05",
        "--val-split",
        "0.1",
        "--test-split",
        "0.1",
        "--seed",
        "42",
        "--source",
        "digits",
    ]
    env = request["Environment"]
    run_id = launched["pipeline_run_id"]
    assert env["DVC_REPO_URL"] == REPO_URL and env["DVC_REPO_NAME"] == "datasets"
    assert env["MLFLOW_TRACKING_URI"].startswith("arn:aws:sagemaker:")
    assert env["MLFLOW_EXPERIMENT_NAME"] == "model-lineage"
    assert env["PIPELINE_RUN_ID"] == run_id
    assert env["DVC_REMOTE_URL"] == f"s3://{moto.bucket}/dvc"
    assert env["LINEAGE_GIT_TOKEN_SECRET"] == "lineage/git-token"
    assert env["LINEAGE_IMAGE_URI"] == app["ImageUri"]
    assert env["LINEAGE_IMAGE_DIGEST"] == launched["images"][app["ImageUri"]]
    assert env["LINEAGE_IMAGE_DIGEST"].startswith("sha256:")
    assert all(len(v) <= 256 for v in env.values())
    assert request["RoleArn"] == ROLE
    output = request["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]
    assert output["S3Uri"].startswith(f"s3://{moto.bucket}/")
    assert output["LocalPath"].startswith("/opt/ml/processing/")
    assert request["ProcessingResources"]["ClusterConfig"]["InstanceType"] == "ml.m5.xlarge"
    assert {"Key": "lineage:pipeline-run-id", "Value": run_id} in request["Tags"]


def test_training_request_gets_the_tag_the_processing_job_produced(
    moto: Moto, launched: dict[str, Any]
) -> None:
    [request] = moto.requests("CreateTrainingJob")
    run_id = launched["pipeline_run_id"]
    assert request["AlgorithmSpecification"]["TrainingImage"] == (
        f"{REGISTRY}/model-lineage/training:1.0.0"
    )
    hyperparameters = request["HyperParameters"]
    assert hyperparameters["dvc_tag"] == run_id == launched["processing"]["tag"]
    assert all(isinstance(v, str) for v in hyperparameters.values())
    assert hyperparameters["epochs"] == "3" and hyperparameters["learning_rate"] == "0.001"
    assert request["RoleArn"] == ROLE
    assert request["OutputDataConfig"]["S3OutputPath"] == f"s3://{moto.bucket}/training"
    assert request["CheckpointConfig"] == {
        "S3Uri": f"s3://{moto.bucket}/checkpoints/{request['TrainingJobName']}",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert request["ResourceConfig"]["InstanceType"] == "ml.m5.xlarge"
    assert {"Key": "lineage:data-commit", "Value": "c" * 40} in request["Tags"]
    assert launched["training"]["model_version"] == "7"


def test_the_git_token_lands_nowhere(moto: Moto, launched: dict[str, Any]) -> None:
    recorded = moto.recording.read_text()
    assert TOKEN not in recorded
    assert base64.b64encode(TOKEN.encode()).decode() not in recorded
    assert TOKEN not in json.dumps(launched)
    sagemaker = moto.client("sagemaker")
    for request in moto.requests("CreateTrainingJob"):
        described = sagemaker.describe_training_job(TrainingJobName=request["TrainingJobName"])
        assert TOKEN not in json.dumps(described, default=str)


def test_local_runner_config_files_match_the_sagemaker_requests(
    running_stack: RunningStack, moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One description, two worlds: what a local run writes is what SageMaker is sent."""
    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, moto.env[key])
    settings = Settings.from_env(
        {**running_stack.env, "LINEAGE_IMAGE_TAG": "1.0.0", "LINEAGE_IMAGE_REGISTRY": REGISTRY}
    )
    config = SageMakerConfig(
        role=ROLE,
        bucket=moto.bucket,
        mlflow_uri=settings.mlflow_uri,
        image_registry=REGISTRY,
        image_tag="1.0.0",
        dvc_repo_url=settings.repo_url("datasets"),
        region=REGION,
    )
    runner = SageMakerRunner(config, settings)
    options = ProcessOptions(version="v9", fraction=0.3, pipeline_run_id="v9-run")
    placed = runner.settings  # the same bucket, MLflow and images: only the runtime differs
    _, sent = runner.processing_job(build_processing_spec(placed, options, config.dvc_repo_url))
    local = build_processing_spec(placed, options, settings.repo_url("datasets"))
    written = json.loads(
        (
            prepare_processing(local, tmp_path / "p") / "config" / "processingjobconfig.json"
        ).read_text()
    )
    assert written["AppSpecification"] == sent["AppSpecification"]
    assert {k: v for k, v in sent["Environment"].items() if k in written["Environment"]} == (
        written["Environment"]
    )
    for key in ("ProcessingInputs", "StoppingCondition"):
        assert written[key] == sent[key], key
    assert [o["S3Output"]["LocalPath"] for o in written["ProcessingOutputConfig"]["Outputs"]] == [
        o["S3Output"]["LocalPath"] for o in sent["ProcessingOutputConfig"]["Outputs"]
    ]

    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"a state dict")
    train = TrainOptions(tag="v9-run", epochs=4, model_name="parity", pretrained=str(weights))
    built = build_training_spec(placed, train, config.dvc_repo_url)
    _, sent_training = runner.training_job(built, "c" * 40)
    local_training = build_training_spec(placed, train, settings.repo_url("datasets"))
    base = prepare_training(local_training, tmp_path / "t")
    hyperparameters = json.loads((base / "input/config/hyperparameters.json").read_text())
    assert hyperparameters == sent_training["HyperParameters"]
    channels = json.loads((base / "input/config/inputdataconfig.json").read_text())
    sent_channels = sent_training["InputDataConfig"]
    assert sorted(channels) == [c["ChannelName"] for c in sent_channels] == ["pretrained"]
    uploaded = sent_channels[0]["DataSource"]["S3DataSource"]["S3Uri"]  # the file went to S3
    assert uploaded.startswith(f"s3://{moto.bucket}/inputs/")
    assert sent_training["AlgorithmSpecification"]["TrainingImage"] == local_training.image_uri
    assert {
        k: v for k, v in sent_training["Environment"].items() if k in local_training.environment
    } == local_training.environment

    # two instances: the request asks SageMaker for two, the local runner lays out two hosts
    # whose resourceconfig.json lists both, as SageMaker writes it on each instance
    two = replace(train, instance_count=2, pretrained="none")
    _, sent_two = runner.training_job(build_training_spec(placed, two, config.dvc_repo_url))
    assert sent_two["ResourceConfig"]["InstanceCount"] == 2
    local_two = build_training_spec(placed, two, settings.repo_url("datasets"))
    for host in ("algo-1", "algo-2"):
        config_file = prepare_training(local_two, tmp_path / "t2", host) / "input/config"
        resource = json.loads((config_file / "resourceconfig.json").read_text())
        assert (resource["current_host"], resource["hosts"]) == (host, ["algo-1", "algo-2"])


def test_deploy_creates_model_config_and_endpoint(
    moto: Moto, champion: Champion, running_stack: RunningStack
) -> None:
    before = len(moto.requests("CreateModel"))
    out = run_cli(
        "sagemaker",
        "deploy",
        "--model",
        f"{champion.name}@champion",
        "--endpoint-name",
        "lineage-test",
        "--role",
        ROLE,
        "--bucket",
        moto.bucket,
        "--mlflow-uri",
        running_stack.settings.mlflow_uri,
        "--instance-type",
        "ml.m5.large",
        "--json",
        env=moto.env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    [model] = moto.requests("CreateModel")[before:]
    container = model["PrimaryContainer"]
    assert container["Image"] == f"{REGISTRY}/model-lineage/inference:1.0.0"
    key = f"models/{champion.name}/{champion.version}/model.tar.gz"
    assert container["ModelDataUrl"] == f"s3://{moto.bucket}/{key}" == result["model_data"]
    assert model["ExecutionRoleArn"] == ROLE
    [config] = moto.requests("CreateEndpointConfig")[-1:]
    variant = config["ProductionVariants"][0]
    assert variant["ModelName"] == model["ModelName"] and variant["InstanceType"] == "ml.m5.large"
    [endpoint] = moto.requests("CreateEndpoint")[-1:]
    assert endpoint["EndpointConfigName"] == config["EndpointConfigName"]
    commit = champion.result["training"]["data_git_commit_id"]
    assert {"Key": "lineage:data-commit", "Value": commit} in endpoint["Tags"]
    # the uploaded model.tar.gz has the model at its root, lineage included
    body = moto.client("s3").get_object(Bucket=moto.bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        names = archive.getnames()
        member = archive.extractfile("lineage.json")
        assert member is not None
        lineage = json.loads(member.read())
    assert {"MLmodel", "lineage.json", "weights.pt"} <= set(names)
    assert lineage["model_version"] == champion.version and lineage["alias"] == "champion"

    assert result["updated"] is False  # (moto 5.2 has no UpdateEndpoint to test a redeploy)


def test_status_names_the_job_and_its_lineage_tags(moto: Moto, launched: dict[str, Any]) -> None:
    name = launched["training"]["job_name"]
    out = run_cli("sagemaker", "status", name, "--json", env=moto.env)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["kind"] == "training" and found["status"] == "Completed"
    assert found["tags"]["lineage:pipeline-run-id"] == launched["pipeline_run_id"]
    missing = run_cli("sagemaker", "status", "no-such-job", env=moto.env)
    assert missing.returncode != 0 and "no processing or training job named" in missing.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--role": ""}, "no execution role"),
        ({"--role": "admin"}, "is not an IAM role ARN"),
        ({"--bucket": "no-such-bucket-4242"}, "bucket no-such-bucket-4242 does not exist"),
        ({"--image-tag": "9.9.9"}, "is not in ECR"),
        ({"--dvc-repo-url": "https://me:secret@github.com/acme/data.git"}, "carries credentials"),
        ({"--dvc-repo-url": "https://example.com/" + "r" * 260}, "allows 256"),
    ],
)
def test_clear_failures_before_anything_is_created(
    moto: Moto, change: dict[str, str], message: str
) -> None:
    before = len(moto.requests("CreateProcessingJob"))
    out = sagemaker_pipeline(moto, change)
    assert out.returncode != 0
    assert message in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert len(moto.requests("CreateProcessingJob")) == before


def test_a_failed_job_reports_reason_and_log_stream() -> None:
    text = failure_message(
        "training",
        "train-x",
        {"TrainingJobStatus": "Failed", "FailureReason": "hyperparameter epochs='abc'"},
        ["/aws/sagemaker/TrainingJobs/train-x/algo-1-1700000000"],
    )
    assert "training job train-x failed: hyperparameter epochs='abc'" in text
    assert "/aws/sagemaker/TrainingJobs/train-x/algo-1-1700000000" in text


def test_invoke_sends_raw_image_bytes(moto: Moto, tmp_path: Path) -> None:
    answer = {
        "label": "7",
        "lineage": {"model_name": "m", "model_version": "1", "data_git_commit_id": "c" * 40},
    }
    httpx.post(
        f"{moto.url}/moto-api/static/sagemaker/endpoint-results",
        json={
            "results": [
                {
                    "Body": json.dumps(answer),
                    "ContentType": "application/json",
                    "InvokedProductionVariant": "AllTraffic",
                    "CustomAttributes": "x",
                }
            ]
        },
    )
    # moto 5.2 answers 500 to a body that is not UTF-8 (a real PNG's first byte is 0x89), so
    # this stand-in is ASCII; what is checked is that the file's bytes go out untouched.
    image = tmp_path / "seven.png"
    image.write_bytes(b"PNG-like raw bytes, not base64 and not JSON")
    out = run_cli(
        "sagemaker", "invoke", str(image), "--endpoint-name", "lineage-test", "--json", env=moto.env
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["answer"] == answer
    sent = moto.entries()
    [call] = [e for e in sent if e["url"].endswith("/endpoints/lineage-test/invocations")]
    body = base64.b64decode(call["body"]) if call.get("body_encoded") else call["body"].encode()
    assert body == image.read_bytes()
    assert {k.lower(): v for k, v in call["headers"].items()}["content-type"] == "image/png"


def test_logs_prints_the_jobs_cloudwatch_streams(moto: Moto, launched: dict[str, Any]) -> None:
    name = launched["training"]["job_name"]
    logs = moto.client("logs")
    group = "/aws/sagemaker/TrainingJobs"
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
    stream = f"{name}/algo-1-1764300000"
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    logs.put_log_events(
        logGroupName=group,
        logStreamName=stream,
        logEvents=[
            {"timestamp": int(time.time() * 1000), "message": "epoch=1 val_accuracy=0.9"},
            {"timestamp": int(time.time() * 1000) + 1, "message": "training complete"},
        ],
    )
    out = run_cli("sagemaker", "logs", name, env=moto.env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["epoch=1 val_accuracy=0.9", "training complete"]
    status = json.loads(run_cli("sagemaker", "status", name, "--json", env=moto.env).stdout)
    assert status["log_group"] == group and status["log_streams"] == [stream]
