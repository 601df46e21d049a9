"""Audits that cannot be talked into PASSED: each attack of the audits issue, performed with
write access to one store (the index database, git with the token, the MLflow API) against
the real stack, and the rough edges a user or a hostile client hits."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from processing.sources import synthetic_cxr
from tests.conftest import RunningStack, free_port_block, run_cli
from tests.helpers import ok, wait_http
from tests.integration.conftest import private_registry_env

pytestmark = pytest.mark.integration


@dataclass
class Audited:
    env: dict[str, str]
    home: Path
    repo: str
    name: str
    tag: str
    run_id: str
    processing_run_id: str
    patient: str

    @property
    def ref(self) -> str:
        return f"{self.name}/1"


@pytest.fixture(scope="module")
def audited(
    running_stack: RunningStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Audited]:
    """A record-pattern model on its own consent registry and index."""
    home = tmp_path_factory.mktemp("audits")
    env = {**private_registry_env(running_stack, home), "LINEAGE_INDEX_VERIFY_INTERVAL": "3600"}
    cohort = home / "cohort"
    cohort.mkdir()
    (cohort / "registry.csv").write_text(synthetic_cxr.registry_csv())
    ok(run_cli("consent", "import", str(cohort / "registry.csv"), "--json", env=env))
    repo = f"audits-{uuid.uuid4().hex[:6]}"
    made = ok(
        run_cli(
            *("pipeline", "--version", "a1", "--fraction", "0.3", "--epochs", "1"),
            *("--pattern", "record", "--source", "synthetic-cxr", "--repo", repo),
            *("--model-name", repo, "--json"),
            env=env,
            timeout=900,
        )
    )
    training = made["training"]
    client = MlflowClient(running_stack.settings.mlflow_uri)
    manifest = client.download_artifacts(training["run_id"], "manifest.csv", str(home))
    patient = Path(manifest).read_text().splitlines()[1].split(",")[0]
    yield Audited(
        env,
        home,
        repo,
        repo,
        training["dvc_tag"],
        training["run_id"],
        made["processing"]["mlflow_run_id"],
        patient,
    )


# -- 1. the index proves its rows ---------------------------------------------------------------


def test_rows_deleted_from_the_index_stop_every_indexed_answer(audited: Audited) -> None:
    env = audited.env
    before = ok(run_cli("audit", "record", audited.patient, "--json", env=env))
    assert before["models"], before
    with sqlite3.connect(audited.home / "index.db") as connection:
        connection.execute("DELETE FROM idx_records WHERE patient_id = ?", (audited.patient,))
    try:
        for command in (
            ("audit", "record", audited.patient),
            ("impact", audited.patient),
            ("audit", "excluded", audited.patient),
        ):
            out = run_cli(*command, env=env)
            assert out.returncode != 0, command
            assert "the lineage index disagrees with the manifests" in out.stderr, command
            assert "PASSED" not in out.stdout
        verified = run_cli("index", "verify", "--json", env=env, timeout=600)
        assert verified.returncode == 1
        (mismatch,) = json.loads(verified.stdout)["mismatches"]
        assert mismatch.startswith(f"{audited.tag}: ") and "manifest rows missing" in mismatch
        # the count in the dataset's row edited to match: the rows against the manifest still
        with sqlite3.connect(audited.home / "index.db") as connection:
            counted = connection.execute("SELECT count(*) FROM idx_records").fetchone()[0]
            connection.execute("UPDATE idx_datasets SET records = ?", (counted,))
        assert run_cli("index", "verify", env=env, timeout=600).returncode == 1
        for stale in audited.home.parent.rglob("index-verified-*.json"):
            stale.unlink()
        out = run_cli("audit", "record", audited.patient, env=env, timeout=600)
        assert out.returncode != 0 and "disagrees" in out.stderr
    finally:
        ok(run_cli("index", "rebuild", "--json", env=env, timeout=600))
    assert ok(run_cli("audit", "record", audited.patient, "--json", env=env)) == before


# -- 3. tags cannot be shadowed -------------------------------------------------------------------


def test_a_branch_cannot_shadow_a_dataset_tag(
    running_stack: RunningStack,
    audited: Audited,
    tmp_path: Path,
    git_identity: dict[str, str],
    git_env: dict[str, str],
) -> None:
    url = running_stack.settings.repo_url(audited.repo)
    work = tmp_path / "work"
    env = {**os.environ, **git_identity, **git_env}
    subprocess.run(["git", "clone", "--quiet", url, str(work)], env=env, check=True)
    subprocess.run(
        ["git", "commit", "--quiet", "--allow-empty", "-m", "other data"], cwd=work, env=env,
        check=True,
    )  # fmt: skip
    for name in (audited.tag, "v9.9-20991231T235959Z-abcdef"):
        pushed = subprocess.run(
            ["git", "push", "origin", f"HEAD:refs/heads/{name}"],
            cwd=work, env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert pushed.returncode != 0, name
        assert "refused" in pushed.stderr and "tag" in pushed.stderr
    verified = ok(run_cli("verify", "--tag", audited.tag, "--repo", audited.repo, "--json",
                          env=audited.env, timeout=600))  # fmt: skip
    assert verified["ok"]
    for bogus in ("main", "HEAD", "never-published"):
        out = run_cli("verify", "--tag", bogus, "--repo", audited.repo, env=audited.env)
        assert out.returncode != 0 and f"tag {bogus} does not exist" in out.stderr


# -- 4. a failed processing run publishes nothing a later run trains on ------------------------


def test_a_tag_whose_processing_run_did_not_finish_is_never_trained_on(
    running_stack: RunningStack, audited: Audited
) -> None:
    client = MlflowClient(running_stack.settings.mlflow_uri)
    client.set_terminated(audited.processing_run_id, status="FAILED")
    try:
        out = run_cli(
            *("train", "--tag", audited.tag, "--repo", audited.repo, "--epochs", "1"),
            *("--model-name", f"{audited.name}-x"),
            env=audited.env,
            timeout=600,
        )
        assert out.returncode != 0
        assert f"the processing run that published {audited.tag}" in out.stderr
        assert "did not finish" in out.stderr
    finally:
        client.set_terminated(audited.processing_run_id, status="FINISHED")


# -- 5. metrics and run state are part of the chain ---------------------------------------------


def test_a_metric_changed_after_training_or_a_deleted_run_fails_trace_and_compare(
    running_stack: RunningStack, audited: Audited
) -> None:
    client = MlflowClient(running_stack.settings.mlflow_uri)
    original = client.get_run(audited.run_id).data.metrics["test_accuracy"]
    client.log_metric(audited.run_id, "test_accuracy", 0.999, timestamp=int(time.time() * 1000))
    try:
        traced = run_cli("trace", "--model", audited.ref, "--json", env=audited.env)
        assert traced.returncode == 1
        failed = {
            c["name"]: c["detail"] for c in json.loads(traced.stdout)["checks"] if not c["ok"]
        }
        assert list(failed) == ["signed metrics"]
        assert "test_accuracy: the run shows 0.999" in failed["signed metrics"]
        assert json.loads(traced.stdout)["run"]["metrics"]["test_accuracy"] == original
        compared = run_cli("compare", "--model", audited.ref, "--model", audited.ref, "--json",
                           env=audited.env)  # fmt: skip
        assert compared.returncode == 1 and json.loads(compared.stdout)["disagreements"]
    finally:
        client.log_metric(
            audited.run_id, "test_accuracy", original, timestamp=int(time.time() * 1000) + 1000
        )
    assert run_cli("trace", "--model", audited.ref, env=audited.env).returncode == 0

    client.delete_run(audited.run_id)
    try:
        traced = run_cli("trace", "--model", audited.ref, "--json", env=audited.env)
        assert traced.returncode == 1
        failed = {
            c["name"]: c["detail"] for c in json.loads(traced.stdout)["checks"] if not c["ok"]
        }
        assert "run lifecycle" in failed and "deleted" in failed["run lifecycle"]
        port = str(free_port_block(1))
        deployed = run_cli("deploy", "--model", audited.ref, "--port", port, env=audited.env)
        assert deployed.returncode != 0 and "run lifecycle" in deployed.stderr
    finally:
        client.restore_run(audited.run_id)


# -- 7. rough edges ----------------------------------------------------------------------------


def test_everything_under_the_home_is_private(
    running_stack: RunningStack, audited: Audited
) -> None:
    home = running_stack.settings.home
    for name in ("jobs", "keys", "tlog-heads", "logs", "run"):
        path = home / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    logs = [*(home / "jobs").rglob("job.log"), *(home / "logs").glob("*.log")]
    assert logs
    for log in logs:
        assert stat.S_IMODE(log.stat().st_mode) & 0o077 == 0, log


def test_the_git_server_closes_idle_and_half_sent_connections(tmp_path: Path) -> None:
    port = free_port_block(1)
    server = subprocess.Popen(
        [sys.executable, "-m", "local.gitserver", "--root", str(tmp_path), "--port", str(port),
         "--idle-timeout", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/health", alive=lambda: server.poll() is None)
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        half = socket.create_connection(("127.0.0.1", port))
        half.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finished
        deadline = time.monotonic() + 15
        for conn in [*idle, half]:
            conn.settimeout(max(0.1, deadline - time.monotonic()))
            assert conn.recv(1024) == b""  # closed by the server (a timeout here: not closed)
            conn.close()
        import httpx

        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
