"""Attacks on the consent log by someone who can write its database (and, where said, its
witness file or even its MAC key) but not sign tree heads: each must be detected by `verify`
and stop every read. Every event is also a leaf of the transparency log, appended in the
same transaction and covered by a signed tree head kept in the database and in the witness
file under LINEAGE_HOME; heads that runs recorded elsewhere catch a rollback of both."""

from __future__ import annotations

import base64
import json
import shutil
import stat
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from lineage.attest.tlog import LogKeys
from lineage.consent import registry_csv
from lineage.consent.anchor import ConsentAnchor, database_identity
from lineage.consent.events import GENESIS, ConsentIntegrityError, event_hash
from lineage.consent.store import ConsentStore
from tests.helpers import REGISTRY, edit, open_store


@pytest.fixture
def url(database_url: str) -> str:
    return database_url


@pytest.fixture
def store(url: str, tmp_path: Path) -> ConsentStore:
    store = open_store(url, tmp_path)
    store.import_rows(registry_csv.parse(REGISTRY), source="registry.csv", actor="test")
    store.record("PAT-00002", "withdraw", actor="alice", reason="patient request")
    return store


def _rows(url: str) -> list[dict[str, object]]:
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = [
            dict(r._mapping)
            for r in connection.execute(text("SELECT * FROM consent_events ORDER BY seq"))
        ]
    engine.dispose()
    return rows


def _rewrite_chain(url: str, rows: list[dict[str, object]]) -> None:
    """What an attacker without the key does best: fix every sha256 after the edit."""
    prev = GENESIS
    statements = []
    for row in rows:
        digest = event_hash(
            prev,
            int(str(row["seq"])),
            str(row["patient_id"]),
            str(row["action"]),
            str(row["at"]),
            str(row["actor"]),
            str(row["reason"]),
        )
        statements.append(
            f"UPDATE consent_events SET prev_hash = '{prev}', hash = '{digest}', "
            f"action = '{row['action']}', actor = '{row['actor']}' WHERE seq = {row['seq']}"
        )
        prev = digest
    # prev_hash and hash are unique: clear them first so the updates never collide
    edit(url, "UPDATE consent_events SET prev_hash = 'x' || seq, hash = 'y' || seq", *statements)


def test_the_untouched_log_verifies_against_its_key_and_heads(store: ConsentStore) -> None:
    result = store.verify()
    assert result["events"] == 4 and result["transparency_log"]["leaves"] == 4
    assert result["transparency_log"]["newest_head"] == 4
    assert result["key"].endswith("consent.key")


def test_deleting_the_last_event_is_truncation(
    store: ConsentStore, url: str, tmp_path: Path
) -> None:
    assert store.status("PAT-00002").status == "withdrawn"
    edit(url, "DELETE FROM consent_events WHERE seq = 4")
    with pytest.raises(
        ConsentIntegrityError, match="ends at event 3, but the transparency log holds event 4"
    ):
        store.verify()
    with pytest.raises(ConsentIntegrityError):
        store.status("PAT-00002")  # the withdrawal cannot silently read as granted again


def test_deleting_every_event_is_truncation(store: ConsentStore, url: str, tmp_path: Path) -> None:
    edit(url, "DELETE FROM consent_events")
    with pytest.raises(ConsentIntegrityError, match="ends at event 0"):
        store.snapshot()


def test_an_edit_with_a_recomputed_chain_fails_without_the_key(
    store: ConsentStore, url: str, tmp_path: Path
) -> None:
    rows = _rows(url)
    rows[3]["action"] = "grant"  # un-withdraw PAT-00002, then repair every sha256
    _rewrite_chain(url, rows)
    with pytest.raises(ConsentIntegrityError, match="no valid MAC"):
        store.verify()


def test_a_rewritten_chain_with_stolen_macs_still_fails(
    store: ConsentStore, url: str, tmp_path: Path
) -> None:
    """Even keeping the old MACs (valid for the old hashes) does not help: MACs bind hashes."""
    rows = _rows(url)
    rows[1]["actor"] = "mallory"
    _rewrite_chain(url, rows)
    macs = {r["seq"]: r["mac"] for r in rows}
    edit(url, *(f"UPDATE consent_events SET mac = '{m}' WHERE seq = {s}" for s, m in macs.items()))
    with pytest.raises(ConsentIntegrityError, match=r"event 2 .* no valid MAC"):
        store.events()


def test_a_removed_mac_and_a_reorder_are_detected(
    store: ConsentStore, url: str, tmp_path: Path
) -> None:
    edit(url, "UPDATE consent_events SET mac = NULL WHERE seq = 2")
    with pytest.raises(ConsentIntegrityError, match=r"event 2 .* no valid MAC"):
        store.verify()
    edit(url, "UPDATE consent_events SET mac = 'x'")
    edit(url, "UPDATE consent_events SET seq = -seq", "UPDATE consent_events SET seq = 5 + seq")
    with pytest.raises(ConsentIntegrityError):
        store.verify()


def test_an_edited_witness_file_is_detected(store: ConsentStore, tmp_path: Path) -> None:
    """The newest head in the witness file with its size edited: its signature no longer
    holds. (An older line edited down to a smaller size is shadowed by the newest.)"""
    (witness,) = (tmp_path / "tlog-heads").glob("*.jsonl")
    lines = witness.read_text().splitlines()
    forged = json.loads(lines[-1]) | {"size": 9}
    body = json.loads(base64.b64decode(forged["envelope"]["payload"])) | {"size": 9}
    forged["envelope"]["payload"] = base64.b64encode(json.dumps(body).encode()).decode()
    witness.write_text("\n".join([*lines[:-1], json.dumps(forged)]) + "\n")
    with pytest.raises(ConsentIntegrityError, match="does not verify"):
        store.verify()


def test_deleting_the_event_and_its_leaf_is_caught_by_the_signed_heads(
    store: ConsentStore, url: str
) -> None:
    """With database access alone, the event and its leaf deleted together: the newest
    signed head (database and witness) covers a leaf that is gone."""
    edit(url, "DELETE FROM consent_events WHERE seq = 4", "DELETE FROM tlog_leaves WHERE idx = 4")
    with pytest.raises(ConsentIntegrityError, match="leaves were deleted"):
        store.status("PAT-00002")


def test_heads_recorded_elsewhere_catch_a_rollback_with_its_witness_file(
    store: ConsentStore, tmp_path: Path, url: str
) -> None:
    """The attack of someone holding the database, the MAC key and LINEAGE_HOME, but not the
    signing key: the withdrawal, its leaf and signed head deleted, the witness file rolled
    back to match. Locally everything agrees again; the signed head a run recorded when it
    was given the log (a model's attestation carries the same head) does not."""
    (witness,) = (tmp_path / "tlog-heads").glob("*.jsonl")
    before = witness.read_text()
    store.record("PAT-00001", "withdraw", actor="alice", reason="request")
    with store.engine.begin() as connection:
        recorded = store.tlog.stored_heads(connection)[-1]  # what a run would have been given
    assert recorded.size == 5
    edit(
        url,
        "DELETE FROM consent_events WHERE seq = 5",
        "DELETE FROM tlog_leaves WHERE idx = 5",
        "DELETE FROM tlog_heads WHERE size = 5",
    )
    witness.write_text(before)
    assert store.verify()["events"] == 4  # the local anchors alone were rolled back too
    assert store.status("PAT-00001").status == "granted"
    with pytest.raises(
        ConsentIntegrityError, match=r"a head of size 5 was recorded at .*: it was truncated"
    ):
        store.verify(tree_heads=[recorded])
    store.record("PAT-00003", "grant", actor="mallory", reason="re-grow the log past size 5")
    store.record("PAT-00003", "withdraw", actor="mallory", reason="re-grow the log past size 5")
    with pytest.raises(ConsentIntegrityError, match="no longer hash to the root recorded"):
        store.verify(tree_heads=[recorded])  # a longer, rewritten log is no extension of it


def test_the_key_file_is_private_and_the_env_key_replaces_it(
    store: ConsentStore, tmp_path: Path, url: str
) -> None:
    key_file = tmp_path / "consent.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    (witness,) = (tmp_path / "tlog-heads").glob("*.jsonl")
    assert stat.S_IMODE(witness.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys" / "signing-key.pem").stat().st_mode) == 0o600
    with pytest.raises(ConsentIntegrityError, match="valid MAC under the consent key"):
        open_store(url, tmp_path, key="another key entirely, 32+ characters long").verify()


def _before_the_transparency_log(url: str) -> None:
    edit(url, "DROP TABLE tlog_leaves", "DROP TABLE tlog_heads", "DROP TABLE tlog_meta")


def test_a_log_from_before_keys_is_sealed_only_when_asked_then_protected(
    url: str, tmp_path: Path
) -> None:
    """An older database (no mac column, no head file, no transparency log): refused as
    unanchored, never sealed silently; `reanchor` (with the key) verifies the chain, seals
    and logs it; after that an event without a valid MAC is tampering again."""
    store = open_store(url, tmp_path / "first")
    store.import_rows(registry_csv.parse(REGISTRY), source="registry.csv", actor="test")
    store.engine.dispose()
    edit(url, "ALTER TABLE consent_events DROP COLUMN mac")
    _before_the_transparency_log(url)
    with pytest.raises(ConsentIntegrityError, match="3 events but no anchor"):
        open_store(url, tmp_path / "home")
    unanchored = ConsentStore(
        url,
        anchor=ConsentAnchor.for_database(tmp_path / "home", url),
        log_keys=LogKeys.of_home(tmp_path / "home"),
        anchored=False,
    )
    events, sealed, head = unanchored.reanchor()
    assert (events, sealed, head.size) == (3, 3, 3)
    unanchored.engine.dispose()
    assert open_store(url, tmp_path / "home").verify()["transparency_log"]["leaves"] == 3
    edit(url, "UPDATE consent_events SET mac = NULL WHERE seq = 1")
    with pytest.raises(ConsentIntegrityError):
        open_store(url, tmp_path / "home").verify()


def test_a_database_restored_without_its_anchors_is_refused_not_resealed(
    url: str, tmp_path: Path
) -> None:
    """Events with valid MACs, but no transparency log and no head file: whoever restored
    it could have dropped the newest events; nothing is sealed until someone says so."""
    store = open_store(url, tmp_path)
    store.import_rows(registry_csv.parse(REGISTRY), source="registry.csv", actor="test")
    store.engine.dispose()
    _before_the_transparency_log(url)
    shutil.rmtree(tmp_path / "tlog-heads")
    with pytest.raises(ConsentIntegrityError, match="reanchor"):
        open_store(url, tmp_path)


def test_a_log_anchored_by_its_head_file_moves_to_the_transparency_log(
    url: str, tmp_path: Path
) -> None:
    """The previous release's log (MACs, a head file) is migrated once, after its head file
    verified it; a truncation below that head file is still refused."""
    store = open_store(url, tmp_path)
    store.import_rows(registry_csv.parse(REGISTRY), source="registry.csv", actor="test")
    store.anchor.record_head(store.events()[-1])  # what the previous release wrote
    store.engine.dispose()
    _before_the_transparency_log(url)
    shutil.rmtree(tmp_path / "tlog-heads")
    migrated = open_store(url, tmp_path)
    assert migrated.verify()["transparency_log"]["leaves"] == 3
    migrated.engine.dispose()
    _before_the_transparency_log(url)
    shutil.rmtree(tmp_path / "tlog-heads")
    edit(url, "DELETE FROM consent_events WHERE seq = 3")
    with pytest.raises(ConsentIntegrityError, match="ends at event 2, but event 3 was anchored"):
        open_store(url, tmp_path)


def test_a_missing_witness_file_is_an_error_naming_it(store: ConsentStore, tmp_path: Path) -> None:
    shutil.rmtree(tmp_path / "tlog-heads")
    with pytest.raises(ConsentIntegrityError, match=r"witness file .* is missing"):
        store.verify()


def test_each_database_has_its_own_head_file(tmp_path: Path) -> None:
    one = ConsentAnchor.for_database(tmp_path, f"sqlite:///{tmp_path / 'a.db'}")
    two = ConsentAnchor.for_database(tmp_path, f"sqlite:///{tmp_path / 'b.db'}")
    same = ConsentAnchor.for_database(tmp_path, f"sqlite:///{tmp_path}/./a.db")
    assert one.head_file != two.head_file and one.head_file == same.head_file
    a = database_identity("postgresql+psycopg://u:secret@h:5432/db")
    b = database_identity("postgresql+psycopg://u:rotated@h:5432/db")
    assert a == b and "secret" not in a  # a password change is the same database
