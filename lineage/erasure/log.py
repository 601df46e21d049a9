"""The erasure log: what was erased, under which request, by whom, kept as tombstones.

Each erasure is one event in a hash-chained log beside the consent log (same database, same
key, its own head file): request, actor, time, the patient as a keyed hash (no direct
identifier), and the sha256 of its tombstones. Each tombstone names one erased record: record
and scan id, the object's md5 (its name in the DVC remote) and sha256, the dataset versions
that held it. The chain, every event's MAC, every anchored head and every event's tombstone
digest are verified before anything is read, so an erasure can be neither hidden nor forged
by someone with access to the database alone.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError, OperationalError

from lineage.attest.host import Evidence
from lineage.attest.keys import AttestationError
from lineage.attest.tlog import LogKeys, TransparencyLog
from lineage.config import Settings
from lineage.consent.anchor import ConsentAnchor, check_heads
from lineage.consent.events import GENESIS, ConsentError, ConsentIntegrityError, utc_now
from lineage.consent.store import ENV_VAR, check_logged
from lineage.hashing import canonical_sha256
from lineage.sqlstore import SqlStore, is_sqlite

MAX_APPEND_ATTEMPTS = 50

metadata = MetaData()
events_table = Table(
    "erasure_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("request", String(256), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("at", String(32), nullable=False),
    Column("patient_key", String(64), nullable=False, index=True),
    Column("tombstones_sha256", String(64), nullable=False),
    Column("prev_hash", String(64), nullable=False, unique=True),
    Column("hash", String(64), nullable=False, unique=True),
    Column("mac", String(64), nullable=False),
)
tombstones_table = Table(
    "erasure_tombstones",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_seq", Integer, ForeignKey("erasure_events.seq"), nullable=False),
    Column("record_id", String(256), nullable=False),
    Column("scan_id", String(128), nullable=False),
    Column("file_path", String(1024), nullable=False),
    Column("md5", String(32), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("datasets", Text, nullable=False),  # JSON: [{"tag", "repo", "dataset_md5"}]
    Index("erasure_tombstones_md5", "md5"),
    Index("erasure_tombstones_event", "event_seq"),
)


@dataclass(frozen=True)
class Tombstone:
    record_id: str
    scan_id: str
    file_path: str
    md5: str
    sha256: str
    datasets: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def tombstones_sha256(tombstones: Iterable[Tombstone]) -> str:
    canonical = sorted(
        json.dumps(t.to_json(), sort_keys=True, separators=(",", ":")) for t in tombstones
    )
    return hashlib.sha256("\n".join(canonical).encode()).hexdigest()


@dataclass(frozen=True)
class ErasureEvent:
    seq: int
    request: str
    actor: str
    at: str
    patient_key: str
    tombstones_sha256: str
    prev_hash: str
    hash: str
    tombstones: list[Tombstone] = field(default_factory=list, compare=False)

    def describe(self) -> str:
        return f"erasure event {self.seq} (request {self.request} at {self.at})"

    def to_json(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in asdict(self).items() if k != "tombstones"},
            "tombstones": [t.to_json() for t in self.tombstones],
        }


def event_hash(
    prev: str, seq: int, request: str, actor: str, at: str, key: str, digest: str
) -> str:
    return canonical_sha256(
        {
            "prev": prev,
            "seq": seq,
            "request": request,
            "actor": actor,
            "at": at,
            "patient_key": key,
            "tombstones_sha256": digest,
        }
    )


class ErasureLog(SqlStore):
    """The erasure log in the consent registry's database (`LINEAGE_CONSENT_DB`)."""

    env_var = ENV_VAR
    what = "erasure log"
    hint = f"check {ENV_VAR} (the erasure log lives beside the consent registry)"
    metadata = metadata
    error = ConsentError

    def __init__(self, url: str, *, anchor: ConsentAnchor, log_keys: LogKeys) -> None:
        super().__init__(url)
        self.anchor = anchor
        self.tlog = TransparencyLog(self.engine, log_keys)
        self._migrate_to_tlog()

    @classmethod
    def from_settings(cls, settings: Settings) -> ErasureLog:
        url = settings.consent_db
        if settings.consent_db_override is None:
            settings.home.mkdir(parents=True, exist_ok=True)
        anchor = ConsentAnchor.for_database(settings.home, url, settings.consent_key, "erasure")
        return cls(url, anchor=anchor, log_keys=Evidence(settings).log_keys)

    def _lock(self, connection: Connection) -> None:
        if not is_sqlite(self.engine):
            connection.execute(text("LOCK TABLE erasure_events IN SHARE ROW EXCLUSIVE MODE"))
        self.tlog.lock(connection)

    def _migrate_to_tlog(self) -> None:
        """Erasures recorded before the transparency log become its leaves, once (after
        their chain, MACs, tombstones and head file verified)."""
        with self.engine.begin() as connection:
            self._lock(connection)
            if self.tlog.leaves(connection, "erasure"):
                return
            events = self._events(connection, logged=False)
            if not events:
                return
            self.tlog.append(connection, [_leaf(e) for e in events])
            head = self.tlog.sign_head(connection)
        self.tlog.witness(head)

    @classmethod
    def settings_url(cls, settings: Settings) -> tuple[str, bool]:
        return settings.consent_db, settings.consent_db_override is None

    def patient_key(self, patient_id: str) -> str:
        """The patient as the log stores them: a keyed hash, not the identifier."""
        return self.anchor.mac(f"patient:{patient_id}")

    # -- reading -------------------------------------------------------------------------------
    def _events(self, connection: Connection, *, logged: bool = True) -> list[ErasureEvent]:
        rows = list(connection.execute(select(events_table).order_by(events_table.c.seq)))
        stones: dict[int, list[Tombstone]] = {}
        for row in connection.execute(select(tombstones_table).order_by(tombstones_table.c.id)):
            stones.setdefault(int(row.event_seq), []).append(
                Tombstone(
                    record_id=row.record_id,
                    scan_id=row.scan_id,
                    file_path=row.file_path,
                    md5=row.md5,
                    sha256=row.sha256,
                    datasets=json.loads(row.datasets),
                )
            )
        events = []
        prev = GENESIS
        for expected, row in enumerate(rows, start=1):
            event = ErasureEvent(
                seq=int(row.seq),
                request=row.request,
                actor=row.actor,
                at=row.at,
                patient_key=row.patient_key,
                tombstones_sha256=row.tombstones_sha256,
                prev_hash=row.prev_hash,
                hash=row.hash,
                tombstones=stones.get(int(row.seq), []),
            )
            recomputed = event_hash(
                event.prev_hash,
                event.seq,
                event.request,
                event.actor,
                event.at,
                event.patient_key,
                event.tombstones_sha256,
            )
            if event.seq != expected or event.prev_hash != prev or recomputed != event.hash:
                raise ConsentIntegrityError(
                    f"{event.describe()} does not match the erasure log's hash chain: the log "
                    "was edited",
                    _RESTORE,
                )
            self.anchor.check_event(event, row.mac)
            if tombstones_sha256(event.tombstones) != event.tombstones_sha256:
                raise ConsentIntegrityError(
                    f"the tombstones of {event.describe()} were changed, added or removed",
                    _RESTORE,
                )
            events.append(event)
            prev = event.hash
        check_heads(events, self.anchor.heads(), "erasure")
        if logged:
            try:
                self.tlog.verify(connection)
            except AttestationError as exc:
                raise ConsentIntegrityError(exc.message, exc.hint) from None
            check_logged(events, self.tlog.leaves(connection, "erasure"), "erasure")
        return events

    def events(self) -> list[ErasureEvent]:
        try:
            with self.engine.begin() as connection:
                return self._events(connection)
        except OperationalError as exc:
            raise self.unusable(exc) from None

    def erased(self) -> dict[str, tuple[ErasureEvent, Tombstone]]:
        """Every erased object by its md5, with the erasure that removed it."""
        return {t.md5: (e, t) for e in self.events() for t in e.tombstones}

    def of_patient(self, patient_id: str) -> list[ErasureEvent]:
        key = self.patient_key(patient_id)
        return [e for e in self.events() if e.patient_key == key]

    # -- writing -------------------------------------------------------------------------------
    def record(
        self, patient_id: str, *, request: str, actor: str, tombstones: list[Tombstone]
    ) -> ErasureEvent:
        """Append one erasure and its tombstones, atomically, to the verified chain."""
        for attempt in range(1, MAX_APPEND_ATTEMPTS + 1):
            try:
                with self.engine.begin() as connection:
                    self._lock(connection)
                    events = self._events(connection)
                    seq = len(events) + 1
                    prev = events[-1].hash if events else GENESIS
                    at = max(utc_now(), events[-1].at) if events else utc_now()
                    key = self.patient_key(patient_id)
                    digest = tombstones_sha256(tombstones)
                    event = ErasureEvent(
                        seq,
                        request,
                        actor,
                        at,
                        key,
                        digest,
                        prev,
                        event_hash(prev, seq, request, actor, at, key, digest),
                        tombstones,
                    )
                    connection.execute(
                        events_table.insert(),
                        [
                            {
                                **{k: v for k, v in asdict(event).items() if k != "tombstones"},
                                "mac": self.anchor.event_mac(event),
                            }
                        ],
                    )
                    if tombstones:
                        connection.execute(
                            tombstones_table.insert(),
                            [
                                {
                                    **t.to_json(),
                                    "datasets": json.dumps(t.datasets),
                                    "event_seq": seq,
                                }
                                for t in tombstones
                            ],
                        )
                    self.tlog.append(connection, [_leaf(event)])
                    head = self.tlog.sign_head(connection)
                self.tlog.witness(head)  # after the commit: never ahead of it
                return event
            except IntegrityError:
                if attempt == MAX_APPEND_ATTEMPTS:
                    raise ConsentError("could not append to the erasure log", "retry") from None
                time.sleep(random.uniform(0.01, 0.05) * attempt)
            except OperationalError as exc:
                raise self.unusable(exc) from None
        raise AssertionError("unreachable")


def _leaf(event: ErasureEvent) -> dict[str, Any]:
    return {"kind": "erasure", "seq": event.seq, "hash": event.hash}


_RESTORE = (
    "do not trust erasure evidence from this database; restore it from a backup and compare "
    "with `lineage consent verify` (which checks the erasure log too)"
)
