"""Consent events and the hash chain that makes any edit of history detectable.

Each event's hash covers its own fields and the previous event's hash, so changing, deleting
or reordering a stored event breaks every hash after it. The chain is verified before any
state is derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from lineage.errors import ConfigError, LineageError
from lineage.hashing import canonical_sha256

GENESIS = "0" * 64
ACTIONS = ("grant", "withdraw")
STATUS_OF = {"grant": "granted", "withdraw": "withdrawn"}


class ConsentError(LineageError):
    """The consent registry cannot be used as asked (unknown patient, bad input...)."""


class ConsentIntegrityError(ConsentError):
    """The stored history does not match its hash chain: someone edited it."""


@dataclass(frozen=True)
class ConsentEvent:
    seq: int
    patient_id: str
    action: str  # grant | withdraw
    at: str  # ISO 8601 UTC with microseconds, e.g. 2026-11-02T10:00:00.000000Z
    actor: str
    reason: str
    prev_hash: str
    hash: str

    @property
    def status(self) -> str:
        return STATUS_OF[self.action]

    def describe(self) -> str:
        return f"consent event {self.seq} ({self.patient_id}, {self.action} at {self.at})"

    def to_json(self) -> dict[str, object]:
        return dict(self.__dict__)


def event_hash(
    prev_hash: str, seq: int, patient_id: str, action: str, at: str, actor: str, reason: str
) -> str:
    return canonical_sha256(
        {
            "prev": prev_hash,
            "seq": seq,
            "patient_id": patient_id,
            "action": action,
            "at": at,
            "actor": actor,
            "reason": reason,
        }
    )


def chain_event(
    prev: ConsentEvent | None, patient_id: str, action: str, at: str, actor: str, reason: str
) -> ConsentEvent:
    """The next event after `prev` (None: the first event)."""
    if action not in ACTIONS:
        raise ConsentError(f"unknown consent action {action!r}", "use grant or withdraw")
    seq = 1 if prev is None else prev.seq + 1
    prev_hash = GENESIS if prev is None else prev.hash
    if prev is not None and at < prev.at:
        at = prev.at  # clocks of different writers disagree: time never runs backwards here
    digest = event_hash(prev_hash, seq, patient_id, action, at, actor, reason)
    return ConsentEvent(seq, patient_id, action, at, actor, reason, prev_hash, digest)


def verify_chain(events: list[ConsentEvent]) -> None:
    """Raise at the first event whose place or content does not match the chain."""
    prev_hash, prev_at = GENESIS, ""
    for expected_seq, event in enumerate(events, start=1):
        if event.seq != expected_seq:
            raise ConsentIntegrityError(
                f"consent event {expected_seq} is missing (found {event.seq} in its place)",
                _RESTORE,
            )
        recomputed = event_hash(
            event.prev_hash,
            event.seq,
            event.patient_id,
            event.action,
            event.at,
            event.actor,
            event.reason,
        )
        if event.prev_hash != prev_hash or recomputed != event.hash:
            raise ConsentIntegrityError(
                f"consent event {event.seq} ({event.patient_id}, {event.action} at {event.at}) "
                "does not match the hash chain: the history was edited",
                _RESTORE,
            )
        if event.at < prev_at:
            raise ConsentIntegrityError(f"consent event {event.seq} is out of time order", _RESTORE)
        prev_hash, prev_at = event.hash, event.at


_RESTORE = (
    "do not use this registry for training or audits; restore the database from a backup and "
    "compare with `lineage consent verify`"
)


def utc_now() -> str:
    return format_time(datetime.now(UTC))


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> str:
    """Any ISO 8601 date or time (naive means UTC) -> our canonical UTC string."""
    cleaned = text.strip()
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ConfigError(
            f"cannot read the time {text!r}", "use ISO 8601, e.g. 2026-10-01 or 2026-10-01T00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_time(moment)
