"""The consent registry in a SQL database: scans, and an append-only chain of events.

Nothing is ever updated or deleted: the current state and the state at any past instant are
derived from the events, after the whole hash chain has been verified. Appends are
serialised (one writer at a time, see `lineage.sqlstore`) and backed by unique constraints
on the event number and on the previous hash, so a concurrent writer that slipped through
would fail and retry rather than fork the chain: concurrent writers never lose an event.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from lineage.attest.host import Evidence
from lineage.attest.keys import AttestationError
from lineage.attest.merkle import TreeHead
from lineage.attest.tlog import Leaf, LogKeys, TransparencyLog
from lineage.config import Settings
from lineage.consent.anchor import Chained, ConsentAnchor, Head, check_heads
from lineage.consent.events import (
    ConsentError,
    ConsentEvent,
    ConsentIntegrityError,
    chain_event,
    utc_now,
    verify_chain,
)
from lineage.consent.registry_csv import RegistryRow
from lineage.consent.snapshot import Snapshot
from lineage.sqlstore import SqlStore, is_sqlite

log = logging.getLogger("lineage.consent")

ENV_VAR = "LINEAGE_CONSENT_DB"
MAX_APPEND_ATTEMPTS = 50

metadata = MetaData()
scans_table = Table(
    "consent_scans",
    metadata,
    Column("scan_id", String(128), primary_key=True),
    Column("patient_id", String(128), nullable=False, index=True),
    Column("file_path", String(1024), nullable=False),
    Column("label", String(128), nullable=False),
    Column("imported_at", String(32), nullable=False),
)
events_table = Table(
    "consent_events",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("patient_id", String(128), nullable=False, index=True),
    Column("action", String(16), nullable=False),
    Column("at", String(32), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("reason", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False, unique=True),
    Column("hash", String(64), nullable=False, unique=True),
    # HMAC of `hash` under the consent key (lineage.consent.anchor); NULL only in a database
    # from before keyed logs, which is sealed once on first use.
    Column("mac", String(64), nullable=True),
)


@dataclass(frozen=True)
class ImportReport:
    source: str
    rows: int
    patients_added: list[str] = field(default_factory=list)
    scans_added: int = 0
    granted: list[str] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)
    not_regranted: list[str] = field(default_factory=list)  # withdrawn here, granted in the file
    unchanged: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.scans_added or self.granted or self.withdrawn)

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "changed": self.changed}


@dataclass(frozen=True)
class PatientStatus:
    patient_id: str
    status: str  # granted | withdrawn
    since: str
    scans: list[dict[str, str]]
    events: list[ConsentEvent]

    def to_json(self) -> dict[str, Any]:
        return {
            "patient_id": self.patient_id,
            "status": self.status,
            "since": self.since,
            "scans": self.scans,
            "events": [e.to_json() for e in self.events],
        }


def _event(row: Any) -> ConsentEvent:
    return ConsentEvent(
        seq=int(row.seq),
        patient_id=str(row.patient_id),
        action=str(row.action),
        at=str(row.at),
        actor=str(row.actor),
        reason=str(row.reason),
        prev_hash=str(row.prev_hash),
        hash=str(row.hash),
    )


class ConsentStore(SqlStore):
    """The registry; `anchor` holds the key that MACs every event (see
    `lineage.consent.anchor`), and every event is also a leaf of the transparency log
    (`lineage.attest.tlog`) appended in the same transaction, whose signed heads make a
    truncation or rewrite detectable with the public key alone. Every read verifies the
    chain, every MAC, the log's leaves against its newest signed heads, and that the log
    holds exactly the events, before deriving anything. Heads anchored in the legacy head
    file (before the log) are still checked."""

    env_var = ENV_VAR
    what = "consent registry"
    hint = f"check {ENV_VAR} (a writable SQLite path or a reachable database)"
    metadata = metadata
    error = ConsentError

    def __init__(
        self, url: str, *, anchor: ConsentAnchor, log_keys: LogKeys, anchored: bool = True
    ) -> None:
        """`anchored=False` opens a log without anchors, for `reanchor` only."""
        super().__init__(url)
        self.anchor = anchor
        try:
            self._add_mac_column()
        except SQLAlchemyError as exc:
            raise self.unusable(exc) from None
        self.tlog = TransparencyLog(self.engine, log_keys)
        if anchored:
            self._migrate_to_tlog()

    @classmethod
    def from_settings(cls, settings: Settings, *, anchored: bool = True) -> ConsentStore:
        url, is_default = cls.settings_url(settings)
        if is_default:
            settings.home.mkdir(parents=True, exist_ok=True)
        anchor = ConsentAnchor.for_database(settings.home, url, settings.consent_key)
        return cls(url, anchor=anchor, log_keys=Evidence(settings).log_keys, anchored=anchored)

    @classmethod
    def settings_url(cls, settings: Settings) -> tuple[str, bool]:
        return settings.consent_db, settings.consent_db_override is None

    def _add_mac_column(self) -> None:
        columns = {c["name"] for c in inspect(self.engine).get_columns("consent_events")}
        if "mac" not in columns:
            with self.engine.begin() as connection:
                connection.execute(text("ALTER TABLE consent_events ADD COLUMN mac VARCHAR(64)"))

    def _migrate_to_tlog(self) -> None:
        """A log from before the transparency log, anchored by its head file, gets its
        events appended as leaves once (after the chain, the MACs and the head file verified
        them): from then on the log anchors it. A log with events and no anchor at all (no
        leaves, no head file: a database restored or moved, or built by hand) is refused,
        never sealed silently: `reanchor` does that, explicitly."""
        with self.engine.begin() as connection:
            self._lock_for_writing(connection)
            if self.tlog.leaves(connection, "consent"):
                return
            rows = list(connection.execute(select(events_table.c.seq)))
            if not rows:
                return
            if not self.anchor.heads():
                raise ConsentIntegrityError(
                    f"the consent log holds {len(rows)} events but no anchor: none is in the "
                    f"transparency log and there is no head file ({self.anchor.head_file})",
                    "restore the registry's database together with its transparency log; if "
                    "this database was moved or restored deliberately and you hold its key, "
                    "run `lineage consent reanchor --reason ...` (checked, then recorded as a "
                    "signed decision)",
                )
            events = self._events(connection, logged=False)
            self.tlog.append(connection, [_leaf(e) for e in events])
            head = self.tlog.sign_head(connection)
        self.tlog.witness(head)
        log.warning(
            "consent log: %d events from before the transparency log verified and appended to it "
            "(signed head of size %d)",
            len(events),
            head.size,
        )

    def reanchor(self) -> tuple[int, int, TreeHead]:
        """Anchor a log that has none (see `_migrate_to_tlog`): its hash chain verified,
        events without a MAC sealed under the key (counted), every event appended to the
        transparency log under a signed head. (events, sealed, head)"""
        with self.engine.begin() as connection:
            self._lock_for_writing(connection)
            if self.tlog.leaves(connection, "consent"):
                raise ConsentError(
                    "the consent log is anchored in the transparency log already",
                    "nothing to do: `lineage consent verify` checks it",
                )
            rows = list(connection.execute(select(events_table).order_by(events_table.c.seq)))
            events = [_event(row) for row in rows]
            verify_chain(events)
            sealed = 0
            for event, row in zip(events, rows, strict=True):
                if row.mac is None:
                    connection.execute(
                        update(events_table)
                        .where(events_table.c.seq == event.seq)
                        .values(mac=self.anchor.event_mac(event))
                    )
                    sealed += 1
                else:
                    self.anchor.check_event(event, row.mac)
            self.tlog.append(connection, [_leaf(e) for e in events])
            head = self.tlog.sign_head(connection)
        self.tlog.witness(head)
        return len(events), sealed, head

    def _lock_for_writing(self, connection: Connection) -> None:
        if not is_sqlite(self.engine):
            connection.execute(text("LOCK TABLE consent_events IN SHARE ROW EXCLUSIVE MODE"))
        self.tlog.lock(connection)

    # -- reading -------------------------------------------------------------------------------
    def _begin_read(self, connection: Connection) -> None:
        if not is_sqlite(self.engine):  # wait for in-flight writers: a consistent instant
            connection.execute(text("LOCK TABLE consent_events IN SHARE MODE"))

    def _events(self, connection: Connection, *, logged: bool = True) -> list[ConsentEvent]:
        """The whole log, verified: the hash chain, every event's MAC, the legacy anchored
        heads, and (`logged`) the transparency log against its newest signed heads and its
        consent leaves against the events, one for one."""
        rows = list(connection.execute(select(events_table).order_by(events_table.c.seq)))
        events = [_event(row) for row in rows]
        verify_chain(events)
        for event, row in zip(events, rows, strict=True):
            self.anchor.check_event(event, row.mac)
        check_heads(events, self.anchor.heads())
        if logged:
            try:
                self.tlog.verify(connection)
                check_logged(events, self.tlog.leaves(connection, "consent"), "consent")
            except AttestationError as exc:
                raise ConsentIntegrityError(exc.message, exc.hint) from None
        return events

    def events(self) -> list[ConsentEvent]:
        """The whole log, verified."""
        events: list[ConsentEvent] = self._read(self._events)
        return events

    def _read(self, action: Callable[[Connection], Any]) -> Any:
        try:
            with self.engine.begin() as connection:
                self._begin_read(connection)
                return action(connection)
        except OperationalError as exc:
            raise self.unusable(exc) from None

    def status(self, patient_id: str) -> PatientStatus:
        def read(connection: Connection) -> PatientStatus:
            history = [e for e in self._events(connection) if e.patient_id == patient_id]
            scans = connection.execute(
                select(scans_table)
                .where(scans_table.c.patient_id == patient_id)
                .order_by(scans_table.c.scan_id)
            )
            scan_rows = [
                {"scan_id": r.scan_id, "file_path": r.file_path, "label": r.label} for r in scans
            ]
            if not history:
                raise unknown_patient(patient_id)
            return PatientStatus(patient_id, history[-1].status, history[-1].at, scan_rows, history)

        result: PatientStatus = self._read(read)
        return result

    def _snapshot(self, connection: Connection, as_of: str | None) -> Snapshot:
        moment = as_of or utc_now()
        states: dict[str, str] = {}
        head_seq, head_hash = 0, "0" * 64
        for event in self._events(connection):
            if event.at > moment:
                break
            states[event.patient_id] = event.status
            head_seq, head_hash = event.seq, event.hash
        return Snapshot.build(moment, states, head_seq, head_hash, self.anchor.log_id)

    def snapshot(self, as_of: str | None = None) -> Snapshot:
        """Who had consent at `as_of` (now when None), taken at one consistent instant."""
        result: Snapshot = self._read(lambda connection: self._snapshot(connection, as_of))
        return result

    def export(self, as_of: str | None = None) -> tuple[Snapshot, list[RegistryRow]]:
        """The registry as it stood at `as_of`, in the reference CSV's shape."""

        def read(connection: Connection) -> tuple[Snapshot, list[RegistryRow]]:
            snapshot = self._snapshot(connection, as_of)
            consenting = set(snapshot.consenting)
            known = consenting | set(snapshot.withdrawn)
            scans = connection.execute(
                select(scans_table)
                .where(scans_table.c.imported_at <= snapshot.as_of)
                .order_by(scans_table.c.patient_id, scans_table.c.scan_id)
            )
            rows = [
                RegistryRow(
                    0,
                    s.patient_id,
                    s.scan_id,
                    s.file_path,
                    s.label,
                    "granted" if s.patient_id in consenting else "withdrawn",
                )
                for s in scans
                if s.patient_id in known
            ]
            return snapshot, rows

        result: tuple[Snapshot, list[RegistryRow]] = self._read(read)
        return result

    # -- writing -------------------------------------------------------------------------------
    def _append(
        self,
        plan: Callable[[Connection, list[ConsentEvent], str], list[tuple[str, str, str, str]]],
    ) -> list[ConsentEvent]:
        """Run `plan` (which may write scans and returns events to add) in one transaction
        that also appends its events to the chain; retry when another writer won the race."""
        for attempt in range(1, MAX_APPEND_ATTEMPTS + 1):
            try:
                with self.engine.begin() as connection:
                    self._lock_for_writing(connection)
                    events = self._events(connection)
                    now = utc_now()
                    last = events[-1] if events else None
                    added = []
                    for patient_id, action, actor, reason in plan(connection, events, now):
                        last = chain_event(last, patient_id, action, now, actor, reason)
                        added.append(last)
                    signed = None
                    if added:
                        connection.execute(
                            events_table.insert(),
                            [{**e.__dict__, "mac": self.anchor.event_mac(e)} for e in added],
                        )
                        self.tlog.append(connection, [_leaf(e) for e in added])
                        signed = self.tlog.sign_head(connection)
                if signed is not None:
                    self.tlog.witness(signed)  # after the commit: never ahead of it
                return added
            except IntegrityError:
                if attempt == MAX_APPEND_ATTEMPTS:
                    raise ConsentError(
                        "could not append to the consent log: too many concurrent writers",
                        "retry",
                    ) from None
                time.sleep(random.uniform(0.01, 0.05) * attempt)
            except OperationalError as exc:
                raise self.unusable(exc) from None
        raise AssertionError("unreachable")

    def record(self, patient_id: str, action: str, *, actor: str, reason: str) -> ConsentEvent:
        """Grant or withdraw consent for a known patient."""
        if not reason.strip():
            raise ConsentError("a reason is required", "pass --reason, e.g. 'patient request'")

        def plan(
            _connection: Connection, events: list[ConsentEvent], _now: str
        ) -> list[tuple[str, str, str, str]]:
            if not any(e.patient_id == patient_id for e in events):
                raise unknown_patient(patient_id)
            return [(patient_id, action, actor, reason)]

        return self._append(plan)[0]

    def import_rows(self, rows: Iterable[RegistryRow], *, source: str, actor: str) -> ImportReport:
        """Add new scans and patients, and apply consent changes; idempotent.

        A withdrawal in the file is always applied; a grant in the file never overrides a
        withdrawal recorded here (a stale export must not restore consent): those patients
        are reported, and `lineage consent grant` does it explicitly.
        """
        rows = list(rows)
        report: dict[str, Any] = {}

        def plan(
            connection: Connection, events: list[ConsentEvent], now: str
        ) -> list[tuple[str, str, str, str]]:
            current: dict[str, str] = {}
            for event in events:
                current[event.patient_id] = event.status
            scans_added = _add_new_scans(connection, rows, source, now)
            planned, changes = _consent_changes(rows, current, actor=actor, source=source)
            report.update(scans_added=scans_added, **changes)
            return planned

        self._append(plan)
        return ImportReport(source=source, rows=len(rows), **report)

    def verify(
        self, anchors: list[Head] | None = None, tree_heads: Sequence[TreeHead] = ()
    ) -> dict[str, Any]:
        """The whole log verified (chain, MACs, transparency log, legacy head file), and also
        against `anchors` recorded elsewhere (datasets' and runs' consent heads) and the
        transparency log's signed heads that runs and statements carry (`tree_heads`)."""
        events = self.events()
        extra = anchors or []
        check_heads(events, extra)
        with self.engine.begin() as connection:
            try:
                newest = self.tlog.verify(connection)
                checked = self.tlog.check_against(connection, tree_heads)
            except AttestationError as exc:
                raise ConsentIntegrityError(exc.message, exc.hint) from None
            leaves = self.tlog.size(connection)
        return {
            "transparency_log": {
                "leaves": leaves,
                "newest_head": None if newest is None else newest.size,
                "recorded_heads_checked": checked,
            },
            "ok": True,
            "registry": self.shown_url,
            "events": len(events),
            "patients": len({e.patient_id for e in events}),
            "head_seq": events[-1].seq if events else 0,
            "head_hash": events[-1].hash if events else None,
            "log_id": self.anchor.log_id,
            "key": self.anchor.key_source,
            "head_file": str(self.anchor.head_file),
            "anchored_heads": len(self.anchor.heads()),
            "external_anchors": len(extra),
        }


def _leaf(event: ConsentEvent) -> dict[str, Any]:
    return {"kind": "consent", "seq": event.seq, "hash": event.hash}


def check_logged(events: Sequence[Chained], leaves: Sequence[Leaf], what: str) -> None:
    """The transparency log holds exactly the events of a log, in order: a deleted event
    (its leaf remains), an added one (no leaf) or a rewritten one (another hash) is named."""
    for event, leaf in zip(events, leaves, strict=False):
        body = leaf.body()
        if body.get("seq") != event.seq or body.get("hash") != event.hash:
            raise ConsentIntegrityError(
                f"{event.describe()} is not the event the transparency log holds at leaf "
                f"{leaf.index} (seq {body.get('seq')}, hash {str(body.get('hash'))[:16]}): the "
                f"{what} log was rewritten",
                _RESTORE,
            )
    if len(leaves) > len(events):
        missing = leaves[len(events)].body()
        raise ConsentIntegrityError(
            f"the {what} log ends at event {len(events)}, but the transparency log holds event "
            f"{missing.get('seq')} (leaf {leaves[len(events)].index}): events were deleted",
            _RESTORE,
        )
    if len(events) > len(leaves):
        raise ConsentIntegrityError(
            f"{events[len(leaves)].describe()} is not in the transparency log: it was added "
            "to the database directly",
            _RESTORE,
        )


_RESTORE = (
    "do not use this registry for training or audits; restore the database from a backup and "
    "compare with `lineage consent verify`"
)


def _add_new_scans(connection: Connection, rows: list[RegistryRow], source: str, now: str) -> int:
    """Insert the scans the registry does not know yet; refuse (nothing imported) a file whose
    known scans contradict the registry. Returns how many were added."""
    existing = {
        r.scan_id: r
        for r in connection.execute(
            select(scans_table).where(scans_table.c.scan_id.in_([row.scan_id for row in rows]))
        )
    }
    conflicts = []
    new_scans = []
    for row in rows:
        known = existing.get(row.scan_id)
        if known is None:
            new_scans.append(row)
        elif (known.patient_id, known.file_path, known.label) != (
            row.patient_id,
            row.file_path,
            row.label,
        ):
            conflicts.append(
                f"line {row.line}: scan {row.scan_id} is registered as "
                f"{known.patient_id}, {known.file_path}, {known.label}"
            )
    if conflicts:
        raise ConsentError(
            f"{source}: {len(conflicts)} scans contradict the registry: "
            + "; ".join(conflicts[:10]),
            "scan ids are permanent: fix the file; nothing was imported",
        )
    if new_scans:
        connection.execute(
            scans_table.insert(),
            [
                {
                    "scan_id": r.scan_id,
                    "patient_id": r.patient_id,
                    "file_path": r.file_path,
                    "label": r.label,
                    "imported_at": now,
                }
                for r in new_scans
            ],
        )
    return len(new_scans)


def _consent_changes(
    rows: list[RegistryRow], current: dict[str, str], *, actor: str, source: str
) -> tuple[list[tuple[str, str, str, str]], dict[str, Any]]:
    """The events a file asks for, given each patient's current status, and what they do.
    A grant in the file never overrides a withdrawal recorded here (`not_regranted`)."""
    wanted: dict[str, str] = {}
    for row in rows:
        wanted.setdefault(row.patient_id, row.status)
    planned: list[tuple[str, str, str, str]] = []
    added: list[str] = []
    granted: list[str] = []
    withdrawn: list[str] = []
    kept: list[str] = []
    for patient, status in sorted(wanted.items()):
        state = current.get(patient)
        if state is None:
            added.append(patient)
        if state == status:
            continue
        if state == "withdrawn" and status == "granted":
            kept.append(patient)
            continue
        action = "grant" if status == "granted" else "withdraw"
        (granted if action == "grant" else withdrawn).append(patient)
        planned.append((patient, action, actor, f"import {source}"))
    changes = {
        "patients_added": added,
        "granted": granted,
        "withdrawn": withdrawn,
        "not_regranted": kept,
        "unchanged": len(wanted) - len(planned) - len(kept),
    }
    return planned, changes


def unknown_patient(patient_id: str) -> ConsentError:
    return ConsentError(
        f"patient {patient_id} is not in the consent registry",
        "check the id (`lineage consent export` lists them) or import the registry CSV first",
    )
