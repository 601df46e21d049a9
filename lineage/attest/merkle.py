"""The Merkle side of the transparency log, apart from its database: RFC 6962 leaf hashes,
signed tree heads, inclusion and consistency proofs (computed and checked by `pymerkle`).

A job container checks a statement's head and proofs with these alone; keeping them out of
`lineage.attest.tlog` keeps SQLAlchemy out of every job's start-up.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pymerkle import BaseMerkleTree, InvalidProof, MerkleProof
from pymerkle import verify_consistency as _verify_consistency
from pymerkle import verify_inclusion as _verify_inclusion

from lineage.attest.envelopes import TREE_HEAD, Envelope, canonical, verify
from lineage.attest.keys import AttestationError, TrustStore

LEAF_KINDS = ("consent", "erasure", "attestation")
ALGORITHM = "sha256"


class _Tree(BaseMerkleTree):  # type: ignore[misc]
    """pymerkle's tree over leaf hashes already computed (read from the database)."""

    def __init__(self, digests: list[bytes]) -> None:
        self._digests = digests
        super().__init__(ALGORITHM)

    def _encode_entry(self, data: bytes) -> bytes:
        return data

    def _store_leaf(self, data: bytes, digest: bytes) -> int:
        self._digests.append(digest)
        return len(self._digests)

    def _get_leaf(self, index: int) -> bytes:
        return self._digests[index - 1]

    def _get_leaves(self, offset: int, width: int) -> list[bytes]:
        return self._digests[offset : offset + width]

    def _get_size(self) -> int:
        return len(self._digests)


def leaf_hash(entry: bytes) -> str:
    """RFC 6962 leaf hash of a canonical entry."""
    return hashlib.sha256(b"\x00" + entry).hexdigest()


def entry_bytes(entry: Mapping[str, Any]) -> bytes:
    if entry.get("kind") not in LEAF_KINDS:
        raise ValueError(f"unknown leaf kind {entry.get('kind')!r}")
    return canonical(dict(entry))


@dataclass(frozen=True)
class TreeHead:
    """A signed tree head: the log's size and root at a moment, signed."""

    log_id: str
    size: int
    root: str
    timestamp: str
    envelope: Envelope

    def compact(self) -> str:
        """One line of JSON (a run param: params are immutable in MLflow)."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    def to_json(self) -> dict[str, Any]:
        return {
            "log_id": self.log_id,
            "size": self.size,
            "root": self.root,
            "timestamp": self.timestamp,
            "envelope": self.envelope.to_json(),
        }

    @classmethod
    def from_envelope(cls, envelope: Envelope) -> TreeHead:
        if envelope.payload_type != TREE_HEAD:
            raise AttestationError(f"not a signed tree head ({envelope.payload_type!r})")
        body = envelope.body()
        try:
            return cls(
                str(body["log_id"]),
                int(body["size"]),
                str(body["root"]),
                str(body["timestamp"]),
                envelope,
            )
        except (KeyError, TypeError, ValueError):
            raise AttestationError("the tree head lacks log_id, size, root or timestamp") from None

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "tree head") -> TreeHead:
        """A head as stored (`to_json`): only the signed envelope counts; the plain fields
        beside it are for people and must repeat it."""
        if not isinstance(data, Mapping) or "envelope" not in data:
            raise AttestationError(f"{source} is not a signed tree head")
        head = cls.from_envelope(Envelope.from_json(data["envelope"], source))
        shown = (data.get("size"), data.get("root"))
        if shown != (None, None) and shown != (head.size, head.root):
            raise AttestationError(f"{source}: its size and root do not repeat its signed body")
        return head


def verify_head(head: TreeHead, trust: TrustStore, what: str = "tree head") -> TreeHead:
    """The head's signature by a trusted key valid at its timestamp."""
    verify(head.envelope, trust, at=head.timestamp, payload_type=TREE_HEAD, what=what)
    return head


def check_inclusion(entry: bytes, proof: Mapping[str, Any], head: TreeHead, index: int) -> None:
    """`entry` is leaf `index` (1-based) of the log whose head is `head`."""
    try:
        parsed = MerkleProof.deserialize(dict(proof))
        _verify_inclusion(
            bytes.fromhex(leaf_hash(entry)),
            bytes.fromhex(head.root),
            parsed,
            index=index,
            size=head.size,
            algorithm=ALGORITHM,
        )
    except (InvalidProof, ValueError) as exc:
        raise AttestationError(
            f"the inclusion proof of leaf {index} in the log of size {head.size} fails ({exc})"
        ) from None


def check_consistency(old: TreeHead, new: TreeHead, proof: Mapping[str, Any] | None) -> None:
    """The log at `new` extends the log at `old` (nothing below `old` was changed)."""
    if old.log_id != new.log_id:
        raise AttestationError(f"tree heads of two logs ({old.log_id} and {new.log_id})")
    if old.size > new.size:
        raise AttestationError(
            f"the log was truncated: a head of size {old.size} ({old.timestamp}) is newer than "
            f"the log's {new.size}"
        )
    if old.size == new.size:
        if old.root != new.root:
            raise AttestationError(f"two different roots for size {old.size}: the log was forked")
        return
    if old.size == 0:
        return
    if proof is None:
        raise AttestationError(f"no consistency proof from size {old.size} to {new.size}")
    try:
        parsed = MerkleProof.deserialize(dict(proof))
        _verify_consistency(
            bytes.fromhex(old.root),
            bytes.fromhex(new.root),
            parsed,
            prior_size=old.size,
            later_size=new.size,
            algorithm=ALGORITHM,
        )
    except (InvalidProof, ValueError) as exc:
        raise AttestationError(
            f"the log of size {new.size} is not an extension of its head of size {old.size} "
            f"({old.timestamp}): it was rewritten ({exc})"
        ) from None
