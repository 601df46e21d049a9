"""What makes the consent log tamper-evident to someone who can write the database.

A hash chain alone proves nothing to such an attacker: they can edit an event and recompute
every later hash, or delete the last events (a withdrawn patient then reads as granted
again). Two things kept *outside* the database close those holes:

- **a key**: every event carries ``HMAC-SHA256(key, event hash)``. Without the key, a
  rewritten chain cannot carry valid MACs. The key is ``LINEAGE_CONSENT_KEY`` (put it in a
  secrets manager in production) or a random key file created once, mode 0600, at
  ``$LINEAGE_HOME/consent.key``.
- **anchored heads**: after every append, the new head (sequence number + hash, MAC'd) is
  appended to a head file beside the key, one file per database; every consent snapshot
  also records the head it was taken at (`dataset.json` in git, the runs' MLflow params).
  A log that ends before an anchored head, or holds a different event at its sequence
  number, was truncated or rewritten.

What this does not protect against: an attacker who holds the key *and* can rewrite the
head file and every anchor (git history, MLflow), and a rollback of the database together
with the head file from the same backup (the anchors in git and MLflow still catch a
rollback below a published dataset's head).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from lineage.consent.events import ConsentIntegrityError
from lineage.credentials import private_dir, write_private_once

KEY_ENV = "LINEAGE_CONSENT_KEY"
KEY_FILE = "consent.key"
HEADS_DIR = "consent-heads"


class Chained(Protocol):
    """An event of a hash-chained log (consent, erasure)."""

    @property
    def seq(self) -> int: ...

    @property
    def hash(self) -> str: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class Head:
    """A point of the log that was seen: event `seq` had hash `hash`."""

    seq: int
    hash: str
    where: str  # where this anchor was kept, for the message that names it


@dataclass(frozen=True)
class ConsentAnchor:
    key: bytes
    key_source: str  # "LINEAGE_CONSENT_KEY" or the key file's path (never the key)
    head_file: Path
    database: str = ""  # which database the log is in (no password): see `log_id`

    @property
    def log_id(self) -> str:
        """A keyed id of this log: snapshots and runs record it beside the consent head, so
        `consent verify` checks this registry only against its own anchors (two registries
        on one MLflow never vouch for, or accuse, each other)."""
        return self.mac(f"consent-log:{self.database}")[:32]

    @classmethod
    def for_database(
        cls, home: Path, database_url: str, key: str | None = None, log: str = "consent"
    ) -> ConsentAnchor:
        """The anchor of one log in one database: the key (given, or the home's key file)
        and that log's head file under ``home/<log>-heads`` (the erasure log, kept in the
        same database, has its own)."""
        private_dir(home)
        if key:
            secret, source = key.encode("utf-8"), KEY_ENV
        else:
            path = home / KEY_FILE
            secret, source = _key_file(path), str(path)
        identity = database_identity(database_url)
        digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]
        heads = HEADS_DIR if log == "consent" else f"{log}-heads"
        return cls(secret, source, home / heads / f"{digest}.jsonl", identity)

    # -- MACs ---------------------------------------------------------------------------------
    def mac(self, message: str) -> str:
        return hmac.new(self.key, message.encode("utf-8"), hashlib.sha256).hexdigest()

    def event_mac(self, event: Chained) -> str:
        return self.mac(f"event:{event.hash}")

    def check_event(self, event: Chained, mac: str | None) -> None:
        if mac is None or not hmac.compare_digest(self.event_mac(event), mac):
            raise ConsentIntegrityError(
                f"{event.describe()} carries no valid MAC under the consent key "
                f"({self.key_source}): it was written or rewritten without the key",
                _RESTORE,
            )

    # -- the head file ------------------------------------------------------------------------
    def record_head(self, event: Chained) -> None:
        """Append the new head. One `write` of one line on an O_APPEND descriptor: concurrent
        writers interleave whole lines; a crash before it only leaves the file behind the
        database (weaker, never a false alarm)."""
        private_dir(self.head_file.parent)
        line = {
            "seq": event.seq,
            "hash": event.hash,
            "mac": self.mac(f"head:{event.seq}:{event.hash}"),
        }
        fd = os.open(self.head_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(line, sort_keys=True) + "\n").encode())
        finally:
            os.close(fd)

    def heads(self) -> list[Head]:
        """Every anchored head, each MAC-checked (an edited head file is tampering too)."""
        try:
            text = self.head_file.read_text()
        except FileNotFoundError:
            return []
        found = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{self.head_file} line {number}"
            try:
                data = json.loads(line)
                seq, digest, mac = int(data["seq"]), str(data["hash"]), str(data["mac"])
            except (ValueError, KeyError, TypeError):
                if number == len(text.splitlines()) and not text.endswith("\n"):
                    continue  # a crash mid-write leaves a partial last line: not an anchor
                raise ConsentIntegrityError(f"{where} is not a head record", _RESTORE) from None
            if not hmac.compare_digest(self.mac(f"head:{seq}:{digest}"), mac):
                raise ConsentIntegrityError(
                    f"{where} does not carry a valid MAC under the consent key "
                    f"({self.key_source}): the head file was edited, or this is not the key "
                    "the log was written with",
                    _RESTORE,
                )
            found.append(Head(seq, digest, where))
        return found


def check_heads(events: Sequence[Chained], heads: list[Head], what: str = "consent") -> None:
    """The log must reach every anchored head and hold the anchored event there."""
    for head in heads:
        if head.seq == 0:
            continue
        if head.seq > len(events):
            raise ConsentIntegrityError(
                f"the {what} log ends at event {len(events)}, but event {head.seq} was "
                f"anchored ({head.where}): events were deleted from the database",
                _RESTORE,
            )
        event = events[head.seq - 1]
        if event.hash != head.hash:
            raise ConsentIntegrityError(
                f"{what} event {head.seq} is not the event anchored at {head.where} "
                f"(hash {event.hash[:16]}, anchored {head.hash[:16]}): the log was rewritten",
                _RESTORE,
            )


def database_identity(url: str) -> str:
    """Which database a URL names, without its password: SQLite by its absolute file,
    others by driver, user, host, port and database name."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return url  # not a URL: opening the store reports it
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ":memory:"
        if database != ":memory:":
            database = str(Path(database).expanduser().resolve())
        return f"sqlite:{database}"
    return (
        f"{parsed.get_backend_name()}://{parsed.username or ''}@{parsed.host or ''}:"
        f"{parsed.port or ''}/{parsed.database or ''}"
    )


def _key_file(path: Path) -> bytes:
    """The key in `path`, created (32 random bytes, hex, 0600) the first time: written to a
    private temp file and linked into place, so a concurrent first use never reads half a
    key and exactly one key wins."""
    if not path.exists():
        write_private_once(path, secrets.token_hex(32) + "\n")
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)  # a key readable by others is no key
    key = path.read_text().strip()
    if len(key) < 32:
        raise ConsentIntegrityError(
            f"the consent key file {path} is empty or too short",
            "restore it from your backup (the log cannot be verified without it), or set "
            f"{KEY_ENV}",
        )
    return key.encode("utf-8")


_RESTORE = (
    "do not use this registry for training or audits; restore the database from a backup and "
    "compare with `lineage consent verify`"
)
