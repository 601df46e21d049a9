"""Attacks on the consent log by someone who can write its database but holds neither the key
nor the head file: each must be detected by `verify` and stop every read."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from lineage.consent import registry_csv
from lineage.consent.anchor import ConsentAnchor, Head, database_identity
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
    assert result["events"] == 4 and result["anchored_heads"] == 2
    assert result["key"].endswith("consent.key")


def test_deleting_the_last_event_is_truncation(
    store: ConsentStore, url: str, tmp_path: Path
) -> None:
    assert store.status("PAT-00002").status == "withdrawn"
    edit(url, "DELETE FROM consent_events WHERE seq = 4")
    with pytest.raises(ConsentIntegrityError, match="ends at event 3, but event 4 was anchored"):
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


def test_an_edited_head_file_is_detected(store: ConsentStore) -> None:
    head_file = store.anchor.head_file
    lines = head_file.read_text().splitlines()
    forged = json.loads(lines[-1]) | {"seq": 3}
    head_file.write_text("\n".join([*lines[:-1], json.dumps(forged)]) + "\n")
    with pytest.raises(ConsentIntegrityError, match="does not carry a valid MAC"):
        store.verify()


def test_heads_recorded_elsewhere_catch_a_rollback_with_its_head_file(
    store: ConsentStore, tmp_path: Path, url: str
) -> None:
    """A database and head file rolled back together from an old backup: the head a
    dataset recorded in MLflow (outside both) still catches it."""
    recorded = store.verify()
    store.record("PAT-00001", "withdraw", actor="alice", reason="request")
    dataset_anchor = Head(5, store.events()[-1].hash, "MLflow run abc")
    edit(url, "DELETE FROM consent_events WHERE seq = 5")
    lines = store.anchor.head_file.read_text().splitlines()
    store.anchor.head_file.write_text("\n".join(lines[: recorded["anchored_heads"]]) + "\n")
    assert store.verify()["events"] == 4  # the local anchors alone were rolled back too
    with pytest.raises(ConsentIntegrityError, match=r"event 5 was anchored \(MLflow run abc\)"):
        store.verify([dataset_anchor])


def test_the_key_file_is_private_and_the_env_key_replaces_it(
    store: ConsentStore, tmp_path: Path, url: str
) -> None:
    key_file = tmp_path / "consent.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.anchor.head_file.stat().st_mode) == 0o600
    with pytest.raises(ConsentIntegrityError, match="valid MAC under the consent key"):
        open_store(url, tmp_path, key="another key entirely, 32+ characters long").verify()


def test_a_log_from_before_keys_is_sealed_once_then_protected(url: str, tmp_path: Path) -> None:
    """An older database (no mac column, no head file) is verified and sealed on first use."""
    store = open_store(url, tmp_path / "first")
    store.import_rows(registry_csv.parse(REGISTRY), source="registry.csv", actor="test")
    edit(url, "ALTER TABLE consent_events DROP COLUMN mac")
    sealed = open_store(url, tmp_path / "home")
    assert sealed.verify()["events"] == 3
    assert sealed.anchor.heads()[-1].seq == 3
    edit(url, "UPDATE consent_events SET mac = NULL WHERE seq = 1")
    with pytest.raises(ConsentIntegrityError):
        open_store(url, tmp_path / "home").verify()


def test_each_database_has_its_own_head_file(tmp_path: Path) -> None:
    one = ConsentAnchor.for_database(tmp_path, f"sqlite:///{tmp_path / 'a.db'}")
    two = ConsentAnchor.for_database(tmp_path, f"sqlite:///{tmp_path / 'b.db'}")
    same = ConsentAnchor.for_database(tmp_path, f"sqlite:///{tmp_path}/./a.db")
    assert one.head_file != two.head_file and one.head_file == same.head_file
    a = database_identity("postgresql+psycopg://u:secret@h:5432/db")
    b = database_identity("postgresql+psycopg://u:rotated@h:5432/db")
    assert a == b and "secret" not in a  # a password change is the same database
