"""The lineage record: one set of names for the facts kept in run params, registry tags and
lineage.json, and the comparisons that find a missing or changed copy."""

from __future__ import annotations

import hashlib
from pathlib import Path

from lineage.hashing import file_sha256, tree_sha256
from lineage.record import FACTS, LineageRecord, model_digest

RECORD = LineageRecord(
    data_git_commit_id="c" * 40,
    dvc_tag="v1.0-20261128T000000Z-abcdef",
    data_version="v1.0",
    dataset_md5="d" * 32 + ".dir",
    manifest_sha256="m" * 64,
    weights_sha256="w" * 64,
    model_sha256="s" * 64,
    pattern="record",
    consent_snapshot_sha256="p" * 64,
    consent_as_of="2026-11-28T00:00:00.000000Z",
    consent_head_seq="42",
    consent_head_hash="h" * 64,
    consent_log_id="l" * 32,
    onnx_sha256="o" * 64,
    model_name="cxr",
    run_id="r" * 32,
    image_size=128,
    classes=["normal", "tuberculosis"],
    patient_count=120,
)


def test_every_copy_round_trips_the_facts() -> None:
    assert LineageRecord.from_mapping(RECORD.to_json()) == RECORD
    assert LineageRecord.from_mapping(RECORD.to_tags()).facts() == RECORD.facts()
    params = RECORD.to_params()
    assert LineageRecord.from_mapping(params).facts() == RECORD.facts()
    assert set(RECORD.to_tags()) == set(FACTS)
    assert all(isinstance(v, str) for v in params.values())  # MLflow params are strings


def test_missing_and_changed_facts_are_named() -> None:
    tags = RECORD.to_tags()
    del tags["weights_sha256"]
    tags["data_git_commit_id"] = "e" * 40
    found = {d.fact: d for d in RECORD.disagreements(LineageRecord.from_mapping(tags))}
    assert set(found) == {"weights_sha256", "data_git_commit_id"}
    assert str(found["weights_sha256"]) == "weights_sha256 is missing"
    assert "the run recorded " + "c" * 40 in str(found["data_git_commit_id"])


def test_a_record_pattern_record_requires_its_consent_facts() -> None:
    partial = LineageRecord.from_mapping(
        {k: v for k, v in RECORD.to_tags().items() if k != "consent_head_hash"}
    )
    assert partial.missing() == ["consent_head_hash"]
    dataset = LineageRecord.from_mapping(
        {k: v for k, v in RECORD.to_tags().items() if not k.startswith("consent")}
        | {"pattern": "dataset"}
    )
    assert dataset.missing() == []


def test_the_model_digest_covers_every_file_but_lineage_json(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "model.pth").write_bytes(b"pickle")
    (tmp_path / "weights.pt").write_bytes(b"weights")
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    digest = model_digest(tmp_path)
    (tmp_path / "lineage.json").write_text("{}")  # stamped at deploy: not part of the digest
    (tmp_path / "registered_model_meta").write_text("model_name: x\n")
    assert model_digest(tmp_path) == digest
    (tmp_path / "data" / "model.pth").write_bytes(b"other pickle")
    assert model_digest(tmp_path) != digest
    # the digest is sha256sum's listing, so a user can re-derive it with standard tools
    listing = "".join(
        f"{file_sha256(tmp_path / p)}  {p}\n" for p in ("MLmodel", "data/model.pth", "weights.pt")
    )
    expected = hashlib.sha256(listing.encode()).hexdigest()
    assert tree_sha256(tmp_path, frozenset({"lineage.json", "registered_model_meta"})) == expected
