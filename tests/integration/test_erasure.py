"""Erasure against the real stack: a withdrawn patient's images leave the DVC remote (every
version), tombstones keep verify/reproduce/audits working, anything else missing still fails,
and the erasure log is as tamper-evident as the consent log.

The module runs on a private stack: the objects it erases, and its record-pattern models, are
seen by no other test.
"""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import create_engine, text

from lineage import manifest
from lineage.config import Settings
from lineage.dvcremote import DvcRemote
from lineage.storage import s3_client
from local.stack import LocalStack
from processing.sources import synthetic_cxr
from tests.conftest import run_cli, stack_env

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
    base.patient = sorted(in_both)[0]
    return base


def test_a_patient_who_still_consents_is_not_erased(world: World) -> None:
    out = run_cli("erase", world.patient, "--request", REQUEST, "--actor", "dpo", env=world.env)
    assert out.returncode != 0 and "erasure is refused" in out.stderr
    assert all(_exists(world.remote(), md5) for md5 in world.patient_md5s())


def test_erasure_removes_every_copy_and_lineage_keeps_working(world: World, tmp_path: Path) -> None:
    remote = world.remote()
    md5s = world.patient_md5s()
    assert md5s
    others = {md5 for listing in world.listing.values() for md5 in listing.values()} - md5s
    world.cli("consent", "withdraw", world.patient, "--reason", "patient request")

    planned = world.cli("erase", world.patient, "--request", REQUEST, "--actor", "dpo", "--dry-run")
    assert {o["md5"] for o in planned["plan"]["objects"]} == md5s
    assert {d["tag"] for d in planned["plan"]["datasets"]} == set(world.tags.values())
    assert planned["plan"]["models"] == [world.model]
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

    # a crashed earlier run had already deleted one object, without recording anything
    crashed = sorted(md5s)[0]
    remote.client.delete_object(Bucket=remote.bucket, Key=remote.key(crashed))

    erased = world.cli(
        "erase", world.patient, "--request", REQUEST, "--actor", "dpo", "--out", str(tmp_path)
    )
    assert not any(_exists(remote, md5) for md5 in md5s)  # gone from S3, every version
    assert all(_exists(remote, md5) for md5 in others)  # nobody else's object touched
    assert {t["md5"] for t in erased["event"]["tombstones"]} == md5s
    assert sorted(erased["deleted_files"]) == sorted(str(c) for c in copies)
    assert not any(c.exists() for c in copies)
    assert erased["event"]["patient_key"] != world.patient  # a keyed hash, not the id
    assert '"patient_id"' not in json.dumps(erased["event"])
    assert erased["to_retrain_or_retire"] == [world.model]
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
    assert set(audit["erasures"][0]["dataset_versions"]) == set(world.tags.values())
    assert audit["erasures"][0]["models_trained_on_them"] == [world.model]


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
