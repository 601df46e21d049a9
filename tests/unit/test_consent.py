"""The consent registry: a strict CSV reader, an idempotent import, a hash chain that detects
any edit, past states on demand, and no lost events under concurrent writers."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from lineage.consent import registry_csv
from lineage.consent.events import ConsentError, ConsentIntegrityError, parse_time
from lineage.consent.snapshot import Snapshot, consenting_sha256
from lineage.consent.store import ConsentStore
from lineage.errors import ConfigError
from tests.helpers import HEADER, REGISTRY, edit, open_store


@pytest.fixture
def store(database_url: str, tmp_path: Path) -> ConsentStore:
    store = open_store(database_url, tmp_path)
    store.import_rows(registry_csv.parse(REGISTRY), source="registry.csv", actor="test")
    return store


def test_import_creates_patients_and_is_idempotent(store: ConsentStore) -> None:
    again = store.import_rows(registry_csv.parse(REGISTRY), source="registry.csv", actor="test")
    assert not again.changed and again.unchanged == 3
    assert len(store.events()) == 3
    snapshot = store.snapshot()
    assert snapshot.consenting == ["PAT-00001", "PAT-00002"]
    assert snapshot.withdrawn == ["PAT-00003"]
    assert snapshot.sha256 == consenting_sha256({"PAT-00002", "PAT-00001"})


def test_import_reports_changes_and_never_regrants(store: ConsentStore) -> None:
    store.record("PAT-00001", "withdraw", actor="alice", reason="patient request")
    changed = REGISTRY.replace(
        "PAT-00002,PAT-00002-SCAN-0003,images/3.png,tuberculosis,granted",
        "PAT-00002,PAT-00002-SCAN-0003,images/3.png,tuberculosis,withdrawn",
    )
    changed += "PAT-00004,PAT-00004-SCAN-0005,images/5.png,normal,granted\n"
    report = store.import_rows(registry_csv.parse(changed), source="new.csv", actor="test")
    assert report.withdrawn == ["PAT-00002"]
    assert report.patients_added == ["PAT-00004"] and report.granted == ["PAT-00004"]
    assert report.not_regranted == ["PAT-00001"]  # a stale file cannot undo a withdrawal
    assert store.status("PAT-00001").status == "withdrawn"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "PAT-1,S-1,a.png,normal,granted\nPAT-2,S-1,b.png,normal,granted\n",
            "line 3: scan_id S-1 repeats line 2",
        ),
        ("PAT-1,S-1,a.png,normal,maybe\n", "line 2: consent_status 'maybe'"),
        (
            "PAT-1,S-1,a.png,normal,granted\nPAT-1,S-2,b.png,normal,withdrawn\n",
            "line 3: PAT-1 is withdrawn here but granted on line 2",
        ),
        ("PAT-1,,a.png,normal,granted\n", "line 2: empty scan_id"),
        ("PAT-1,S-1,a.png,normal,granted,extra\n", "line 2: 6 cells"),
        ("PAT 1,S-1,a.png,normal,granted\n", "patient_id 'PAT 1'"),
    ],
)
def test_malformed_rows_name_the_line_and_import_nothing(
    store: ConsentStore, body: str, message: str
) -> None:
    with pytest.raises(ConsentError, match=message) as info:
        store.import_rows(registry_csv.parse(HEADER + body), source="bad.csv", actor="t")
    assert "nothing was imported" in str(info.value)
    assert len(store.events()) == 3


def test_bad_header_and_contradicting_scan_are_refused(store: ConsentStore) -> None:
    with pytest.raises(ConsentError, match="line 1: the header lacks consent_status"):
        registry_csv.parse("patient_id,scan_id,file_path,label\nP,S,a,b\n")
    moved = HEADER + "PAT-00002,PAT-00001-SCAN-0001,images/1.png,normal,granted\n"
    with pytest.raises(ConsentError, match="scan PAT-00001-SCAN-0001 is registered as PAT-00001"):
        store.import_rows(registry_csv.parse(moved), source="moved.csv", actor="t")
    assert len(store.events()) == 3


def test_unknown_patient_and_empty_reason_change_nothing(store: ConsentStore) -> None:
    with pytest.raises(ConsentError, match="PAT-99999 is not in the consent registry"):
        store.record("PAT-99999", "withdraw", actor="a", reason="request")
    with pytest.raises(ConsentError, match="a reason is required"):
        store.record("PAT-00001", "withdraw", actor="a", reason="  ")
    assert len(store.events()) == 3


def test_past_states_are_derived_from_the_log(store: ConsentStore) -> None:
    before = store.snapshot()
    store.record("PAT-00002", "withdraw", actor="alice", reason="request")
    store.record("PAT-00003", "grant", actor="bob", reason="consented again")
    now = store.snapshot()
    assert now.consenting == ["PAT-00001", "PAT-00003"]
    then, rows = store.export(before.as_of)
    assert then.sha256 == before.sha256 and then.consenting == before.consenting
    assert {r.scan_id: r.status for r in rows}["PAT-00002-SCAN-0003"] == "granted"
    history = store.status("PAT-00003")
    assert [e.action for e in history.events] == ["withdraw", "grant"]
    assert history.status == "granted" and history.events[-1].actor == "bob"


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE consent_events SET action = 'grant' WHERE seq = 3",  # un-withdraw silently
        "UPDATE consent_events SET at = '2020-01-01T00:00:00.000000Z' WHERE seq = 2",
        "DELETE FROM consent_events WHERE seq = 2",
    ],
)
def test_a_direct_edit_of_the_database_is_detected(
    store: ConsentStore, database_url: str, sql: str
) -> None:
    edit(database_url, sql)
    with pytest.raises(ConsentIntegrityError, match="consent event"):
        store.verify()
    with pytest.raises(ConsentIntegrityError):
        store.snapshot()  # nothing is derived from a broken history


def _writer(url: str, home: Path, patient: str, count: int) -> None:
    store = open_store(url, home)
    for i in range(count):
        store.record(
            patient, "withdraw" if i % 2 == 0 else "grant", actor=patient, reason=f"event {i}"
        )


def test_concurrent_writers_lose_no_event(
    store: ConsentStore, database_url: str, tmp_path: Path
) -> None:
    url = database_url
    context = multiprocessing.get_context("spawn")
    writers = [
        context.Process(target=_writer, args=(url, tmp_path, patient, 15))
        for patient in ("PAT-00001", "PAT-00002", "PAT-00003", "PAT-00001")
    ]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=120)
        assert w.exitcode == 0
    result = store.verify()
    assert result["events"] == 3 + 4 * 15


def test_snapshot_file_is_checked_by_its_reader(store: ConsentStore, tmp_path: Path) -> None:
    snapshot = store.snapshot()
    path = snapshot.write(tmp_path / "consent")
    assert Snapshot.read(tmp_path / "consent") == snapshot
    path.write_text(path.read_text().replace("PAT-00002", "PAT-00003"))
    with pytest.raises(ConsentError, match="does not hash to its recorded sha256"):
        Snapshot.read(tmp_path / "consent")


def test_unopenable_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"directory .* does not exist"):
        open_store(f"sqlite:///{tmp_path / 'missing' / 'consent.db'}", tmp_path)
    with pytest.raises(ConfigError, match="not a database URL"):
        open_store("not a url", tmp_path)
    (tmp_path / "file.db").write_text("this is not a database")
    with pytest.raises(ConsentError, match="cannot use the consent registry"):
        open_store(f"sqlite:///{tmp_path / 'file.db'}", tmp_path)


def test_times_are_read_as_utc() -> None:
    assert parse_time("2026-10-01") == "2026-10-01T00:00:00.000000Z"
    assert parse_time("2026-10-01T00:00Z") == "2026-10-01T00:00:00.000000Z"
    assert parse_time("2026-10-01T02:00+02:00") == "2026-10-01T00:00:00.000000Z"
    with pytest.raises(ConfigError):
        parse_time("yesterday")
