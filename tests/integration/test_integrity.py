"""The chain cannot be bent without being caught: each attack of someone with write access
to one store (git, S3, the MLflow artifact store, the registry), and each crash at the worst
moment, performed against the real stack and its real CLIs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import torch
from mlflow.tracking import MlflowClient

from lineage.hashing import bytes_sha256, file_sha256
from lineage.ops.deploy import materialize
from lineage.storage import s3_client
from processing.sources import SourceError, load_source, parse_source
from tests.conftest import RunningStack, free_port_block, run_cli
from tests.helpers import moto_server, random_imagefolder, wait_http

pytestmark = pytest.mark.integration


def ok(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@dataclass
class Trained:
    """A model trained on images no other test shares, and a second version of its data."""

    repo: str
    url: str
    name: str
    version: str
    tag: str
    commit: str
    run_id: str
    other_tag: str
    other_commit: str

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"


@pytest.fixture(scope="module")
def trained(running_stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = random_imagefolder(
        tmp_path_factory.mktemp("integrity") / "images", seed=uuid.uuid4().int % 2**32
    )
    repo = f"integrity-{uuid.uuid4().hex[:6]}"
    common = ("--source", f"imagefolder:{root}", "--repo", repo, "--json")
    made = ok(
        run_cli(
            "pipeline",
            "--version",
            "i1",
            "--fraction",
            "1.0",
            "--epochs",
            "1",
            "--model-name",
            repo,
            *common,
            env=running_stack.env,
            timeout=900,
        )
    )
    other = ok(
        run_cli("process", "--version", "i2", "--fraction", "0.5", *common, env=running_stack.env)
    )
    training = made["training"]
    return Trained(
        repo=repo,
        url=running_stack.settings.repo_url(repo),
        name=repo,
        version=str(training["model_version"]),
        tag=training["dvc_tag"],
        commit=training["data_git_commit_id"],
        run_id=training["run_id"],
        other_tag=other["tag"],
        other_commit=other["commit"],
    )


def _git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True
    )


def _tag_commit(url: str, tag: str) -> str:
    listed = _git("ls-remote", "--tags", url, f"refs/tags/{tag}^{{}}").stdout.split()
    return listed[0] if listed else ""


# -- 1. tags do not move -------------------------------------------------------------------------


def test_a_tag_cannot_be_moved_or_deleted_through_the_git_server(
    trained: Trained, tmp_path: Path, git_identity: dict[str, str], git_env: dict[str, str]
) -> None:
    work = tmp_path / "work"
    assert _git("clone", "--quiet", trained.url, str(work), env=git_identity).returncode == 0
    _git("commit", "--quiet", "--allow-empty", "-m", "elsewhere", cwd=work, env=git_identity)

    moved = _git(
        "push", "--force", trained.url, f"HEAD:refs/tags/{trained.tag}", cwd=work, env=git_env
    )
    assert moved.returncode != 0
    assert f"tag {trained.tag} cannot be moved: dataset tags are immutable" in moved.stderr
    deleted = _git("push", trained.url, f":refs/tags/{trained.tag}", cwd=work, env=git_env)
    assert deleted.returncode != 0
    assert f"tag {trained.tag} cannot be deleted" in deleted.stderr
    assert _tag_commit(trained.url, trained.tag) == trained.commit

    fresh = f"fresh-{uuid.uuid4().hex[:6]}"  # new tags are still published as before
    fresh_push = _git(
        "push", "--quiet", trained.url, f"HEAD:refs/tags/{fresh}", cwd=work, env=git_env
    )
    assert fresh_push.returncode == 0, fresh_push.stderr


def test_a_tag_moved_behind_the_servers_back_stops_training(
    running_stack: RunningStack, trained: Trained
) -> None:
    """Someone with write access to the bare repository on disk moves the tag to another
    valid dataset version: training refuses it, because the processing run that published
    the tag recorded another commit; trace refuses it too."""
    bare = running_stack.settings.home / "git" / f"{trained.repo}.git"
    ref = f"refs/tags/{trained.tag}"
    original = _git("--git-dir", str(bare), "rev-parse", ref).stdout.strip()
    assert _git("--git-dir", str(bare), "update-ref", ref, trained.other_commit).returncode == 0
    try:
        client = MlflowClient(running_stack.settings.mlflow_uri)
        before = len(client.search_model_versions(f"name = '{trained.name}'"))
        out = run_cli(
            "train",
            "--tag",
            trained.tag,
            "--repo",
            trained.repo,
            "--epochs",
            "1",
            "--model-name",
            trained.name,
            env=running_stack.env,
            timeout=600,
        )
        assert out.returncode != 0
        assert "the tag was moved" in out.stderr
        assert trained.commit[:12] in out.stderr and trained.other_commit[:12] in out.stderr
        assert len(client.search_model_versions(f"name = '{trained.name}'")) == before

        traced = run_cli("trace", "--model", trained.ref, env=running_stack.env)
        assert traced.returncode != 0 and "the tag was moved after training" in traced.stderr
    finally:
        _git("--git-dir", str(bare), "update-ref", ref, original)
    assert _tag_commit(trained.url, trained.tag) == trained.commit


# -- 3. swapped weights ---------------------------------------------------------------------------


def _artifact_key(settings: Any, run_id: str, path: str) -> str:
    run = MlflowClient(settings.mlflow_uri).get_run(run_id)
    root = run.info.artifact_uri.removeprefix("mlflow-artifacts:/")
    return f"artifacts/{root}/{path}"


def _perturbed(weights: bytes) -> bytes:
    """Real weights of the same network, changed a little: what a backdoor looks like."""
    state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first] + 0.01
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.fixture
def swapped_weights(running_stack: RunningStack, trained: Trained) -> Iterator[dict[str, Any]]:
    """`model/weights.pt` of the run overwritten in the MLflow bucket; restored afterwards."""
    settings = running_stack.settings
    s3 = s3_client(settings)
    bucket = settings.mlflow_bucket
    keys = {
        name: _artifact_key(settings, trained.run_id, f"model/{name}")
        for name in ("weights.pt", "lineage.json")
    }
    saved = {name: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for name, k in keys.items()}
    forged = _perturbed(saved["weights.pt"])
    s3.put_object(Bucket=bucket, Key=keys["weights.pt"], Body=forged)
    try:
        yield {"s3": s3, "bucket": bucket, "keys": keys, "saved": saved, "forged": forged}
    finally:
        for name, key in keys.items():
            s3.put_object(Bucket=bucket, Key=key, Body=saved[name])


def test_weights_swapped_in_the_artifact_store_are_caught_by_trace_and_deploy(
    running_stack: RunningStack, trained: Trained, swapped_weights: dict[str, Any]
) -> None:
    traced = run_cli("trace", "--model", trained.ref, "--json", env=running_stack.env)
    assert traced.returncode == 1
    failed = {c["name"] for c in json.loads(traced.stdout)["checks"] if not c["ok"]}
    assert failed == {"model weights", "model files", "signature"}  # model.sig names it too
    assert "chain NOT verified" in traced.stderr

    port = str(free_port_block(1))
    deployed = run_cli("deploy", "--model", trained.ref, "--port", port, env=running_stack.env)
    assert deployed.returncode != 0
    assert f"{trained.ref} is not deployable: model weights" in deployed.stderr

    # ... and also when the attacker rewrites the artifact's lineage.json to match the new
    # weights: the run's params (immutable) still hold the digest of the trained weights.
    lineage = json.loads(swapped_weights["saved"]["lineage.json"])
    lineage["weights_sha256"] = bytes_sha256(swapped_weights["forged"])
    swapped_weights["s3"].put_object(
        Bucket=swapped_weights["bucket"],
        Key=swapped_weights["keys"]["lineage.json"],
        Body=json.dumps(lineage).encode(),
    )
    again = run_cli("deploy", "--model", trained.ref, "--port", port, env=running_stack.env)
    assert again.returncode != 0
    assert "model weights" in again.stderr and "model lineage.json" in again.stderr
    assert "weights_sha256" in again.stderr


def test_the_server_refuses_weights_that_differ_from_its_lineage(
    running_stack: RunningStack, trained: Trained, tmp_path: Path
) -> None:
    info = materialize(running_stack.settings, trained.ref, tmp_path / "endpoint")
    weights = info.model_dir / "weights.pt"
    weights.write_bytes(_perturbed(weights.read_bytes()))
    out = subprocess.run(
        [sys.executable, "-m", "inference", "serve", "--model-dir", str(info.model_dir)],
        env={**os.environ, "SAGEMAKER_BIND_TO_PORT": str(free_port_block(1))},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "the weights were swapped after training; refusing to serve them" in out.stderr


def test_an_endpoint_serving_other_weights_fails_the_trace(
    running_stack: RunningStack, trained: Trained, tmp_path: Path
) -> None:
    """The attacker swaps the weights on the endpoint's disk and fixes its lineage.json so the
    server starts: trace compares the served digest with the run's record, not the file's."""
    info = materialize(running_stack.settings, trained.ref, tmp_path / "endpoint")
    model_dir = info.model_dir
    weights = model_dir / "weights.pt"
    weights.write_bytes(_perturbed(weights.read_bytes()))
    lineage = json.loads((model_dir / "lineage.json").read_text())
    lineage["weights_sha256"] = file_sha256(weights)
    (model_dir / "lineage.json").write_text(json.dumps(lineage))
    port = free_port_block(1)
    server = subprocess.Popen(
        [sys.executable, "-m", "inference", "serve", "--model-dir", str(model_dir)],
        env={**os.environ, "SAGEMAKER_BIND_TO_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", alive=lambda: server.poll() is None)
        out = run_cli(
            "trace", "--endpoint", f"http://127.0.0.1:{port}", "--json", env=running_stack.env
        )
        assert out.returncode == 1
        failed = [c["name"] for c in json.loads(out.stdout)["checks"] if not c["ok"]]
        # the server was started without trusted keys (it would refuse these weights with
        # them): it did not check the signature, and the trace says so too
        assert failed == ["endpoint weights", "endpoint signature"]
    finally:
        server.terminate()
        server.wait(timeout=30)


# -- 4. half-registered versions ----------------------------------------------------------------


def test_versions_without_lineage_tags_or_a_finished_run_are_refused(
    running_stack: RunningStack, trained: Trained, tmp_path: Path
) -> None:
    """What a crash between registration and tagging used to leave, and what a crash before
    the run ended leaves: deploy and promote refuse both, naming what is wrong."""
    client = MlflowClient(running_stack.settings.mlflow_uri)
    run = client.get_run(trained.run_id)
    created: list[str] = []
    crashed_run = client.create_run(run.info.experiment_id, run_name="crashed")
    try:
        untagged = client.create_model_version(
            trained.name, f"{run.info.artifact_uri}/model", run_id=trained.run_id
        )
        created.append(untagged.version)
        # a run that logged everything, registered with every tag, and never ended
        model_dir = client.download_artifacts(trained.run_id, "model", str(tmp_path))
        client.log_artifacts(crashed_run.info.run_id, model_dir, "model")
        for key, value in run.data.params.items():
            client.log_param(crashed_run.info.run_id, key, value)
        unfinished = client.create_model_version(
            trained.name,
            f"{crashed_run.info.artifact_uri}/model",
            run_id=crashed_run.info.run_id,
            tags=client.get_model_version(trained.name, trained.version).tags,
        )
        created.append(unfinished.version)

        half = f"{trained.name}/{untagged.version}"
        for command in (
            ("deploy", "--model", half, "--port", str(free_port_block(1))),
            ("promote", "--model", half, "--alias", "champion"),
        ):
            out = run_cli(*command, env=running_stack.env)
            assert out.returncode != 0, command
            assert f"{half} is not deployable: registry tags" in out.stderr
            assert "data_git_commit_id is missing" in out.stderr
            assert "weights_sha256 is missing" in out.stderr
        crashed = f"{trained.name}/{unfinished.version}"
        for command in (
            ("deploy", "--model", crashed, "--port", str(free_port_block(1))),
            ("promote", "--model", crashed, "--alias", "champion"),
        ):
            out = run_cli(*command, env=running_stack.env)
            assert out.returncode != 0, command
            assert (
                "run status" in out.stderr and "is RUNNING: training did not complete" in out.stderr
            )
        assert client.get_registered_model(trained.name).aliases.get("champion") is None
    finally:
        for version in created:
            client.delete_model_version(trained.name, version)
        client.delete_run(crashed_run.info.run_id)


def test_a_registered_version_carries_its_record_in_every_copy(
    running_stack: RunningStack, trained: Trained, tmp_path: Path
) -> None:
    client = MlflowClient(running_stack.settings.mlflow_uri)
    tags = client.get_model_version(trained.name, trained.version).tags
    params = client.get_run(trained.run_id).data.params
    for fact in (
        "data_git_commit_id",
        "dvc_tag",
        "dataset_md5",
        "manifest_sha256",
        "weights_sha256",
        "model_sha256",
    ):
        assert tags[fact] == params[fact], fact
    info = materialize(running_stack.settings, trained.ref, tmp_path / "endpoint")
    lineage = json.loads((info.model_dir / "lineage.json").read_text())
    assert lineage["model_version"] == trained.version  # written at registration, not only deploy
    assert lineage["weights_sha256"] == file_sha256(info.model_dir / "weights.pt")
    assert lineage["weights_sha256"] == params["weights_sha256"]


# -- 5. paths that escape --------------------------------------------------------------------------


def _escape_target() -> Path:
    return Path(tempfile.gettempdir()) / f"lineage-escape-{uuid.uuid4().hex[:8]}.txt"


def test_a_crafted_dvc_listing_writes_nothing_outside_the_workspace(
    running_stack: RunningStack,
    trained: Trained,
    tmp_path: Path,
    git_identity: dict[str, str],
    git_env: dict[str, str],
) -> None:
    """A `.dir` listing in the remote whose relpath climbs out: `train` and `verify` refuse
    it, naming the entry, before `dvc pull` writes a byte."""
    settings = running_stack.settings
    s3 = s3_client(settings)
    escape = _escape_target()
    relpath = "../" * 40 + str(escape).lstrip("/")
    manifest_md5 = hashlib.md5(
        b"record_id,file_path,split,label,sha256\n", usedforsecurity=False
    ).hexdigest()
    s3.put_object(
        Bucket=settings.dvc_bucket,
        Key=f"dvc/files/md5/{manifest_md5[:2]}/{manifest_md5[2:]}",
        Body=b"record_id,file_path,split,label,sha256\n",
    )
    listing = json.dumps(
        [
            {"md5": manifest_md5, "relpath": "manifest.csv"},
            {"md5": manifest_md5, "relpath": relpath},
        ]
    ).encode()
    dir_md5 = hashlib.md5(listing, usedforsecurity=False).hexdigest()
    s3.put_object(
        Bucket=settings.dvc_bucket,
        Key=f"dvc/files/md5/{dir_md5[:2]}/{dir_md5[2:]}.dir",
        Body=listing,
    )
    work = tmp_path / "work"
    assert _git("clone", "--quiet", trained.url, str(work), env=git_identity).returncode == 0
    (work / "dataset.dvc").write_text(
        f"outs:\n- md5: {dir_md5}.dir\n  size: 80\n  nfiles: 2\n  hash: md5\n  path: dataset\n"
    )
    _git("commit", "--quiet", "-am", "crafted listing", cwd=work, env=git_identity)
    crafted = f"crafted-{uuid.uuid4().hex[:6]}"
    pushed = _git(
        "push", "--quiet", trained.url, f"HEAD:refs/tags/{crafted}", cwd=work, env=git_env
    )
    assert pushed.returncode == 0, pushed.stderr

    trained_out = run_cli(
        "train", "--tag", crafted, "--repo", trained.repo, "--epochs", "1", env=running_stack.env
    )
    assert trained_out.returncode != 0
    assert f"entry 2 of the DVC listing {dir_md5}.dir" in trained_out.stderr
    assert "climbs out of its directory" in trained_out.stderr
    verified = run_cli("verify", "--tag", crafted, "--repo", trained.repo, env=running_stack.env)
    assert verified.returncode != 0 and "climbs out of its directory" in verified.stderr
    assert not escape.exists()


def test_a_crafted_s3_source_key_writes_nothing_outside_the_input_dir(tmp_path: Path) -> None:
    """AWS S3 accepts keys with `..` (SeaweedFS refuses them, so moto plays AWS here)."""
    escape = _escape_target()
    with moto_server() as url:
        s3 = boto3.client(
            "s3",
            endpoint_url=url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket="lineage-source")
        s3.put_object(Bucket="lineage-source", Key="src/a/1.png", Body=b"never read")
        hostile = "src/a/" + "../" * 40 + str(escape).lstrip("/")
        s3.put_object(Bucket="lineage-source", Key=hostile, Body=b"planted")
        env = {
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        saved = {k: os.environ.get(k) for k in (*env, "AWS_ENDPOINT_URL_S3")}
        os.environ.update(env)
        os.environ.pop("AWS_ENDPOINT_URL_S3", None)
        try:
            with pytest.raises(SourceError, match="climbs out of its directory") as raised:
                load_source(parse_source("imagefolder:s3://lineage-source/src"), tmp_path / "in")
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    assert "S3 key 'src/a/../" in str(raised.value)
    assert not escape.exists()
