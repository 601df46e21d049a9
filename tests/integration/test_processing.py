"""`lineage process` against the real stack: DVC-versioned datasets a plain DVC CLI can pull."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from lineage import manifest
from lineage.config import Settings
from lineage.hashing import bytes_sha256, file_md5
from lineage.ops.process import ProcessOptions, build_spec
from lineage.storage import s3_client
from local.runner import run_processing
from tests.conftest import REPO_ROOT, RunningStack, run_cli
from tests.helpers import checkout_with_plain_dvc, ok, remote_refs

pytestmark = pytest.mark.integration


def process_cli(
    stack: RunningStack, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli("process", *args, "--json", env={**stack.env, **(env or {})}, timeout=600)


def dvc_objects(settings: Settings) -> set[str]:
    client = s3_client(settings)
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=settings.dvc_bucket, Prefix="dvc/"
    ):
        keys.update(obj["Key"] for obj in page.get("Contents", []))
    return keys


@dataclass
class TwoVersions:
    repo: str
    url: str
    v1: dict[str, Any]
    v2: dict[str, Any]
    objects_before_v2: set[str]
    objects_after_v2: set[str]


@pytest.fixture(scope="module")
def two_versions(running_stack: RunningStack) -> TwoVersions:
    repo = f"datasets-{uuid.uuid4().hex[:6]}"
    v1 = ok(process_cli(running_stack, "--version", "v1.0", "--fraction", "0.05", "--repo", repo))
    before = dvc_objects(running_stack.settings)
    v2 = ok(process_cli(running_stack, "--version", "v2.0", "--fraction", "0.10", "--repo", repo))
    after = dvc_objects(running_stack.settings)
    return TwoVersions(repo, running_stack.settings.repo_url(repo), v1, v2, before, after)


def test_result_names_tag_commit_md5_and_counts(two_versions: TwoVersions) -> None:
    v1 = two_versions.v1
    assert v1["tag"].startswith("v1.0-") and len(v1["commit"]) == 40
    assert v1["dataset_md5"].endswith(".dir")
    assert v1["reused_commit"] is False
    assert set(v1["counts"]) == {"train", "val", "test"} and v1["counts"]["val"] > 0
    assert v1["dvc_repo_url"] == two_versions.url


def test_tags_on_the_git_server_point_at_the_reported_commits(two_versions: TwoVersions) -> None:
    refs = remote_refs(two_versions.url)
    for version in (two_versions.v1, two_versions.v2):
        # annotated tag: the peeled ref names the commit
        assert refs[f"refs/tags/{version['tag']}^{{}}"] == version["commit"]
    assert refs["refs/heads/main"] == two_versions.v2["commit"]


@pytest.mark.parametrize("which", ["v1", "v2"])
def test_plain_dvc_pull_gives_exactly_the_manifest_files(
    running_stack: RunningStack, two_versions: TwoVersions, tmp_path: Path, which: str
) -> None:
    version = getattr(two_versions, which)
    dataset = checkout_with_plain_dvc(running_stack, two_versions.url, version["tag"], tmp_path)
    rows = manifest.read(dataset / manifest.MANIFEST_NAME)
    on_disk = {p.relative_to(dataset).as_posix() for p in dataset.rglob("*") if p.is_file()}
    assert on_disk == {r.file_path for r in rows} | {manifest.MANIFEST_NAME}
    assert manifest.verify_files(dataset, rows) == []
    assert Counter(r.split for r in rows) == Counter(version["counts"])
    assert version["manifest_sha256"] == bytes_sha256(
        (dataset / manifest.MANIFEST_NAME).read_bytes()
    )


def test_versions_nest_and_stay_stratified(
    running_stack: RunningStack, two_versions: TwoVersions, tmp_path: Path
) -> None:
    d1 = checkout_with_plain_dvc(
        running_stack, two_versions.url, two_versions.v1["tag"], tmp_path / "v1"
    )
    d2 = checkout_with_plain_dvc(
        running_stack, two_versions.url, two_versions.v2["tag"], tmp_path / "v2"
    )
    rows1 = manifest.read(d1 / manifest.MANIFEST_NAME)
    rows2 = manifest.read(d2 / manifest.MANIFEST_NAME)
    ids1 = {r.record_id for r in rows1}
    ids2 = {r.record_id for r in rows2}
    assert ids1 < ids2
    # same test split in both versions
    assert {r.record_id for r in rows1 if r.split == "test"} == {
        r.record_id for r in rows2 if r.split == "test"
    }
    from sklearn.datasets import load_digits

    per_class = Counter(str(int(t)) for t in load_digits().target)
    tested = Counter(r.label for r in rows1 if r.split == "test")
    for rows, fraction in ((rows1, 0.05), (rows2, 0.10)):
        sampled = Counter(r.label for r in rows if r.split != "test")
        for label, total in per_class.items():
            pool = total - tested[label]
            assert abs(sampled[label] - fraction * pool) <= 1, (label, fraction)


def test_v2_uploads_only_new_objects(
    running_stack: RunningStack, two_versions: TwoVersions, tmp_path: Path
) -> None:
    d2 = checkout_with_plain_dvc(running_stack, two_versions.url, two_versions.v2["tag"], tmp_path)
    d1_rows = {
        r.file_path
        for r in manifest.read(
            checkout_with_plain_dvc(
                running_stack, two_versions.url, two_versions.v1["tag"], tmp_path / "v1"
            )
            / manifest.MANIFEST_NAME
        )
    }

    def key(md5: str) -> str:
        return f"dvc/files/md5/{md5[:2]}/{md5[2:]}"

    v2_keys = {key(file_md5(p)) for p in d2.rglob("*") if p.is_file()}
    v2_keys.add(key(two_versions.v2["dataset_md5"]))
    added = two_versions.objects_after_v2 - two_versions.objects_before_v2
    assert added == v2_keys - two_versions.objects_before_v2
    # every file v1 already had was not uploaded again
    shared = {key(file_md5(d2 / f)) for f in d1_rows}
    assert not added & shared
    assert len(added) < len(v2_keys)


def test_identical_rerun_reuses_the_commit(
    running_stack: RunningStack, two_versions: TwoVersions
) -> None:
    again = ok(
        process_cli(
            running_stack, "--version", "v2.0", "--fraction", "0.10", "--repo", two_versions.repo
        )
    )
    assert again["reused_commit"] is True
    assert again["commit"] == two_versions.v2["commit"]
    assert again["dataset_md5"] == two_versions.v2["dataset_md5"]
    assert again["tag"] != two_versions.v2["tag"]
    assert remote_refs(two_versions.url)["refs/heads/main"] == two_versions.v2["commit"]


def test_reusing_a_tag_name_fails_and_changes_nothing(
    running_stack: RunningStack, two_versions: TwoVersions
) -> None:
    before_refs = remote_refs(two_versions.url)
    before_objects = dvc_objects(running_stack.settings)
    result = process_cli(
        running_stack,
        "--version",
        "v3.0",
        "--fraction",
        "0.2",
        "--repo",
        two_versions.repo,
        "--pipeline-run-id",
        two_versions.v1["tag"],
    )
    assert result.returncode != 0
    assert f"tag {two_versions.v1['tag']} already exists" in result.stderr
    assert remote_refs(two_versions.url) == before_refs
    assert dvc_objects(running_stack.settings) == before_objects


def test_processing_run_is_logged_to_mlflow(
    running_stack: RunningStack, two_versions: TwoVersions
) -> None:
    run = MlflowClient(running_stack.settings.mlflow_uri).get_run(two_versions.v1["mlflow_run_id"])
    params = run.data.params
    assert run.data.tags["lineage.stage"] == "processing"
    assert params["data_git_commit_id"] == two_versions.v1["commit"]
    assert params["dvc_tag"] == two_versions.v1["tag"]
    assert params["dataset_md5"] == two_versions.v1["dataset_md5"]
    assert params["manifest_sha256"] == two_versions.v1["manifest_sha256"]
    assert params["data_fraction"] == "0.05" and params["source"] == "digits"
    assert params["count_train"] == str(two_versions.v1["counts"]["train"])


def test_concurrent_publishers_both_land(running_stack: RunningStack) -> None:
    repo = f"concurrent-{uuid.uuid4().hex[:6]}"
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(
            pool.map(
                lambda args: process_cli(running_stack, *args, "--repo", repo),
                [
                    ("--version", "a1", "--fraction", "0.05"),
                    ("--version", "b1", "--fraction", "0.08"),
                ],
            )
        )
    a, b = (ok(r) for r in results)
    refs = remote_refs(running_stack.settings.repo_url(repo))
    assert refs[f"refs/tags/{a['tag']}^{{}}"] == a["commit"]
    assert refs[f"refs/tags/{b['tag']}^{{}}"] == b["commit"]
    assert a["commit"] != b["commit"]
    assert refs["refs/heads/main"] in (a["commit"], b["commit"])
    log = subprocess.run(
        ["git", "rev-list", "refs/heads/main"],
        capture_output=True,
        text=True,
        cwd=running_stack.settings.home / "git" / f"{repo}.git",
        check=True,
    )
    assert {a["commit"], b["commit"]} <= set(log.stdout.split())


def test_s3_unreachable_during_push_fails_without_a_tag(running_stack: RunningStack) -> None:
    repo = f"nos3-{uuid.uuid4().hex[:6]}"
    tag = f"nos3-{uuid.uuid4().hex[:6]}"
    result = process_cli(
        running_stack,
        "--version",
        "v1.0",
        "--fraction",
        "0.05",
        "--repo",
        repo,
        "--pipeline-run-id",
        tag,
        env={"LINEAGE_S3_ENDPOINT": "http://127.0.0.1:9"},
    )
    assert result.returncode != 0
    assert "dvc push" in result.stderr and "no tag was pushed" in result.stderr
    assert f"refs/tags/{tag}" not in remote_refs(running_stack.settings.repo_url(repo))
    messages = list((running_stack.settings.home / "jobs").glob("*/opt/ml/output/message"))
    assert any("dvc push" in m.read_text() for m in messages)


def test_git_server_unreachable_fails_with_message(
    running_stack: RunningStack, tmp_path: Path
) -> None:
    settings = running_stack.settings
    spec = build_spec(
        settings, ProcessOptions(version="v1.0", fraction=0.05), "http://127.0.0.1:9/datasets.git"
    )
    outcome = run_processing(
        spec, jobs_root=tmp_path, runtime_env=settings.client_env(), stream=False
    )
    assert outcome.status == "Failed" and outcome.exit_code != 0
    assert "cannot clone the dataset repository" in outcome.message
    assert (outcome.base_dir / "output" / "message").read_text() == outcome.message


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--fraction", "0"), "--data-fraction must be in (0, 1]"),
        (("--fraction", "1.5"), "--data-fraction must be in (0, 1]"),
        (("--fraction", "0.1", "--source", "mnist"), "unknown source"),
    ],
)
def test_bad_arguments_publish_nothing(
    running_stack: RunningStack, args: tuple[str, ...], expected: str
) -> None:
    repo = f"bad-{uuid.uuid4().hex[:6]}"
    result = process_cli(running_stack, "--version", "v1.0", *args, "--repo", repo)
    assert result.returncode != 0
    assert expected in result.stderr
    assert remote_refs(running_stack.settings.repo_url(repo)) == {}


def test_corrupt_cifar_tarball_publishes_nothing(
    running_stack: RunningStack, tmp_path: Path
) -> None:
    tarball = tmp_path / "cifar-10-python.tar.gz"
    tarball.write_bytes(b"\x1f\x8b\x08 not really gzip")
    repo = f"cifar-{uuid.uuid4().hex[:6]}"
    result = process_cli(
        running_stack,
        "--version",
        "v1.0",
        "--fraction",
        "0.5",
        "--source",
        f"cifar10:{tarball}",
        "--repo",
        repo,
    )
    assert result.returncode != 0
    assert "corrupt" in result.stderr and str(tarball) in result.stderr
    assert remote_refs(running_stack.settings.repo_url(repo)) == {}


def test_cifar10_tarball_end_to_end(running_stack: RunningStack, tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO_ROOT))
    from tests.helpers import write_cifar_tarball

    tarball = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_tarball(tarball, per_batch=10)
    data = ok(
        process_cli(
            running_stack,
            "--version",
            "c1",
            "--fraction",
            "1.0",
            "--source",
            f"cifar10:{tarball}",
            "--test-split",
            "0.5",
            "--repo",
            f"cifar-{uuid.uuid4().hex[:6]}",
        )
    )
    assert data["counts"]["train"] + data["counts"]["val"] == 50  # all 5 train batches
    assert 0 < data["counts"]["test"] <= 10  # drawn from the official test batch only
    assert set(data["classes"]) <= {"airplane", "automobile", "bird"}
