"""Erasure against the real stack: a withdrawn patient's images leave the DVC remote (every
version), tombstones keep verify/reproduce/audits working, anything else missing still fails,
and the erasure log is as tamper-evident as the consent log.

The module runs on a private stack: the objects it erases, and its record-pattern models, are
seen by no other test.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.artifacts
import numpy as np
import pytest
from botocore.exceptions import ClientError
from mlflow.tracking import MlflowClient
from PIL import Image
from sqlalchemy import create_engine, text

from lineage import manifest
from lineage.config import Settings
from lineage.dvcremote import DvcRemote
from lineage.gitops import git_auth_env
from lineage.storage import s3_client
from lineage.transforms import to_array
from local.stack import LocalStack
from processing.sources import synthetic_cxr
from tests.conftest import run_cli, stack_env
from tests.helpers import checkout_with_plain_dvc

pytestmark = pytest.mark.integration

REQUEST = "DPO-2026-0042"


@dataclass
class World:
    env: dict[str, str]
    settings: Settings
    repo: str
    tags: dict[str, str]  # version -> tag
    model: str
    patient: str
    rows: dict[str, list[manifest.ManifestRow]]  # version -> manifest rows
    listing: dict[str, dict[str, str]]  # version -> relpath -> md5
    model_artifact: str = ""  # the training job's model.tar.gz

    def cli(self, *args: str, expect: int = 0, timeout: float = 900) -> dict[str, Any]:
        out = run_cli(*args, "--json", env=self.env, timeout=timeout)
        assert out.returncode == expect, out.stderr[-3000:]
        result: dict[str, Any] = json.loads(out.stdout) if out.stdout.strip() else {}
        return result

    def remote(self) -> DvcRemote:
        return DvcRemote(s3_client(self.settings), self.settings.dvc_remote_url)

    def patient_md5s(self) -> set[str]:
        return {
            self.listing[v][r.file_path]
            for v, rows in self.rows.items()
            for r in rows
            if r.patient_id == self.patient
        }


def _on_disk(volumes: Path, data: bytes) -> bool:
    """Whether any of the embedded store's volume files holds these bytes, as they are."""
    return any(data in volume.read_bytes() for volume in volumes.rglob("*.dat"))


def _exists(remote: DvcRemote, md5: str) -> bool:
    try:
        remote.client.head_object(Bucket=remote.bucket, Key=remote.key(md5))
    except ClientError:
        return False
    return True


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A private stack: the objects this module erases, and the record-pattern models it
    trains, are seen by no other test (the same synthetic patients appear elsewhere)."""
    home = tmp_path_factory.mktemp("erasure")
    env = stack_env(home / "lineage-home")
    settings = Settings.from_env(env)
    stack = LocalStack(settings)
    stack.up()
    try:
        yield _build(env, settings, home)
    finally:
        stack.down()


def _build(env: dict[str, str], settings: Settings, home: Path) -> World:
    """Two record-pattern versions (v1.1 nests v1.0), a model of v1.0, and the patient to
    erase: in v1.0's training split and in v1.1."""
    registry = home / "registry.csv"
    registry.write_text(synthetic_cxr.registry_csv())
    repo = f"erasure-{uuid.uuid4().hex[:6]}"
    base = World(env, settings, repo, {}, "", "", {}, {})
    base.cli("consent", "import", str(registry))
    for version, fraction in (("v1.0", "0.3"), ("v1.1", "0.5")):
        made = base.cli(
            "process",
            "--pattern",
            "record",
            "--source",
            "synthetic-cxr",
            "--version",
            version,
            "--fraction",
            fraction,
            "--repo",
            repo,
        )
        base.tags[version] = made["tag"]
    trained = base.cli(
        "train",
        "--tag",
        base.tags["v1.0"],
        "--repo",
        repo,
        "--epochs",
        "1",
        "--model-name",
        repo,
    )
    base.model = f"{repo}/{trained['model_version']}"
    base.model_artifact = str(trained["model_artifact"])
    base.cli("index", "rebuild")
    remote = base.remote()
    for version, tag in base.tags.items():
        verified = base.cli("verify", "--tag", tag, "--repo", repo)
        pointer = verified["dataset_md5"]
        base.listing[version] = {e.relpath: e.md5 for e in remote.listing(pointer)}
        data = remote.read(base.listing[version][manifest.MANIFEST_NAME])
        assert data is not None
        base.rows[version] = manifest.parse(data.decode())
    in_both = {r.patient_id for r in base.rows["v1.0"] if r.split == "train"} & {
        r.patient_id for r in base.rows["v1.1"]
    }
    # the one with the most scans: the erasure test deletes one object itself first (a crashed
    # earlier run) and checks the disk for the rest, so there must be a rest
    scans = {p: {r.scan_id for r in base.rows["v1.1"] if r.patient_id == p} for p in in_both}
    base.patient = max(sorted(in_both), key=lambda p: len(scans[p]))
    assert len(scans[base.patient]) >= 2, scans
    return base


def test_a_patient_who_still_consents_is_not_erased(world: World) -> None:
    out = run_cli("erase", world.patient, "--request", REQUEST, "--actor", "dpo", env=world.env)
    assert out.returncode != 0 and "erasure is refused" in out.stderr
    assert all(_exists(world.remote(), md5) for md5 in world.patient_md5s())


def _arrays(value: Any) -> Iterator[np.ndarray]:
    """Every numeric array (nested lists of numbers) in a parsed JSON document."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _arrays(item)
    elif isinstance(value, list) and value:
        try:
            array = np.asarray(value, dtype=np.float32)
        except (ValueError, TypeError):
            for item in value:
                yield from _arrays(item)
        else:
            if array.size > 1:
                yield array


def test_no_model_artifact_carries_a_record(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every file of the registered model (as MLflow hands it out) and of the job's
    model.tar.gz: none holds any record's image bytes (train, validation or test), the middle
    of any image as the network sees it, or an array equal to one (the input example was
    two real test scans once)."""
    remote = world.remote()
    pngs = [
        data
        for row in world.rows["v1.0"]
        if (data := remote.read(world.listing["v1.0"][row.file_path])) is not None
    ]
    assert len(pngs) == len(world.rows["v1.0"])
    name, version = world.model.split("/")
    # MLflow resolves models:/ through the registry of the environment's tracking URI
    monkeypatch.setenv("MLFLOW_TRACKING_URI", world.settings.mlflow_uri)
    registered = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}",
            dst_path=str(tmp_path / "registered"),
        )
    )
    with tarfile.open(world.model_artifact) as archive:
        archive.extractall(tmp_path / "tar", filter="data")
    files = [p for root in (registered, tmp_path / "tar") for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "MLmodel" for p in files) and any(p.suffix == ".pt" for p in files)
    examples = [p for p in files if "example" in p.name]
    assert examples, "MLflow's input example files are scanned too"
    found_arrays = [
        a for p in files if p.suffix == ".json" for a in _arrays(json.loads(p.read_text()))
    ]
    for png in pngs:
        seen = to_array(Image.open(io.BytesIO(png)))
        flat = seen.tobytes()
        middle = flat[len(flat) // 2 : len(flat) // 2 + 512]
        for path in files:
            data = path.read_bytes()
            assert png not in data and middle not in data, path
        for array in found_arrays:
            if array.size == seen.size:
                assert not np.allclose(array.reshape(seen.shape), seen, atol=1e-4)


def _publish_unfiltered_copy(world: World, tmp_path: Path) -> str:
    """What an older release published from a patient source with `--pattern dataset`: v1.0's
    scans (one other patient's left out, so it is its own DVC directory) in a version no
    consent registry filtered (no consent head in its dataset.json). Made with the stock git
    and DVC CLIs; its tag."""
    url = world.settings.repo_url(world.repo)
    checkout = tmp_path / "legacy"
    dataset = checkout_with_plain_dvc(world, url, world.tags["v1.0"], checkout)
    rows = manifest.parse((dataset / manifest.MANIFEST_NAME).read_text())
    dropped = next(r for r in rows if r.patient_id != world.patient)
    (dataset / dropped.file_path).unlink()
    lines = (dataset / manifest.MANIFEST_NAME).read_text().splitlines(keepends=True)
    kept = [line for line in lines if f",{dropped.file_path}," not in line]
    (dataset / manifest.MANIFEST_NAME).write_text("".join(kept))
    metadata = json.loads((checkout / manifest.DATASET_METADATA).read_text())
    metadata = {k: v for k, v in metadata.items() if not k.startswith("consent")}
    (checkout / manifest.DATASET_METADATA).write_text(
        json.dumps({**metadata, "pattern": "dataset"})
    )
    token = ("lineage", world.settings.credentials.git_token)
    env = {
        **os.environ,
        **world.settings.client_env(),
        **git_auth_env([(world.settings.git_url, token)]),
        "DVC_NO_ANALYTICS": "1",
        "GIT_TERMINAL_PROMPT": "0",
    }
    tag = f"legacy-{uuid.uuid4().hex[:6]}"
    for command in (
        [sys.executable, "-m", "dvc", "add", "--quiet", manifest.DATASET_DIR],
        [sys.executable, "-m", "dvc", "push", "--quiet"],
        ["git", "add", "-A"],
        [
            "git",
            "-c",
            "user.name=old",
            "-c",
            "user.email=old@lineage.invalid",
            "commit",
            "-qm",
            tag,
        ],
        ["git", "tag", tag],
        ["git", "push", "--quiet", "origin", f"refs/tags/{tag}"],
    ):
        done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True)
        assert done.returncode == 0, (command, done.stderr[-2000:])
    return tag


def _register_legacy_version(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A version as releases before synthetic examples registered it: the model's files with
    one of the patient's scans, as the network sees it, in `input_example.json` (logged to
    the same run, registered with the same lineage tags). Its ref."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", world.settings.mlflow_uri)
    client = MlflowClient(world.settings.mlflow_uri)
    name, version = world.model.split("/")
    current = client.get_model_version(name, version)
    model = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{world.model}", dst_path=str(tmp_path / "legacy-model")
        )
    )
    row = next(r for r in world.rows["v1.0"] if r.patient_id == world.patient)
    scan = world.remote().read(world.listing["v1.0"][row.file_path])
    assert scan is not None
    seen = to_array(Image.open(io.BytesIO(scan)))
    example = {"inputs": np.stack([np.zeros_like(seen), seen]).tolist()}
    (model / "input_example.json").write_text(json.dumps(example))
    assert current.run_id is not None
    client.log_artifacts(current.run_id, str(model), "legacy_model")
    legacy = client.create_model_version(
        name, f"runs:/{current.run_id}/legacy_model", current.run_id, tags=current.tags
    )
    world.cli("index", "rebuild")
    return f"{name}/{legacy.version}"


def test_erasure_removes_every_copy_and_lineage_keeps_working(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = world.remote()
    md5s = world.patient_md5s()
    assert md5s
    others = {md5 for listing in world.listing.values() for md5 in listing.values()} - md5s
    world.cli("consent", "withdraw", world.patient, "--reason", "patient request")
    # the same patient's scans in a version no registry filtered: theirs too, not "another
    # record's" (sharing is judged by person, not only by bytes)
    legacy = _publish_unfiltered_copy(world, tmp_path)
    holding = {*world.tags.values(), legacy}
    # and a version registered when examples were real scans: it carries the patient's pixels
    carrier = _register_legacy_version(world, tmp_path, monkeypatch)
    trained = sorted([world.model, carrier])

    planned = world.cli("erase", world.patient, "--request", REQUEST, "--actor", "dpo", "--dry-run")
    assert {o["md5"] for o in planned["plan"]["objects"]} == md5s
    assert planned["plan"]["kept"] == []
    assert {d["tag"] for d in planned["plan"]["datasets"]} == holding
    assert sorted(planned["plan"]["models"]) == trained
    carrying = planned["plan"]["models_carrying_pixels"]
    assert [(c["model"], c["files"]) for c in carrying] == [(carrier, ["input_example.json"])]
    assert len(carrying[0]["scans"]) == 1 and carrying[0]["scans"][0] in md5s
    assert all(_exists(remote, md5) for md5 in md5s), "the dry run changed something"

    # a failed job's kept leftovers: a checkout of v1.0 and its DVC cache hold the bytes too
    # (successful jobs delete their work directories)
    row = next(r for r in world.rows["v1.0"] if r.patient_id == world.patient)
    md5 = world.listing["v1.0"][row.file_path]
    data = remote.read(md5)
    assert data is not None
    leftover = world.settings.home / "jobs" / "train-failed" / "opt" / "ml" / "input" / "work"
    copies = [
        leftover / "dataset-repo" / "dataset" / row.file_path,
        leftover / "dataset-repo" / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:],
    ]
    for copy in copies:
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(data)

    # the bytes of every object, to search the store's disk for them afterwards
    contents = {md5: remote.read(md5) for md5 in md5s}
    volumes = world.settings.home / "s3"
    assert all(_on_disk(volumes, data) for data in contents.values() if data)

    # a crashed earlier run had already deleted one object, without recording anything
    crashed = sorted(md5s)[0]
    remote.client.delete_object(Bucket=remote.bucket, Key=remote.key(crashed))

    erased = world.cli(
        "erase", world.patient, "--request", REQUEST, "--actor", "dpo", "--out", str(tmp_path)
    )
    assert not any(_exists(remote, md5) for md5 in md5s)  # gone from S3, every version
    # and from the store's disk: SeaweedFS only marks a deleted needle; the erasure compacted
    # the volumes until none of the objects it read before deleting was found
    searched = md5s - {crashed}  # the crashed run's object: its bytes could not be searched
    assert all(contents[md5] for md5 in searched)
    assert [md5 for md5 in searched if _on_disk(volumes, contents[md5] or b"-")] == []
    for md5 in searched:
        assert erased["absence"][md5]["disk"].startswith("found before the delete in "), md5
        assert "versions" in erased["absence"][md5] and "404" in erased["absence"][md5]["store_api"]
    assert erased["absence"][crashed]["disk"].startswith("vacuumed; NOT confirmed")
    assert all(_exists(remote, md5) for md5 in others)  # nobody else's object touched
    assert {t["md5"] for t in erased["event"]["tombstones"]} == md5s
    assert sorted(erased["deleted_files"]) == sorted(str(c) for c in copies)
    assert not any(c.exists() for c in copies)
    assert erased["event"]["patient_key"] != world.patient  # a keyed hash, not the id
    assert '"patient_id"' not in json.dumps(erased["event"])
    assert sorted(erased["to_retrain_or_retire"]) == trained
    assert carrier in Path(erased["evidence"]["html"]).read_text()
    for path in erased["evidence"].values():
        assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
        assert '"patient_id"' not in Path(path).read_text()
    assert REQUEST in Path(erased["evidence"]["html"]).read_text()

    for tag in world.tags.values():
        verified = world.cli("verify", "--tag", tag, "--repo", world.repo)
        assert verified["ok"] and verified["problems"] == []
        assert {e["request"] for e in verified["erased"]} == {REQUEST}
    human = run_cli("verify", "--tag", world.tags["v1.0"], "--repo", world.repo, env=world.env)
    assert human.returncode == 0 and "intact except" in human.stdout
    assert f"records erased under request {REQUEST}" in human.stdout

    audit = world.cli("audit", "record", world.patient)
    assert [e["request"] for e in audit["erasures"]] == [REQUEST]
    assert set(audit["erasures"][0]["dataset_versions"]) == holding
    assert sorted(audit["erasures"][0]["models_trained_on_them"]) == trained


def test_an_object_missing_without_a_tombstone_still_fails(world: World) -> None:
    remote = world.remote()
    other = next(
        r for r in world.rows["v1.0"] if r.patient_id != world.patient and r.split == "train"
    )
    md5 = world.listing["v1.0"][other.file_path]
    saved = remote.read(md5)
    assert saved is not None
    remote.client.delete_object(Bucket=remote.bucket, Key=remote.key(md5))
    try:
        out = run_cli(
            "verify", "--tag", world.tags["v1.0"], "--repo", world.repo, "--json", env=world.env
        )
        assert out.returncode == 1
        answer = json.loads(out.stdout)
        assert [p["relpath"] for p in answer["problems"]] == [other.file_path]
        assert answer["erased"]  # the erased ones are still told apart
    finally:
        remote.client.put_object(Bucket=remote.bucket, Key=remote.key(md5), Body=saved)


def test_reproduce_retrains_on_the_remainder(world: World) -> None:
    answer = world.cli("reproduce", "--model", world.model, "--retrain", timeout=1200)
    assert answer["ok"]
    assert answer["erased"] and answer["retraining"]["erased_records"] == len(answer["erased"])
    assert answer["files_verified"] == len(world.rows["v1.0"]) - len(answer["erased"])


def test_the_erasure_log_detects_tampering(world: World) -> None:
    url = world.settings.consent_db
    engine = create_engine(url)
    with engine.begin() as connection:
        original = connection.execute(
            text("SELECT id, sha256 FROM erasure_tombstones ORDER BY id LIMIT 1")
        ).one()
        connection.execute(
            text("UPDATE erasure_tombstones SET sha256 = :s WHERE id = :i"),
            {"s": "0" * 64, "i": original.id},
        )
    try:
        out = run_cli("consent", "verify", "--offline", env=world.env)
        assert out.returncode != 0 and "the tombstones of erasure event 1" in out.stderr
    finally:
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE erasure_tombstones SET sha256 = :s WHERE id = :i"),
                {"s": original.sha256, "i": original.id},
            )
        engine.dispose()
    assert run_cli("consent", "verify", "--offline", env=world.env).returncode == 0


def test_a_second_erasure_of_the_same_patient_finds_nothing_left(world: World) -> None:
    again = world.cli("erase", world.patient, "--request", "DPO-2026-0043", "--actor", "dpo")
    assert again["plan"]["objects"] == [] and again["deleted_objects"] == []
    assert set(again["plan"]["already_erased"]) == world.patient_md5s()
    assert again["follow_up_of"] == [REQUEST] and again["returned_objects_deleted"] == []


def test_erased_data_that_comes_back_is_reported_and_deleted_by_a_follow_up(
    world: World,
) -> None:
    """A run (or a restore from backup) pushes an erased object back to the remote: `verify`
    fails on it, and the next `erase` of the patient deletes it as a follow-up of the
    original request."""
    remote = world.remote()
    back = sorted(world.patient_md5s())[0]
    remote.client.put_object(Bucket=remote.bucket, Key=remote.key(back), Body=b"restored")
    verified = world.cli("verify", "--tag", world.tags["v1.0"], "--repo", world.repo, expect=1)
    assert not verified["ok"]
    assert f"erased under {REQUEST} but present again" in json.dumps(verified["problems"])
    again = world.cli("erase", world.patient, "--request", "DPO-2026-0044", "--actor", "dpo")
    assert again["returned_objects_deleted"] == [back]
    assert again["deleted_objects"] == [remote.object_url(back)]
    assert not _exists(remote, back)
    assert REQUEST in again["follow_up_of"]
    assert f"Follow-up of {REQUEST}" in Path(again["evidence"]["html"]).read_text()
    assert world.cli("verify", "--tag", world.tags["v1.0"], "--repo", world.repo)["ok"]
