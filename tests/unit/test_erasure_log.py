"""The erasure log (SQLite and PostgreSQL): tombstones chained, keyed and anchored like the
consent log, the patient kept only as a keyed hash, and every kind of tampering caught."""

from __future__ import annotations

from pathlib import Path

import pytest

from lineage.attest.tlog import LogKeys
from lineage.consent.anchor import ConsentAnchor
from lineage.consent.events import ConsentIntegrityError
from lineage.erasure.log import ErasureLog, Tombstone
from tests.helpers import edit


def _log(url: str, home: Path) -> ErasureLog:
    return ErasureLog(
        url,
        anchor=ConsentAnchor.for_database(home, url, log="erasure"),
        log_keys=LogKeys.of_home(home),
    )


def _stones(n: int, prefix: str) -> list[Tombstone]:
    return [
        Tombstone(
            record_id=f"{prefix}-{i}",
            scan_id=f"{prefix}-SCAN-{i}",
            file_path=f"train/normal/{prefix}-{i}.png",
            md5=f"{i:032x}"[-32:],
            sha256=f"{i:064x}",
            datasets=[{"repo": "patients", "tag": "v1.0-x", "dataset_md5": "d" * 32 + ".dir"}],
        )
        for i in range(n)
    ]


@pytest.fixture
def log(database_url: str, tmp_path: Path) -> ErasureLog:
    log = _log(database_url, tmp_path)
    log.record("PAT-00001", request="R-1", actor="dpo", tombstones=_stones(3, "a"))
    log.record("PAT-00002", request="R-2", actor="dpo", tombstones=_stones(2, "b"))
    return log


def test_tombstones_are_kept_with_the_patient_as_a_keyed_hash(
    log: ErasureLog, database_url: str
) -> None:
    events = log.events()
    assert [e.request for e in events] == ["R-1", "R-2"]
    assert [len(e.tombstones) for e in events] == [3, 2]
    assert [e.request for e in log.of_patient("PAT-00001")] == ["R-1"]
    assert "PAT-00001" not in repr(events) and events[0].patient_key != "PAT-00001"
    assert log.erased()[events[1].tombstones[0].md5][0].request == "R-2"


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("UPDATE erasure_tombstones SET sha256 = 'x' WHERE id = 2", "tombstones of erasure"),
        ("DELETE FROM erasure_tombstones WHERE id = 4", "tombstones of erasure event 2"),
        ("UPDATE erasure_events SET request = 'R-9' WHERE seq = 1", "hash chain"),
        ("UPDATE erasure_events SET mac = 'x' WHERE seq = 2", "no valid MAC"),
    ],
)
def test_tampering_with_the_log_is_detected(
    log: ErasureLog, database_url: str, sql: str, message: str
) -> None:
    edit(database_url, sql)
    with pytest.raises(ConsentIntegrityError, match=message):
        log.events()


def test_deleting_the_last_erasure_is_caught_by_its_head_file(
    log: ErasureLog, database_url: str
) -> None:
    edit(
        database_url,
        "DELETE FROM erasure_tombstones WHERE event_seq = 2",
        "DELETE FROM erasure_events WHERE seq = 2",
    )
    with pytest.raises(ConsentIntegrityError, match="erasure log ends at event 1"):
        log.erased()  # an erasure cannot be hidden, nor its objects read as "just missing"
