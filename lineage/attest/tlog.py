"""The transparency log: an append-only Merkle tree of everything that must never be
rewritten, with signed tree heads.

Leaves are RFC 8785 canonical JSON entries: a consent event (`{"kind": "consent", "seq",
"hash"}`), an erasure event (`"erasure"`), a signed statement's digest (`"attestation"`).
The tree is RFC 6962's (leaf hash `sha256(0x00 || entry)`, node `sha256(0x01 || l || r)`,
split at the largest power of two), computed and proven by `pymerkle`; a **signed tree head**
(STH) is a DSSE envelope over `{"log_id", "size", "root", "timestamp"}` signed by the
operator's key. Whoever holds an older STH (a dataset's or a model's statement carries the
one current when it was made, an evidence bundle carries the latest) asks for a consistency
proof to a newer one and checks it with the public key alone: a log that was truncated, or
rewritten below that head, cannot produce one.

The leaves live in the registry's database (`LINEAGE_CONSENT_DB`), so a consent or erasure
event and its leaf commit in one transaction; every STH is kept there and appended to a
witness file in `LINEAGE_HOME` (`tlog-heads/<log id>.jsonl`), outside the database. Before
a new head is signed, the leaves must still reproduce the newest head known to the
database *and* to the witness: the key never signs a rewritten history.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Connection, Engine, Integer, MetaData, String, Table, Text, select
from sqlalchemy import text as sql_text

from lineage.attest.envelopes import TREE_HEAD, Envelope, sign
from lineage.attest.keys import AttestationError, SigningKey, TrustStore, utc_now
from lineage.attest.merkle import (
    TreeHead,
    _Tree,
    entry_bytes,
    leaf_hash,
    verify_head,
)
from lineage.credentials import private_dir

WITNESS_DIR = "tlog-heads"

metadata = MetaData()
leaves_table = Table(
    "tlog_leaves",
    metadata,
    Column("idx", Integer, primary_key=True, autoincrement=False),  # 1-based, contiguous
    Column("kind", String(16), nullable=False, index=True),
    Column("entry", Text, nullable=False),  # canonical JSON
    Column("leaf_hash", String(64), nullable=False),
    Column("appended_at", String(32), nullable=False),
)
heads_table = Table(
    "tlog_heads",
    metadata,
    Column("size", Integer, primary_key=True, autoincrement=False),
    Column("root", String(64), nullable=False),
    Column("envelope", Text, nullable=False),
)
meta_table = Table(
    "tlog_meta",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", String(128), nullable=False),
)


@dataclass(frozen=True)
class Leaf:
    index: int
    kind: str
    entry: bytes
    leaf_hash: str

    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.entry)
        return data


@dataclass(frozen=True)
class LogKeys:
    """Who signs the log's heads and which keys are trusted (read when first needed), and
    the home that keeps the witness file."""

    home: Path
    trust: Callable[[], TrustStore]
    signer: Callable[[], SigningKey]

    @classmethod
    def of_home(cls, home: Path) -> LogKeys:
        """The home's own key file and trust file (created on first use)."""
        from lineage.attest.keys import signing_key

        return cls(home, lambda: TrustStore.load(home, {}), lambda: signing_key(home, {}))


class TransparencyLog:
    """The log's tables in a database, its witness file, and the key that signs heads.

    Writers call `append` and `sign_head` inside their own transaction (holding the log's
    write lock, `lock`), then `witness` after the commit."""

    def __init__(self, engine: Engine, keys: LogKeys) -> None:
        self.engine = engine
        self.home = keys.home
        self._trust = keys.trust
        self._signer = keys.signer
        metadata.create_all(engine)

    # -- identity and the witness file ---------------------------------------------------------
    def log_id(self, connection: Connection) -> str:
        """A random id made when the log is created (heads name it; the witness file is
        named after it, so moving the database does not lose its heads)."""
        found = connection.execute(
            select(meta_table.c.value).where(meta_table.c.name == "log_id")
        ).scalar()
        if found:
            return str(found)
        created = secrets.token_hex(16)
        connection.execute(meta_table.insert(), [{"name": "log_id", "value": created}])
        return created

    def witness_file(self, log_id: str) -> Path:
        return self.home / WITNESS_DIR / f"{log_id}.jsonl"

    def witness(self, head: TreeHead) -> None:
        """Append a signed head to the witness file (one write of one line, O_APPEND)."""
        path = self.witness_file(head.log_id)
        private_dir(path.parent)
        line = json.dumps(head.to_json(), sort_keys=True, separators=(",", ":")) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def witnessed(self, log_id: str) -> list[TreeHead]:
        path = self.witness_file(log_id)
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return []
        heads = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                heads.append(TreeHead.from_json(json.loads(line), f"{path} line {number}"))
            except (ValueError, AttestationError):
                if number == len(lines):
                    continue  # a crash mid-write leaves a partial last line: not a head
                raise AttestationError(
                    f"{path} line {number} is not a signed tree head", _RESTORE
                ) from None
        return heads

    # -- writing ---------------------------------------------------------------------------------
    def lock(self, connection: Connection) -> None:
        """Serialise writers of the log (SQLite: the transaction's BEGIN IMMEDIATE)."""
        if connection.dialect.name != "sqlite":
            connection.execute(sql_text("LOCK TABLE tlog_leaves IN SHARE ROW EXCLUSIVE MODE"))

    def append(self, connection: Connection, entries: Sequence[Mapping[str, Any]]) -> list[int]:
        """Add leaves (inside the caller's transaction, under `lock`); their indices."""
        size = self.size(connection)
        now = utc_now()
        rows: list[dict[str, Any]] = []
        for offset, entry in enumerate(entries, start=1):
            data = entry_bytes(entry)
            rows.append(
                {
                    "idx": size + offset,
                    "kind": str(entry["kind"]),
                    "entry": data.decode("utf-8"),
                    "leaf_hash": leaf_hash(data),
                    "appended_at": now,
                }
            )
        if rows:
            connection.execute(leaves_table.insert(), rows)
        return [int(r["idx"]) for r in rows]

    def sign_head(self, connection: Connection) -> TreeHead:
        """Sign the log's current root, after checking the leaves still reproduce the
        newest head known (database and witness): a rewritten log is never signed."""
        log_id = self.log_id(connection)
        tree = self.tree(connection)
        self._check_known(connection, log_id, tree)
        size = tree.get_size()
        root = tree.get_root().hex()
        key = self._signer()  # first: a key created now is valid from its creation on
        body = {"log_id": log_id, "size": size, "root": root, "timestamp": utc_now()}
        head = TreeHead.from_envelope(sign(body, key, TREE_HEAD))
        stored = connection.execute(
            select(heads_table.c.root).where(heads_table.c.size == size)
        ).scalar()
        if stored is None:
            connection.execute(
                heads_table.insert(),
                [{"size": size, "root": root, "envelope": head.envelope.dumps()}],
            )
        elif stored != root:
            raise AttestationError(f"a head of size {size} with another root is stored", _RESTORE)
        return head

    @contextlib.contextmanager
    def writing(self) -> Iterator[Connection]:
        """A transaction holding the log's write lock (for appends of attestations)."""
        with self.engine.begin() as connection:
            self.lock(connection)
            yield connection

    def add(self, entries: Sequence[Mapping[str, Any]]) -> tuple[list[int], TreeHead]:
        """Append `entries` on their own and sign the new head (witnessed)."""
        with self.writing() as connection:
            indices = self.append(connection, entries)
            head = self.sign_head(connection)
        self.witness(head)
        return indices, head

    # -- reading ---------------------------------------------------------------------------------
    def size(self, connection: Connection) -> int:
        return int(
            connection.execute(
                select(leaves_table.c.idx).order_by(leaves_table.c.idx.desc()).limit(1)
            ).scalar()
            or 0
        )

    def leaves(self, connection: Connection, kind: str | None = None) -> list[Leaf]:
        query = select(leaves_table).order_by(leaves_table.c.idx)
        if kind is not None:
            query = query.where(leaves_table.c.kind == kind)
        found = [
            Leaf(int(r.idx), str(r.kind), str(r.entry).encode("utf-8"), str(r.leaf_hash))
            for r in connection.execute(query)
        ]
        for leaf in found:  # the stored hash is a cache: the entry is what counts
            if leaf_hash(leaf.entry) != leaf.leaf_hash:
                raise AttestationError(
                    f"transparency log leaf {leaf.index} does not hash to its stored hash: the "
                    "log was edited",
                    _RESTORE,
                )
        return found

    def tree(self, connection: Connection) -> _Tree:
        """The Merkle tree of the stored leaf hashes, refusing a gap in the indices. (An
        entry edited under its old hash is caught wherever entries are read, `leaves`; a
        hash edited breaks the roots the signed heads hold.)"""
        rows = connection.execute(
            select(leaves_table.c.idx, leaves_table.c.leaf_hash).order_by(leaves_table.c.idx)
        )
        digests = []
        for expected, row in enumerate(rows, start=1):
            if int(row.idx) != expected:
                raise AttestationError(
                    f"transparency log leaf {expected} is missing (found {row.idx}): leaves were "
                    "deleted",
                    _RESTORE,
                )
            digests.append(bytes.fromhex(row.leaf_hash))
        return _Tree(digests)

    def stored_heads(self, connection: Connection) -> list[TreeHead]:
        rows = connection.execute(select(heads_table).order_by(heads_table.c.size))
        return [
            TreeHead.from_envelope(Envelope.from_json(json.loads(r.envelope), f"head {r.size}"))
            for r in rows
        ]

    def known_heads(self, connection: Connection, log_id: str) -> list[TreeHead]:
        """The newest head in the database and the newest in the witness file."""
        found = []
        stored = connection.execute(
            select(heads_table).order_by(heads_table.c.size.desc()).limit(1)
        ).first()
        if stored is not None:
            found.append(
                TreeHead.from_envelope(Envelope.from_json(json.loads(stored.envelope), "head"))
            )
        witnessed = self.witnessed(log_id)
        if stored is not None and not witnessed:
            raise AttestationError(
                f"the transparency log's witness file {self.witness_file(log_id)} is missing "
                "(the database holds signed heads)",
                "restore LINEAGE_HOME's tlog-heads/ from a backup; after a deliberate move of "
                "LINEAGE_HOME, run `lineage log adopt` to witness the database's newest head "
                "again (it is checked first)",
            )
        if witnessed:
            found.append(max(witnessed, key=lambda h: h.size))
        return found

    def _check_known(self, connection: Connection, log_id: str, tree: _Tree) -> None:
        trust = self._trust()
        for head in self.known_heads(connection, log_id):
            verify_head(head, trust)
            if head.log_id != log_id:
                raise AttestationError(
                    f"a head of log {head.log_id} is filed under log {log_id}", _RESTORE
                )
            _check_holds(tree, head, "signed", "leaves were deleted")

    def verify(self, connection: Connection, *, entries: bool = False) -> TreeHead | None:
        """Check the log against its newest known heads (and, with `entries`, every entry
        against its leaf hash); the newest head (None: empty)."""
        log_id = self.log_id(connection)
        if entries:
            self.leaves(connection)
        tree = self.tree(connection)
        self._check_known(connection, log_id, tree)
        heads = self.known_heads(connection, log_id)
        return max(heads, key=lambda h: h.size) if heads else None

    def adopt(self) -> TreeHead | None:
        """Witness the database's newest head again (after a deliberate move of LINEAGE_HOME
        lost the witness file), once it is checked: signed by a trusted key, and the leaves
        still hash to it."""
        with self.writing() as connection:
            log_id = self.log_id(connection)
            tree = self.tree(connection)
            stored = self.stored_heads(connection)
            if not stored:
                return None
            newest = max(stored, key=lambda h: h.size)
            verify_head(newest, self._trust())
            if newest.size > tree.get_size() or (
                newest.size and tree.get_root(newest.size).hex() != newest.root
            ):
                raise AttestationError(
                    f"the database's newest head (size {newest.size}) does not match its leaves",
                    _RESTORE,
                )
            if newest.log_id != log_id:
                raise AttestationError(f"the newest head is of log {newest.log_id}", _RESTORE)
        self.witness(newest)
        return newest

    def check_against(self, connection: Connection, heads: Sequence[TreeHead]) -> int:
        """The log against heads kept elsewhere (the ones runs and statements carry): each
        signed by a trusted key, and the leaves still hash to it. How many were checked
        (heads of other logs are not this log's anchors and are skipped)."""
        log_id = self.log_id(connection)
        tree = self.tree(connection)
        checked = 0
        for head in heads:
            if head.log_id != log_id:
                continue
            verify_head(head, self._trust(), "a recorded tree head")
            _check_holds(tree, head, "recorded", "it was truncated")
            checked += 1
        return checked

    def current_head(self) -> TreeHead:
        """A signed head covering every leaf (a new one when the log grew since the last)."""
        with self.writing() as connection:
            log_id = self.log_id(connection)
            tree = self.tree(connection)
            self._check_known(connection, log_id, tree)
            heads = self.known_heads(connection, log_id)
            newest = max(heads, key=lambda h: h.size) if heads else None
            if newest is not None and newest.size == tree.get_size():
                return newest
            head = self.sign_head(connection)
        self.witness(head)
        return head

    def find(self, connection: Connection, kind: str, **fields: Any) -> Leaf | None:
        """The first leaf of `kind` whose entry holds `fields`."""
        for leaf in self.leaves(connection, kind):
            body = leaf.body()
            if all(body.get(k) == v for k, v in fields.items()):
                return leaf
        return None

    def prove_inclusion(self, connection: Connection, index: int, size: int) -> dict[str, Any]:
        proof: dict[str, Any] = self.tree(connection).prove_inclusion(index, size).serialize()
        return proof

    def prove_consistency(
        self, connection: Connection, old: int, new: int
    ) -> dict[str, Any] | None:
        if old == 0 or old == new:
            return None
        proof: dict[str, Any] = self.tree(connection).prove_consistency(old, new).serialize()
        return proof


def _check_holds(tree: _Tree, head: TreeHead, how: str, truncation: str) -> None:
    """The leaves still reach `head` and hash to its root (`how`: signed, recorded)."""
    if head.size > tree.get_size():
        raise AttestationError(
            f"the transparency log holds {tree.get_size()} leaves, but a head of size "
            f"{head.size} was {how} at {head.timestamp}: {truncation}",
            _RESTORE,
        )
    if head.size and tree.get_root(head.size).hex() != head.root:
        raise AttestationError(
            f"the transparency log's first {head.size} leaves no longer hash to the root "
            f"{how} at {head.timestamp}: it was rewritten",
            _RESTORE,
        )


_RESTORE = (
    "do not trust evidence from this database; restore it (and LINEAGE_HOME's tlog-heads/) "
    "from a backup and check with `lineage log verify`"
)
