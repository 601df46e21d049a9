"""The embedded stack starts, reports health, and each service does its real job."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import httpx
import mlflow
import pytest
from mlflow.tracking import MlflowClient

from lineage.storage import s3_client
from local.stack import process
from tests.conftest import RunningStack, port_is_free, run_cli

pytestmark = pytest.mark.integration


def git(*args: str, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True
    )
    assert result.returncode == 0, f"git {' '.join(args)} failed: {result.stderr}"
    return result.stdout.strip()


def test_status_json_reports_every_service_healthy(running_stack: RunningStack) -> None:
    result = run_cli("stack", "status", "--json", env=running_stack.env)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["home"] == running_stack.env["LINEAGE_HOME"]
    assert set(status["services"]) == {"git", "s3", "mlflow"}
    for name, service in status["services"].items():
        assert service["healthy"] is True, name
        assert process.is_alive(service["pid"]), name
        assert service["url"].startswith("http://127.0.0.1:")
    assert status["config"]["dvc_remote"] == "s3://lineage-dvc/dvc"
    assert status["config"]["ports"]["git"] == int(running_stack.env["LINEAGE_GIT_PORT"])


def test_up_twice_starts_no_duplicates(running_stack: RunningStack) -> None:
    before = running_stack.stack.status().to_json()["services"]
    result = run_cli("stack", "up", "--json", env=running_stack.env)
    assert result.returncode == 0, result.stderr
    after = json.loads(result.stdout)["services"]
    assert {n: s["pid"] for n, s in after.items()} == {n: s["pid"] for n, s in before.items()}
    assert "already running" in result.stderr


def test_git_server_push_and_clone_branch_and_tag(
    running_stack: RunningStack,
    tmp_path: Path,
    git_identity: dict[str, str],
    git_env: dict[str, str],
) -> None:
    name = f"repo-{uuid.uuid4().hex[:8]}"
    created = run_cli("stack", "repo", name, "--json", env=running_stack.env)
    assert created.returncode == 0, created.stderr
    url = json.loads(created.stdout)["url"]
    assert url == f"{running_stack.settings.git_url}/{name}.git"
    again = run_cli("stack", "repo", name, "--json", env=running_stack.env)
    assert json.loads(again.stdout)["created"] is False

    work = tmp_path / "work"
    work.mkdir()
    git("init", "--quiet", "--initial-branch=main", cwd=work, env=git_identity)
    (work / "data.dvc").write_text("outs:\n- md5: abc.dir\n  path: dataset\n")
    # > 1 MiB so git sends the push body chunked, as it does for real pushes
    (work / "blob.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    git("add", ".", cwd=work, env=git_identity)
    git("commit", "--quiet", "-m", "v1", cwd=work, env=git_identity)
    git("tag", "v1.0-test", cwd=work, env=git_identity)
    commit = git("rev-parse", "HEAD", cwd=work, env=git_identity)
    git("push", "--quiet", url, "main", "--tags", cwd=work, env=git_env)

    remote_refs = git("ls-remote", url, cwd=tmp_path, env=git_identity)
    assert f"{commit}\trefs/heads/main" in remote_refs
    assert f"{commit}\trefs/tags/v1.0-test" in remote_refs

    clone = tmp_path / "clone"
    git(
        "clone",
        "--quiet",
        "--depth",
        "1",
        "--branch",
        "v1.0-test",
        url,
        str(clone),
        cwd=tmp_path,
        env=git_identity,
    )
    assert git("rev-parse", "HEAD", cwd=clone, env=git_identity) == commit
    assert (clone / "blob.bin").read_bytes() == (work / "blob.bin").read_bytes()


def test_git_server_refuses_unknown_repo_and_bad_names(
    running_stack: RunningStack, tmp_path: Path, git_identity: dict[str, str]
) -> None:
    missing = subprocess.run(
        [
            "git",
            "clone",
            f"{running_stack.settings.git_url}/nope-{uuid.uuid4().hex}.git",
            str(tmp_path / "x"),
        ],
        env={**os.environ, **git_identity},
        capture_output=True,
        text=True,
    )
    assert missing.returncode != 0
    bad = run_cli("stack", "repo", "../escape", env=running_stack.env)
    assert bad.returncode != 0
    assert "invalid repository name" in bad.stderr
    assert not (running_stack.settings.home.parent / "escape.git").exists()


def test_s3_store_put_get_list(running_stack: RunningStack) -> None:
    client = s3_client(running_stack.settings)
    # created by `stack up` (ListBuckets hides ownerless buckets on SeaweedFS: ask each one)
    for bucket in ("lineage-dvc", "lineage-mlflow"):
        client.head_bucket(Bucket=bucket)
    key = f"test/{uuid.uuid4().hex}/object.bin"
    payload = os.urandom(300_000)
    client.put_object(Bucket="lineage-dvc", Key=key, Body=payload)
    assert client.get_object(Bucket="lineage-dvc", Key=key)["Body"].read() == payload
    listed = client.list_objects_v2(Bucket="lineage-dvc", Prefix=key.rsplit("/", 1)[0])
    assert [o["Key"] for o in listed.get("Contents", [])] == [key]


def test_mlflow_logs_params_and_proxied_artifacts(
    running_stack: RunningStack, tmp_path: Path
) -> None:
    mlflow.set_tracking_uri(running_stack.settings.mlflow_uri)
    experiment = f"stack-test-{uuid.uuid4().hex[:6]}"
    mlflow.set_experiment(experiment)
    artifact = tmp_path / "manifest.csv"
    artifact.write_text("record_id,label\n1,cat\n")
    with mlflow.start_run() as run:
        mlflow.log_param("data_version", "v1.0")
        mlflow.log_artifact(str(artifact))
    client = MlflowClient(running_stack.settings.mlflow_uri)
    assert client.get_run(run.info.run_id).data.params["data_version"] == "v1.0"
    # Artifacts go through the server to the S3 store: the client needs no S3 credentials.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    downloaded = client.download_artifacts(run.info.run_id, "manifest.csv", str(tmp_path / "dl"))
    assert Path(downloaded).read_text() == artifact.read_text()
    objects = s3_client(running_stack.settings).list_objects_v2(
        Bucket="lineage-mlflow", Prefix="artifacts/"
    )
    assert any(
        o["Key"].endswith(f"{run.info.run_id}/artifacts/manifest.csv")
        for o in objects.get("Contents", [])
    )


def test_restart_keeps_repos_objects_and_runs(
    running_stack: RunningStack,
    tmp_path: Path,
    git_identity: dict[str, str],
    git_env: dict[str, str],
) -> None:
    settings = running_stack.settings
    # git
    name = f"durable-{uuid.uuid4().hex[:6]}"
    url, _ = running_stack.stack.create_repo(name)
    work = tmp_path / "w"
    work.mkdir()
    git("init", "--quiet", "--initial-branch=main", cwd=work, env=git_identity)
    (work / "f.txt").write_text("kept")
    git("add", ".", cwd=work, env=git_identity)
    git("commit", "--quiet", "-m", "c", cwd=work, env=git_identity)
    git("tag", "keep-me", cwd=work, env=git_identity)
    git("push", "--quiet", url, "main", "--tags", cwd=work, env=git_env)
    # s3
    key = f"durable/{uuid.uuid4().hex}"
    s3_client(settings).put_object(Bucket="lineage-dvc", Key=key, Body=b"kept")
    # mlflow
    mlflow.set_tracking_uri(settings.mlflow_uri)
    mlflow.set_experiment("durability")
    with mlflow.start_run() as run:
        mlflow.log_param("kept", "yes")
        mlflow.log_text("kept", "note.txt")

    down = run_cli("stack", "down", env=running_stack.env)
    assert down.returncode == 0, down.stderr
    assert not list((settings.home / "run").glob("*.pid"))
    for port in (settings.git_port, settings.s3_port, settings.mlflow_port):
        assert port_is_free(port), f"port {port} still bound after down"
    stopped = run_cli("stack", "status", "--json", env=running_stack.env)
    assert stopped.returncode != 0
    assert all(s["healthy"] is False for s in json.loads(stopped.stdout)["services"].values())

    up = run_cli("stack", "up", "--json", env=running_stack.env)
    assert up.returncode == 0, up.stderr

    assert "keep-me" in git("ls-remote", "--tags", url, cwd=tmp_path, env=git_identity)
    assert s3_client(settings).get_object(Bucket="lineage-dvc", Key=key)["Body"].read() == b"kept"
    client = MlflowClient(settings.mlflow_uri)
    assert client.get_run(run.info.run_id).data.params["kept"] == "yes"
    assert (
        Path(client.download_artifacts(run.info.run_id, "note.txt", str(tmp_path))).read_text()
        == "kept"
    )
    assert httpx.get(f"{settings.git_url}/health", timeout=5).status_code == 200
