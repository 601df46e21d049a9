"""The embedded stack locks its doors: its own credentials whatever the user's AWS
environment holds, anonymous writes refused by S3, SeaweedFS's internal ports and git, and
MLflow behind basic auth with a warning when bound beyond loopback."""

from __future__ import annotations

import json
import os
import shlex
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from lineage.config import Settings, merge_env
from lineage.errors import LineageError
from lineage.ops.train import TrainOptions, train
from local.stack import LocalStack
from tests.conftest import RunningStack, run_cli, stack_env

pytestmark = pytest.mark.integration

# What a SageMaker user has in their shell: real-looking AWS credentials and a profile.
FOREIGN_AWS = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEXAMPLETOKEN",
    "AWS_PROFILE": "production",
}


def _git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True
    )


def test_anonymous_and_wrongly_signed_s3_requests_are_refused(running_stack: RunningStack) -> None:
    settings = running_stack.settings
    bucket = settings.dvc_bucket
    assert httpx.put(f"{settings.s3_endpoint}/{bucket}/planted", content=b"x").status_code == 403
    assert httpx.get(f"{settings.s3_endpoint}/{bucket}/").status_code == 403
    assert httpx.delete(f"{settings.s3_endpoint}/{bucket}/anything").status_code == 403
    wrong = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id=settings.credentials.s3_access_key,
        aws_secret_access_key="not-the-secret",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        wrong.list_objects_v2(Bucket=bucket)


def test_seaweedfs_internal_ports_cannot_be_written_around_s3(running_stack: RunningStack) -> None:
    """The filer's HTTP port would otherwise take anonymous PUT/GET/DELETE of any object."""
    master, _, volume, _, filer, _, _ = running_stack.settings.seaweed_ports
    base = f"http://127.0.0.1:{filer}"
    assert httpx.post(f"{base}/buckets/lineage-dvc/planted", files={"f": b"x"}).status_code == 401
    assert httpx.get(f"{base}/buckets/lineage-dvc/").status_code == 401
    assert httpx.delete(f"{base}/buckets/lineage-dvc/dvc").status_code == 401
    assigned = httpx.get(f"http://127.0.0.1:{master}/dir/assign").json()
    written = httpx.post(f"http://127.0.0.1:{volume}/{assigned['fid']}", files={"f": b"x"})
    assert written.status_code == 401  # the volume server wants the master's signed JWT


def test_git_pushes_and_repo_creation_need_the_token(
    running_stack: RunningStack, tmp_path: Path, git_identity: dict[str, str]
) -> None:
    settings = running_stack.settings
    name = f"locked-{uuid.uuid4().hex[:6]}"
    refused = httpx.post(f"{settings.git_url}/api/repos/{name}")
    assert refused.status_code == 401 and "git token" in refused.json()["error"]
    created = run_cli("stack", "repo", name, env=running_stack.env)
    assert created.returncode == 0, created.stderr
    url = settings.repo_url(name)

    work = tmp_path / "work"
    bare_env = {**git_identity, "GIT_CONFIG_COUNT": "0", "GIT_TERMINAL_PROMPT": "0"}
    assert _git("clone", "--quiet", url, str(work), env=bare_env).returncode == 0  # reads: open
    _git("commit", "--quiet", "--allow-empty", "-m", "x", cwd=work, env=bare_env)
    pushed = _git("push", "origin", "HEAD:refs/heads/main", cwd=work, env=bare_env)
    assert pushed.returncode != 0  # git asks for credentials it does not have
    assert _git("ls-remote", "--heads", url, env=bare_env).stdout == ""  # nothing landed

    # what a plain git user does: eval "$(lineage stack env)", then push as to any remote
    exported = subprocess.run(
        [
            "bash",
            "-c",
            f'eval "$({run_cli_command()} stack env)" && git push --quiet origin '
            "HEAD:refs/heads/main",
        ],
        cwd=work,
        env={**os.environ, **running_stack.env, **git_identity},
        capture_output=True,
        text=True,
    )
    assert exported.returncode == 0, exported.stderr
    assert "refs/heads/main" in _git("ls-remote", "--heads", url).stdout


def run_cli_command() -> str:
    return f"{shlex.quote(sys.executable)} -m lineage"


def test_stack_files_holding_secrets_are_private(running_stack: RunningStack) -> None:
    home = running_stack.settings.home
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for path in (
        home / "credentials.json",
        home / "run" / "s3-identities.json",
        home / "mlflow" / "mlflow.db",
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def _outside_address() -> str | None:
    """An address of this machine other machines could reach (not loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], str]]:
    """A second stack, bound to a non-loopback address, started by a user whose shell holds
    foreign AWS credentials."""
    address = _outside_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to bind to")
    env = {
        **stack_env(tmp_path_factory.mktemp("exposed") / "home"),
        "LINEAGE_HOST": address,
        **FOREIGN_AWS,
    }
    up = run_cli("stack", "up", "--json", env=env, timeout=400)
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        yield env, up.stderr
    finally:
        run_cli("stack", "down", env=env, timeout=120)


def test_foreign_aws_credentials_do_not_break_the_stack(
    exposed: tuple[dict[str, str], str],
) -> None:
    env, _ = exposed
    status = json.loads(run_cli("stack", "status", "--json", env=env).stdout)
    assert status["healthy"] is True
    # the jobs get the stack's own keys, and not the user's session token and profile
    job_env = merge_env(FOREIGN_AWS, Settings.from_env(env).client_env())
    assert job_env["AWS_ACCESS_KEY_ID"] != FOREIGN_AWS["AWS_ACCESS_KEY_ID"]
    assert "AWS_SESSION_TOKEN" not in job_env and "AWS_PROFILE" not in job_env
    published = run_cli(
        "process",
        "--version",
        "x1",
        "--fraction",
        "0.1",
        "--repo",
        "exposed",
        "--json",
        env=env,
        timeout=600,
    )
    assert published.returncode == 0, published.stderr[-3000:]  # S3, git and MLflow (auth)


def test_binding_beyond_loopback_warns_and_locks_mlflow_and_git_reads(
    exposed: tuple[dict[str, str], str],
) -> None:
    env, said = exposed
    settings = Settings.from_env(env)
    assert f"WARNING: LINEAGE_HOST={settings.host} is not loopback" in said
    assert "patient images" in said and "basic auth" in said
    search = f"{settings.mlflow_uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(search).status_code == 401
    allowed = httpx.get(search, auth=("admin", settings.credentials.mlflow_password))
    assert allowed.status_code == 200
    clone = _git("ls-remote", settings.repo_url("exposed"), env={"GIT_CONFIG_COUNT": "0"})
    assert clone.returncode != 0  # reads need the token too once exposed
    assert httpx.get(f"{settings.s3_endpoint}/{settings.dvc_bucket}/").status_code == 403
    # SeaweedFS's master, volume and filer listen on loopback only
    filer = settings.seaweed_ports[4]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{settings.host}:{filer}/", timeout=3)


def test_stack_up_takes_its_own_keys_not_the_environment(tmp_path: Path) -> None:
    """The credentials are per home and private; a second home gets other ones."""
    one = Settings.from_env({"LINEAGE_HOME": str(tmp_path / "a")}).credentials
    two = Settings.from_env({"LINEAGE_HOME": str(tmp_path / "b")}).credentials
    assert one.s3_access_key != two.s3_access_key and one.git_token != two.git_token
    assert stat.S_IMODE((tmp_path / "a" / "credentials.json").stat().st_mode) == 0o600
    again = Settings.from_env({"LINEAGE_HOME": str(tmp_path / "a"), **FOREIGN_AWS}).credentials
    assert again == one
    assert one.s3_secret_key not in repr(one) and one.git_token not in repr(one)


def test_a_repository_token_lands_in_no_file_argv_or_message(
    running_stack: RunningStack,
) -> None:
    """A dataset repository URL with a token in it: the job gets the token through git's
    environment only. Not in its config files (0600 anyway), not in any process's argv while
    it runs (sampled from /proc), not in the clone's .git/config, the job log or the error."""
    settings = running_stack.settings
    token = f"ghp_{uuid.uuid4().hex}"
    repo = f"secret-{uuid.uuid4().hex[:6]}"
    LocalStack(settings).create_repo(repo)
    url = f"http://lineage:{token}@127.0.0.1:{settings.git_port}/{repo}.git"
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    if token.encode() in cmdline.read_bytes():
                        seen.append(cmdline.read_bytes().decode(errors="replace"))
                except OSError:
                    pass
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with pytest.raises(LineageError) as raised:
            train(settings, TrainOptions(tag="no-such-tag", repo_url=url), stream=False)
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert token not in str(raised.value) and "does not exist" in str(raised.value)
    assert seen == [], seen
    jobs = sorted(
        (settings.home / "jobs").glob("train-no-such-tag-*"), key=lambda p: p.stat().st_mtime
    )
    job = jobs[-1]
    assert stat.S_IMODE(job.stat().st_mode) == 0o700
    for path in job.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    for config in (job / "opt" / "ml" / "input" / "config").glob("*.json"):
        assert stat.S_IMODE(config.stat().st_mode) == 0o600, config
