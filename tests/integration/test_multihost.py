"""One training job on two hosts (the process runtime: two processes, each with its own
/opt/ml, meeting over loopback as SageMaker's instances meet over their network): one MLflow
run, one registered version, the same metrics on a rerun, and a host killed mid-epoch fails
the whole job within a bound, registering nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO_ROOT, RunningStack, run_cli
from tests.integration.conftest import run_pipeline

pytestmark = pytest.mark.integration

# A job whose host dies must fail within this: the survivor's next collective breaks at once,
# naming the host takes a few heartbeats, the MLflow run is ended FAILED.
KILL_BOUND_S = 90


def _runs(client: MlflowClient, model_name: str) -> list[object]:
    experiment = client.get_experiment_by_name("model-lineage")
    assert experiment is not None
    return list(
        client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.model_name = '{model_name}'"
        )
    )


def test_two_hosts_train_one_model_with_one_run_one_version_and_reproducible_metrics(
    running_stack: RunningStack,
) -> None:
    repo = f"mh-{uuid.uuid4().hex[:6]}"
    name = f"digits-{repo}"
    env = {**running_stack.env}
    result = run_pipeline(running_stack, repo, name, epochs=2, fraction=0.2, env=env, hosts=2)
    training = result["training"]
    assert training["world_size"] == 2 and training["hosts"] == ["algo-1", "algo-2"]

    client = MlflowClient(running_stack.settings.mlflow_uri)
    runs = _runs(client, name)
    assert len(runs) == 1  # the follower logged nothing
    versions = client.search_model_versions(f"name = '{name}'")
    assert [v.version for v in versions] == ["1"]
    params = client.get_run(training["run_id"]).data.params
    assert (params["world_size"], params["instance_count"], params["hosts"]) == (
        "2",
        "2",
        "algo-1,algo-2",
    )

    job_dir = Path(training["model_artifact"]).parent.parent
    assert not any((job_dir / "algo-2" / "opt" / "ml" / "model").iterdir())
    with tarfile.open(training["model_artifact"]) as archive:
        member = archive.extractfile("lineage.json")
        assert member is not None
        lineage = json.loads(member.read())
    assert (lineage["world_size"], lineage["hosts"]) == (2, ["algo-1", "algo-2"])

    traced = run_cli("trace", "--model", f"{name}/1", "--json", env=env)
    assert traced.returncode == 0, traced.stdout[-2000:] + traced.stderr[-2000:]

    # the same seed on the same two hosts: the same numbers, epoch by epoch
    again = run_cli(
        "reproduce", "--model", f"{name}/1", "--retrain", "--json", env=env, timeout=900
    )
    assert again.returncode == 0, again.stderr[-3000:]
    retraining = json.loads(again.stdout)["retraining"]
    assert retraining["ok"], retraining
    assert client.get_run(retraining["run_id"]).data.params["world_size"] == "2"
    assert [v.version for v in client.search_model_versions(f"name = '{name}'")] == ["1"]


def _host_pid(job_root: Path, host: str) -> int | None:
    """The process of one host of a local multi-host job (its /opt/ml is its own)."""
    marker = f"SAGEMAKER_BASE_DIR={job_root}/{host}/opt/ml".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ:
            return int(proc.name)
    return None


def test_a_host_killed_mid_epoch_fails_the_job_within_the_bound_and_registers_nothing(
    running_stack: RunningStack,
) -> None:
    repo = f"mhk-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, **running_stack.env}
    published = run_cli(
        "process", "--version", "k1", "--fraction", "0.2", "--repo", repo, "--json", env=env
    )
    assert published.returncode == 0, published.stderr[-2000:]
    tag = json.loads(published.stdout)["tag"]
    jobs = running_stack.settings.home / "jobs"
    before = set(jobs.iterdir()) if jobs.exists() else set()
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lineage",
            "train",
            "--tag",
            tag,
            "--repo",
            repo,
            "--epochs",
            "30",
            "--model-name",
            repo,
            "--instance-count",
            "2",
        ],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600
        job_root = None
        while time.monotonic() < deadline and job.poll() is None:
            new = [d for d in jobs.iterdir() if d not in before] if jobs.exists() else []
            log = new[0] / "algo-1" / "job.log" if new else None
            if log is not None and log.exists() and "epoch=1 " in log.read_text():
                job_root = new[0]
                break
            time.sleep(0.5)
        assert job_root is not None, "the job never finished its first epoch"
        pid = _host_pid(job_root, "algo-2")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # mid-epoch 2, as a lost instance
        killed_at = time.monotonic()
        _, stderr = job.communicate(timeout=600)
        ended = time.monotonic()
    finally:
        if job.poll() is None:
            job.kill()
    print(f"2-host job failed {ended - killed_at:.1f}s after algo-2 was killed")
    assert ended - killed_at < KILL_BOUND_S
    assert job.returncode != 0
    assert "host algo-2: killed by signal 9 (SIGKILL)" in stderr
    assert "host algo-1: host algo-2 stopped answering during training" in stderr
    failure = (job_root / "algo-1" / "opt" / "ml" / "output" / "failure").read_text()
    assert "host algo-2" in failure  # the leader names the host that broke
    client = MlflowClient(running_stack.settings.mlflow_uri)
    assert client.search_model_versions(f"name = '{repo}'") == []
    runs = _runs(client, repo)
    assert len(runs) == 1 and runs[0].info.status == "FAILED"  # type: ignore[attr-defined]
