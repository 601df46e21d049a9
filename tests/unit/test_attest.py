"""The evidence a third party checks with a public key alone: keys and their rotation, DSSE
envelopes, statements checked against the in-toto definitions, the transparency log's
proofs (what an auditor verifies offline), OpenSSF model signing verified by the stock
`model_signing` CLI, and the model checks the server and `trace` make."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine

from lineage.attest.checks import lineage_disagreements, model_checks, verify_model
from lineage.attest.envelopes import Envelope, sign, verify
from lineage.attest.jobinput import JobEvidence, JobKeys
from lineage.attest.keys import (
    AttestationError,
    KeyPaths,
    TrustStore,
    init_keys,
    key_id,
    load_key_file,
    load_public_key,
    rotate_keys,
    utc_now,
)
from lineage.attest.merkle import TreeHead, check_consistency, check_inclusion, entry_bytes
from lineage.attest.statements import (
    PROVENANCE_FILE,
    ModelProvenance,
    dataset_statement,
    decision,
    statement,
)
from lineage.attest.tlog import LogKeys, TransparencyLog
from lineage.errors import ConfigError
from lineage.record import LineageRecord
from tests.helpers import stock_model_signing_verify
from training.attestation import sign_model
from training.hyperparameters import TrainingHyperparameters


@pytest.fixture
def home(tmp_path: Path) -> Path:
    init_keys(tmp_path)
    return tmp_path


def _trust(home: Path) -> TrustStore:
    return TrustStore.load(home, {})


def _decision(at: str | None = None) -> dict[str, object]:
    return decision(
        "promote",
        [{"name": "models:/m/1", "digest": {"sha256": "a" * 64}}],
        actor="alice",
        at=at or utc_now(),
        details={"alias": "champion"},
    )


# -- keys ---------------------------------------------------------------------------------------
def test_the_signing_key_is_private_and_named_by_its_public_key(home: Path) -> None:
    paths = KeyPaths(home)
    assert stat.S_IMODE(paths.private.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.trust.stat().st_mode) == 0o644  # public data
    key = load_key_file(paths.private)
    public = load_public_key(paths.public.read_text())
    assert key.key_id == key_id(public) and len(key.key_id) == 64
    assert init_keys(home).created is False  # idempotent: the key never changes
    paths.private.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_key_file(paths.private)


def test_rotation_keeps_old_statements_valid_and_stops_the_old_key(home: Path) -> None:
    old = load_key_file(KeyPaths(home).private)
    before = sign(_decision(), old)
    info = rotate_keys(home)
    assert info.retired == [old.key_id] and info.key_id != old.key_id
    assert not KeyPaths(home).private.read_text().count(old.public_key)
    trust = _trust(home)
    assert verify(before, trust, at=before.body()["predicate"]["at"]).key_id == old.key_id
    # a statement the old key signed dated after its retirement is refused
    late = sign(_decision(at="2999-01-01T00:00:00.000000Z"), old)
    with pytest.raises(AttestationError, match="outside its validity"):
        verify(late, trust, at="2999-01-01T00:00:00.000000Z")
    new = load_key_file(KeyPaths(home).private)
    assert verify(sign(_decision(), new), trust, at=utc_now()).key_id == new.key_id


def test_trusted_keys_come_from_pem_text_a_file_or_a_trust_file(home: Path, tmp_path: Path) -> None:
    pem = KeyPaths(home).public.read_text()
    kid = load_key_file(KeyPaths(home).private).key_id
    assert list(TrustStore.from_value(pem).keys) == [kid]
    assert list(TrustStore.from_value(str(KeyPaths(home).public)).keys) == [kid]
    assert list(TrustStore.from_value(str(KeyPaths(home).trust)).keys) == [kid]
    assert list(TrustStore.load(home, {"LINEAGE_TRUSTED_KEYS": pem}).keys) == [kid]
    lying = json.loads(KeyPaths(home).trust.read_text())
    lying["keys"][0]["key_id"] = "0" * 64  # a trust file cannot name a key by another id
    with pytest.raises(ConfigError, match="does not match its PEM"):
        TrustStore.parse(json.dumps(lying), "forged trust file")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError, match="holds no public key"):
        TrustStore.from_value(str(tmp_path / "notes.txt"))
    with pytest.raises(ConfigError, match="cannot read"):
        TrustStore.from_value(str(tmp_path / "missing.pem"))


# -- envelopes and statements ------------------------------------------------------------------
def test_an_envelope_verifies_only_unaltered_and_only_under_a_trusted_key(
    home: Path, tmp_path: Path
) -> None:
    key = load_key_file(KeyPaths(home).private)
    envelope = sign(_decision(), key)
    again = Envelope.from_json(json.loads(envelope.dumps()))
    assert again.digest == envelope.digest and verify(again, _trust(home)).key_id == key.key_id

    raw = envelope.to_json()
    body = json.loads(base64.b64decode(raw["payload"]))
    body["predicate"]["actor"] = "mallory"
    forged = {**raw, "payload": base64.b64encode(json.dumps(body).encode()).decode()}
    with pytest.raises(AttestationError, match="does not verify"):
        verify(Envelope.from_json(forged), _trust(home))

    other = tmp_path / "other"
    init_keys(other)
    resigned = sign(body, load_key_file(KeyPaths(other).private))  # re-signed by another key
    with pytest.raises(AttestationError, match="which is not trusted"):
        verify(resigned, _trust(home))
    with pytest.raises(AttestationError, match="carries"):
        verify(envelope, _trust(home), payload_type="application/other")


def test_statements_are_checked_against_the_in_toto_definitions() -> None:
    with pytest.raises(AttestationError, match="not a valid in-toto statement"):
        statement([{"name": "x", "digest": {}}], "https://example/p", {"a": 1})
    with pytest.raises(AttestationError, match="not a valid in-toto statement"):
        statement([], "https://example/p", {"a": 1})
    body = dataset_statement(
        manifest_sha256="a" * 64,
        listing_md5="b" * 32 + ".dir",
        listing_sha256="c" * 64,
        predicate={"tag": "t"},
    )
    assert body["subject"][1]["digest"] == {"md5": "b" * 32, "sha256": "c" * 64}
    with pytest.raises(AttestationError, match="not a valid in-toto statement"):
        ModelProvenance.of(
            {
                "_type": "https://in-toto.io/Statement/v1",
                "subject": [{"name": "w", "digest": {"sha256": "a" * 64}}],
                "predicateType": "https://slsa.dev/provenance/v1",
                "predicate": {"buildDefinition": {"buildKind": "x"}},  # not SLSA's field
            }
        )


# -- the transparency log ---------------------------------------------------------------------
@pytest.fixture
def tlog(home: Path, tmp_path: Path) -> TransparencyLog:
    engine = create_engine(f"sqlite:///{tmp_path / 'log.db'}")
    return TransparencyLog(engine, LogKeys.of_home(home))


def _attest(n: int) -> dict[str, object]:
    return {"kind": "attestation", "digest": f"{n:064x}", "predicate_type": "p", "name": str(n)}


def test_inclusion_and_consistency_proofs_verify_with_the_public_key_alone(
    tlog: TransparencyLog, home: Path
) -> None:
    _, old = tlog.add([_attest(i) for i in range(5)])
    indices, new = tlog.add([_attest(i) for i in range(5, 13)])
    assert indices == list(range(6, 14)) and (old.size, new.size) == (5, 13)
    with tlog.engine.begin() as connection:
        inclusion = tlog.prove_inclusion(connection, 7, new.size)
        consistency = tlog.prove_consistency(connection, old.size, new.size)
    # offline: only the heads (signed), the proofs and the entry
    trust = TrustStore.from_value(KeyPaths(home).public.read_text())
    old_head = TreeHead.from_json(json.loads(old.compact()))
    new_head = TreeHead.from_json(json.loads(new.compact()))
    for head in (old_head, new_head):
        verify(head.envelope, trust, at=head.timestamp, payload_type=head.envelope.payload_type)
    check_inclusion(entry_bytes(_attest(6)), inclusion, new_head, 7)
    with pytest.raises(AttestationError, match="inclusion proof"):
        check_inclusion(entry_bytes(_attest(99)), inclusion, new_head, 7)
    assert consistency is not None
    check_consistency(old_head, new_head, consistency)
    with pytest.raises(AttestationError, match="truncated"):
        check_consistency(new_head, old_head, None)
    bad = dict(consistency, path=["0" * 64, *consistency["path"][1:]])
    with pytest.raises(AttestationError, match="not an extension"):
        check_consistency(old_head, new_head, bad)


def _edit(tlog: TransparencyLog, *statements: str) -> None:
    from sqlalchemy import text

    with tlog.engine.begin() as connection:
        for each in statements:
            connection.execute(text(each))


def test_a_log_rewritten_below_its_signed_head_is_never_signed_again(
    tlog: TransparencyLog, home: Path
) -> None:
    from lineage.attest.merkle import leaf_hash

    tlog.add([_attest(i) for i in range(4)])
    with tlog.engine.begin() as connection:
        leaf = tlog.leaves(connection)[0]
    forged = entry_bytes({**leaf.body(), "name": "forged"})
    _edit(tlog, f"UPDATE tlog_leaves SET entry = '{forged.decode()}' WHERE idx = 1")
    with (
        pytest.raises(AttestationError, match="does not hash to its stored hash"),
        tlog.engine.begin() as connection,
    ):
        tlog.verify(connection, entries=True)
    # a consistent rewrite (the entry and its hash) still breaks the signed root
    _edit(tlog, f"UPDATE tlog_leaves SET leaf_hash = '{leaf_hash(forged)}' WHERE idx = 1")
    with pytest.raises(AttestationError, match="no longer hash to the root"):
        tlog.add([_attest(9)])


def test_deleted_leaves_and_a_deleted_witness_file_are_refused(
    tlog: TransparencyLog, home: Path
) -> None:
    tlog.add([_attest(i) for i in range(3)])
    _edit(tlog, "DELETE FROM tlog_leaves WHERE idx = 3")
    with pytest.raises(AttestationError, match="leaves were deleted"):
        tlog.current_head()
    _edit(tlog, "DELETE FROM tlog_leaves WHERE idx = 2")
    with pytest.raises(AttestationError, match="leaves were deleted"):
        tlog.current_head()
    for witness in (home / "tlog-heads").glob("*.jsonl"):
        witness.unlink()
    with pytest.raises(AttestationError, match=r"witness file .* is missing"):
        tlog.current_head()


def test_adopt_witnesses_the_databases_head_again_only_when_it_holds(
    tlog: TransparencyLog, home: Path
) -> None:
    _, head = tlog.add([_attest(i) for i in range(3)])
    for witness in (home / "tlog-heads").glob("*.jsonl"):
        witness.unlink()
    assert tlog.adopt() == head
    assert tlog.current_head().size == 3


# -- the model -----------------------------------------------------------------------------
def _model_dir(tmp_path: Path, home: Path) -> Path:
    model = tmp_path / "model"
    (model / "data").mkdir(parents=True)
    (model / "weights.pt").write_bytes(os.urandom(256))
    (model / "model.onnx").write_bytes(os.urandom(256))
    (model / "data" / "model.pth").write_bytes(os.urandom(64))
    (model / "MLmodel").write_text("flavors: {}\n")
    record = LineageRecord(
        data_git_commit_id="c" * 40,
        dvc_tag="v1-t",
        dataset_md5="d" * 32 + ".dir",
        manifest_sha256="e" * 64,
        run_id="r" * 32,
        classes=["normal", "tuberculosis"],
        image_size=64,
        model_name="m",
    ).with_model_bytes(model)
    record.write(model)
    keys = JobKeys(load_key_file(KeyPaths(home).private), _trust(home))
    sign_model(
        model,
        keys=keys,
        evidence=JobEvidence(),
        record=record,
        params=TrainingHyperparameters(dvc_tag="v1-t"),
        dataset=None,
        started=utc_now(),
    )
    return model


def test_the_stock_model_signing_cli_verifies_the_model_and_rejects_a_changed_byte(
    tmp_path: Path, home: Path
) -> None:
    model = _model_dir(tmp_path, home)
    done = stock_model_signing_verify(model, KeyPaths(home).public)
    assert done.returncode == 0, done.stdout + done.stderr
    (model / "registered_model_meta").write_text("name: m\n")  # MLflow's download adds it
    assert stock_model_signing_verify(model, KeyPaths(home).public).returncode == 0
    weights = bytearray((model / "model.onnx").read_bytes())
    weights[10] ^= 0xFF
    (model / "model.onnx").write_bytes(bytes(weights))
    failed = stock_model_signing_verify(model, KeyPaths(home).public)
    assert failed.returncode != 0 and "model.onnx" in failed.stdout + failed.stderr
    with pytest.raises(AttestationError, match=r"changed: model\.onnx"):
        verify_model(model, _trust(home))


def test_the_model_checks_name_what_was_changed(tmp_path: Path, home: Path) -> None:
    model = _model_dir(tmp_path, home)
    verified = verify_model(model, _trust(home))
    lineage = json.loads((model / "lineage.json").read_text())
    assert not lineage_disagreements(verified.provenance, lineage)
    # swapped class names in lineage.json (it is not a signed file): caught by the provenance
    swapped = {**lineage, "classes": ["tuberculosis", "normal"], "model_version": "7"}
    (model / "lineage.json").write_text(json.dumps(swapped))
    checks, _ = model_checks(model, _trust(home), None, "the test's")
    failed = {c.name: c.detail for c in checks if not c.ok}
    assert "classes" in failed["signed lineage.json"] and "model_version" not in str(failed)
    # an extra file, and a provenance re-signed with another key
    (model / "extra.bin").write_bytes(b"x")
    with pytest.raises(AttestationError, match=r"extra\.bin"):
        verify_model(model, _trust(home))
    (model / "extra.bin").unlink()
    other = tmp_path / "other"
    init_keys(other)
    body = Envelope.read(model / PROVENANCE_FILE).body()
    sign(body, load_key_file(KeyPaths(other).private)).write(model / PROVENANCE_FILE)
    with pytest.raises(AttestationError, match=r"changed: provenance\.dsse\.json"):
        verify_model(model, _trust(home))  # model.sig covers the provenance file itself


def test_the_server_refuses_a_tampered_or_unsigned_model_naming_the_file(
    tmp_path: Path, home: Path
) -> None:
    from inference.model import ModelDirError, check_signature

    model = _model_dir(tmp_path, home)
    pem = KeyPaths(home).public.read_text()
    signed = check_signature(model, pem)
    assert signed["signer_key_id"] == load_key_file(KeyPaths(home).private).key_id
    lineage = json.loads((model / "lineage.json").read_text())
    (model / "lineage.json").write_text(json.dumps({**lineage, "classes": ["b", "a"]}))
    with pytest.raises(ModelDirError, match=r"lineage\.json does not repeat"):
        check_signature(model, pem)
    (model / "model.sig").unlink()
    with pytest.raises(ModelDirError, match=r"no model\.sig"):
        check_signature(model, pem)


# -- AWS KMS -------------------------------------------------------------------------------------
@pytest.fixture
def kms(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's KMS, in process: botocore checks every request against the service model."""
    import boto3
    from moto import mock_aws

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield boto3.client("kms", region_name="eu-west-1")


def test_kms_signs_a_statement_by_its_digest_and_is_trusted_by_its_public_key(
    kms: Any, tmp_path: Path
) -> None:
    import hashlib

    from lineage.attest.keys import load_kms_key, trust_kms_key

    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    sent: list[dict[str, Any]] = []
    kms.meta.events.register(
        "provide-client-params.kms.Sign", lambda params, **_: sent.append(dict(params))
    )
    signing = load_kms_key(key, client=kms)
    envelope = sign(_decision(), signing)
    ((request,),) = [sent]
    digest = hashlib.sha256(envelope.dsse.pae()).digest()
    assert request == {
        "KeyId": key,
        "Message": digest,  # the PAE's SHA-256: a statement of any size fits kms:Sign
        "MessageType": "DIGEST",
        "SigningAlgorithm": "ECDSA_SHA_256",
    }
    (signature,) = envelope.dsse.signatures.values()
    # KMS itself vouches for the signature. (moto 5.2 hashes a DIGEST once more before signing,
    # getmoto/moto#10202, so the public-key check of its signature is done against real KMS.)
    assert kms.verify(
        KeyId=key,
        Message=digest,
        MessageType="DIGEST",
        Signature=bytes.fromhex(signature.signature),
        SigningAlgorithm="ECDSA_SHA_256",
    )["SignatureValid"]
    info = trust_kms_key(tmp_path, key, client=kms)
    assert info.key_id == signing.key_id and info.private_key == f"kms:{key}"
    trusted = TrustStore.load(tmp_path, {}).get(signing.key_id)
    assert trusted is not None and trusted.source == f"kms:{key}"
    rsa = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    with pytest.raises(ConfigError, match="not ECC_NIST_P256"):
        load_kms_key(rsa, client=kms)


def test_a_sagemaker_pipeline_refuses_a_kms_key_the_operator_does_not_trust(
    kms: Any, tmp_path: Path
) -> None:
    from lineage.config import Settings
    from lineage.sagemaker.jobs import SageMakerConfig
    from lineage.sagemaker.runner import SageMakerRunner

    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    config = SageMakerConfig(
        role="arn:aws:iam::1:role/r",
        bucket="b",
        mlflow_uri="https://mlflow",
        image_registry="1.dkr.ecr.eu-west-1.amazonaws.com",
        region="eu-west-1",
        signing_kms_key_id=key,
    )
    runner = SageMakerRunner(config, Settings.from_env({"LINEAGE_HOME": str(tmp_path)}))
    with pytest.raises(ConfigError, match="lineage keys trust-kms"):
        runner._check_signing_key(key)
    from lineage.attest.keys import trust_kms_key

    trust_kms_key(tmp_path, key, client=kms)
    runner._check_signing_key(key)
    environment = config.job_environment("image")
    assert environment["LINEAGE_SIGNING_KMS_KEY_ID"] == key  # the jobs sign through KMS
