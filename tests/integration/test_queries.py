"""The dataset-level questions against a real demo run: trace, reproduce, verify, compare.

Every answer is checked against what git, DVC and MLflow say when asked directly, and every
kind of damage (deleted object, changed object, deleted tag, missing artifact, swapped model)
must make the answer fail, naming what is wrong.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from lineage import manifest
from lineage.gitops import dvc_out_md5
from lineage.hashing import bytes_sha256, file_md5
from lineage.storage import s3_client
from tests.conftest import RunningStack, run_cli
from tests.helpers import checkout_with_plain_dvc, ok, remote_refs
from tests.integration.conftest import DemoRun, demo_run

pytestmark = pytest.mark.integration


class Demo(DemoRun):
    @property
    def endpoint(self) -> str:
        return str(self.result["endpoint"]["endpoint"])


@pytest.fixture(scope="module")
def demo(running_stack: RunningStack) -> Iterator[Demo]:
    repo = f"demo-{uuid.uuid4().hex[:6]}"
    name = f"digits-{repo}"
    with demo_run(running_stack.env, repo, name, "--fractions", "0.1,0.2") as (port, result):
        yield Demo(running_stack.env, repo, name, port, result)


def query(stack: RunningStack, *args: str, timeout: float = 300) -> dict[str, Any]:
    return ok(run_cli(*args, "--json", env=stack.env, timeout=timeout))


def test_demo_runs_the_whole_scenario(demo: Demo) -> None:
    result = demo.result
    steps = [step["name"] for step in result["steps"]]
    assert steps[0] == "stack up" and len(steps) == 11
    assert all(step["seconds"] >= 0 for step in result["steps"])
    assert result["fractions"] == [0.1, 0.2]
    v1, v2 = (result["versions"][v]["training"] for v in ("v1.0", "v2.0"))
    better = max((v1, v2), key=lambda t: (t["metrics"]["best_val_accuracy"], t is v2))
    assert result["champion"]["version"] == better["model_version"]
    assert "validation accuracy" in result["champion"]["reason"]
    assert result["predictions"] and all(
        p["model"] == f"{demo.name}/{better['model_version']}" for p in result["predictions"]
    )
    assert result["trace"]["ok"] and result["reproduction"]["ok"]
    # the demo ends as an auditor would: the champion's bundle, verified in another process
    # with an empty home (and no network where unshare -n works)
    evidence = result["evidence"]
    assert steps[-1].startswith("verify the bundle offline") and evidence["ok"], evidence
    assert {c["name"] for c in evidence["checks"]} >= {"tree head", "model provenance"}


def test_trace_gives_one_chain_from_every_starting_point(
    running_stack: RunningStack, demo: Demo, tmp_path: Path
) -> None:
    champion = demo.result["champion"]["version"]
    run_id = next(
        v["training"]["run_id"]
        for v in demo.result["versions"].values()
        if v["training"]["model_version"] == champion
    )
    traces = [
        query(running_stack, "trace", "--endpoint", demo.endpoint),
        query(running_stack, "trace", "--model", f"{demo.name}@champion"),
        query(running_stack, "trace", "--model", f"{demo.name}/{champion}"),
        query(running_stack, "trace", "--run", run_id),
    ]
    for answer in traces:
        assert answer["ok"], [c for c in answer["checks"] if not c["ok"]]
        assert answer["data"] == traces[0]["data"]
        assert answer["run"] == traces[0]["run"]
        assert answer["model"] == {
            "name": demo.name,
            "version": champion,
            "aliases": ["champion"],
        }
    assert any(c["name"] == "endpoint weights" and c["ok"] for c in traces[0]["checks"])

    # ... and that chain is what git, DVC and MLflow say when asked directly.
    data = traces[0]["data"]
    url = running_stack.settings.repo_url(demo.repo)
    assert remote_refs(url)[f"refs/tags/{data['tag']}^{{}}"] == data["commit"]
    dataset = checkout_with_plain_dvc(running_stack, url, data["tag"], tmp_path / "c")
    md5, nfiles, size = dvc_out_md5(dataset.parent / "dataset.dvc")
    assert (data["dataset_md5"], data["nfiles"], data["size_bytes"]) == (md5, nfiles, size)
    assert data["manifest_sha256"] == bytes_sha256((dataset / manifest.MANIFEST_NAME).read_bytes())
    rows = manifest.read(dataset / manifest.MANIFEST_NAME)
    assert data["records"] == {s: sum(r.split == s for r in rows) for s in manifest.SPLITS}
    client = MlflowClient(running_stack.settings.mlflow_uri)
    version = client.get_model_version(demo.name, champion)
    assert version.run_id and version.run_id == traces[0]["run"]["run_id"]
    assert client.get_run(version.run_id).data.params["data_git_commit_id"] == data["commit"]


def test_reproduce_restores_the_data_and_retraining_gives_equal_metrics(
    running_stack: RunningStack, demo: Demo, tmp_path: Path
) -> None:
    keep = tmp_path / "checkout"
    answer = query(
        running_stack,
        "reproduce",
        "--model",
        demo.ref("v1.0"),
        "--retrain",
        "--dir",
        str(keep),
        timeout=900,
    )
    assert answer["ok"], answer["checks"]
    assert answer["files_verified"] == sum(
        demo.result["versions"]["v1.0"]["processing"]["counts"].values()
    )
    metrics = {m["name"]: m for m in answer["retraining"]["metrics"]}
    assert set(metrics) >= {"val_accuracy", "train_loss", "test_accuracy"}
    assert all(m["ok"] and m["original"] == m["reproduced"] for m in metrics.values())
    # the checkout is the tagged commit with every file of the manifest
    rows = manifest.read(keep / "dataset" / manifest.MANIFEST_NAME)
    assert manifest.verify_files(keep / "dataset", rows) == []
    # the retrain is recorded as such, and registers nothing
    client = MlflowClient(running_stack.settings.mlflow_uri)
    rerun = client.get_run(answer["retraining"]["run_id"])
    assert rerun.data.tags["lineage.reproduces"] == answer["run_id"]
    versions = client.search_model_versions(f"name = '{demo.name}'")
    assert len(versions) == 2


def test_verify_reads_every_object(running_stack: RunningStack, demo: Demo) -> None:
    by_model = query(running_stack, "verify", "--model", demo.ref("v2.0"))
    assert by_model["ok"] and by_model["problems"] == []
    assert by_model["checked"] == by_model["nfiles"] > 0
    by_tag = query(running_stack, "verify", "--tag", demo.tag("v2.0"), "--repo", demo.repo)
    assert by_tag["dataset_md5"] == by_model["dataset_md5"] and by_tag["ok"]


def test_compare_lists_exactly_the_added_records(
    running_stack: RunningStack, demo: Demo, tmp_path: Path
) -> None:
    answer = query(
        running_stack, "compare", "--model", demo.ref("v1.0"), "--model", demo.ref("v2.0")
    )
    url = running_stack.settings.repo_url(demo.repo)
    ids = {}
    for version in ("v1.0", "v2.0"):
        dataset = checkout_with_plain_dvc(running_stack, url, demo.tag(version), tmp_path / version)
        ids[version] = {r.record_id for r in manifest.read(dataset / manifest.MANIFEST_NAME)}
    added = {r["record_id"] for r in answer["records"]["added"]}
    assert added == ids["v2.0"] - ids["v1.0"] and added
    assert answer["records"]["removed"] == [] and answer["records"]["changed"] == []
    assert answer["records"]["common"] == len(ids["v1.0"])
    assert answer["a"]["counts"]["train"] < answer["b"]["counts"]["train"]
    assert "same hyperparameters" in answer["summary"]


# -- damage must be found and named --------------------------------------------------------------


@dataclass
class Unique:
    """A model trained on images no other test shares, so damaging them harms no one else."""

    repo: str
    ref: str
    tag: str
    run_id: str
    dataset: Path


@pytest.fixture(scope="module")
def unique(running_stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Unique:
    root = tmp_path_factory.mktemp("unique") / "images"
    rng = np.random.default_rng(int(uuid.uuid4().int % 2**32))
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(12):
            pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    repo = f"damage-{uuid.uuid4().hex[:6]}"
    made = query(
        running_stack,
        "pipeline",
        "--version",
        "d1",
        "--fraction",
        "1.0",
        "--source",
        f"imagefolder:{root}",
        "--epochs",
        "1",
        "--repo",
        repo,
        "--model-name",
        repo,
        timeout=900,
    )
    training = made["training"]
    dataset = checkout_with_plain_dvc(
        running_stack,
        running_stack.settings.repo_url(repo),
        training["dvc_tag"],
        tmp_path_factory.mktemp("checkout") / "c",
    )
    return Unique(
        repo,
        f"{repo}/{training['model_version']}",
        training["dvc_tag"],
        training["run_id"],
        dataset,
    )


def _object_key(path: Path) -> str:
    md5 = file_md5(path)
    return f"dvc/files/md5/{md5[:2]}/{md5[2:]}"


def test_deleted_and_changed_objects_are_named(
    running_stack: RunningStack, unique: Unique, tmp_path: Path
) -> None:
    rows = [r for r in manifest.read(unique.dataset / manifest.MANIFEST_NAME) if r.split != "test"]
    deleted, changed = rows[0], rows[1]
    s3 = s3_client(running_stack.settings)
    bucket = running_stack.settings.dvc_bucket
    s3.delete_object(Bucket=bucket, Key=_object_key(unique.dataset / deleted.file_path))
    s3.put_object(
        Bucket=bucket,
        Key=_object_key(unique.dataset / changed.file_path),
        Body=b"not the original bytes",
    )
    verified = run_cli("verify", "--model", unique.ref, "--json", env=running_stack.env)
    assert verified.returncode == 1
    problems = {p["relpath"]: p["problem"] for p in json.loads(verified.stdout)["problems"]}
    assert problems[deleted.file_path] == "missing"
    assert problems[changed.file_path].startswith("changed")
    assert len(problems) == 2

    reproduced = run_cli("reproduce", "--model", unique.ref, env=running_stack.env, timeout=600)
    assert reproduced.returncode != 0
    assert deleted.file_path in reproduced.stderr and changed.file_path in reproduced.stderr


def test_deleted_tag_breaks_the_trace(running_stack: RunningStack, unique: Unique) -> None:
    """The git server refuses to delete a tag (test_integrity); someone with write access to
    the bare repository on disk can still do it, and the trace then stops there."""
    assert query(running_stack, "trace", "--model", unique.ref)["ok"]
    bare = running_stack.settings.home / "git" / f"{unique.repo}.git"
    ref = f"refs/tags/{unique.tag}"
    git_dir = ["git", "--git-dir", str(bare)]
    original = subprocess.run(
        [*git_dir, "rev-parse", ref], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run([*git_dir, "update-ref", "-d", ref], check=True)
    try:
        traced = run_cli("trace", "--model", unique.ref, env=running_stack.env)
        assert traced.returncode != 0
        assert f"tag {unique.tag} does not exist" in traced.stderr
        assert traced.stdout == ""  # nothing that looks like a chain
    finally:
        subprocess.run([*git_dir, "update-ref", ref, original], check=True)


def test_missing_manifest_artifact_and_mlflow_down_fail_closed(
    running_stack: RunningStack, demo: Demo
) -> None:
    down = run_cli(
        "trace",
        "--model",
        demo.ref("v1.0"),
        env={**running_stack.env, "LINEAGE_MLFLOW_URI": "http://127.0.0.1:9"},
    )
    assert down.returncode != 0 and "unreachable" in down.stderr

    run = MlflowClient(running_stack.settings.mlflow_uri).get_run(
        demo.result["versions"]["v1.0"]["training"]["run_id"]
    )
    # proxied artifacts: mlflow-artifacts:/<exp>/<run>/artifacts -> s3://<bucket>/artifacts/...
    root = run.info.artifact_uri.removeprefix("mlflow-artifacts:/")
    key = f"artifacts/{root}/{manifest.MANIFEST_NAME}"
    s3 = s3_client(running_stack.settings)
    bucket = running_stack.settings.mlflow_bucket
    saved = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.delete_object(Bucket=bucket, Key=key)
    try:
        for command in (("trace", "--model"), ("compare", "--model", demo.ref("v2.0"), "--model")):
            out = run_cli(*command, demo.ref("v1.0"), env=running_stack.env)
            assert out.returncode != 0, command
            assert "manifest.csv" in out.stderr and "cannot be read" in out.stderr
    finally:
        s3.put_object(Bucket=bucket, Key=key, Body=saved)
