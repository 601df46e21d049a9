"""DSSE envelopes: a payload (an in-toto Statement, or a tree head), its type, signatures.

Payloads are RFC 8785 canonical JSON, so a statement has one byte form and one digest
whoever writes it; the envelope and its pre-authentication encoding (PAE) are
securesystemslib's. An envelope verifies when one of its signatures is by a trusted key
that was valid when the statement says it was made.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rfc8785

from lineage.attest.keys import AttestationError, SigningKey, TrustedKey, TrustStore

if TYPE_CHECKING:  # securesystemslib loads boto3: imported where it is used
    from securesystemslib.dsse import Envelope as DsseEnvelope

IN_TOTO = "application/vnd.in-toto+json"
TREE_HEAD = "application/vnd.model-lineage.tree-head+json"


def canonical(value: Any) -> bytes:
    """RFC 8785 (JCS) canonical JSON: the one byte form of a statement or a leaf."""
    return bytes(rfc8785.dumps(value))


@dataclass(frozen=True)
class Envelope:
    """A signed payload, as read from or written to a `.dsse.json` file."""

    dsse: DsseEnvelope

    @property
    def payload(self) -> bytes:
        payload: bytes = self.dsse.payload
        return payload

    @property
    def payload_type(self) -> str:
        return str(self.dsse.payload_type)

    @property
    def digest(self) -> str:
        """The statement's sha256 (of the payload bytes): what the transparency log holds
        and what other statements cite."""
        return hashlib.sha256(self.payload).hexdigest()

    @property
    def key_ids(self) -> list[str]:
        return list(self.dsse.signatures)

    def body(self) -> dict[str, Any]:
        """The payload as JSON (an in-toto Statement, a tree head)."""
        try:
            data = json.loads(self.payload)
        except ValueError:
            raise AttestationError("the envelope's payload is not JSON") from None
        if not isinstance(data, dict):
            raise AttestationError("the envelope's payload is not a JSON object")
        return data

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = self.dsse.to_dict()
        return data

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n"

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.dumps())

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "envelope") -> Envelope:
        from securesystemslib.dsse import Envelope as DsseEnvelope

        try:  # from_dict consumes its argument's signature entries: give it a copy
            return cls(DsseEnvelope.from_dict(copy.deepcopy(dict(data))))
        except (KeyError, TypeError, ValueError) as exc:
            raise AttestationError(
                f"{source} is not a DSSE envelope ({exc.__class__.__name__}: {exc})"
            ) from None

    @classmethod
    def read(cls, path: Path) -> Envelope:
        try:
            return cls.from_json(json.loads(path.read_text()), str(path))
        except OSError as exc:
            raise AttestationError(f"cannot read {path} ({exc.__class__.__name__})") from None
        except ValueError:
            raise AttestationError(f"{path} is not JSON") from None


def sign(body: Mapping[str, Any], key: SigningKey, payload_type: str = IN_TOTO) -> Envelope:
    """`body` as canonical JSON in a DSSE envelope signed by `key`."""
    from securesystemslib.dsse import Envelope as DsseEnvelope

    envelope = DsseEnvelope(canonical(dict(body)), payload_type, {})
    envelope.sign(key.signer)
    return Envelope(envelope)


def verify(
    envelope: Envelope,
    trust: TrustStore,
    *,
    at: str | None = None,
    payload_type: str = IN_TOTO,
    what: str = "statement",
) -> TrustedKey:
    """The trusted key that signed `envelope` (valid at `at`, the moment the statement
    says it was made), or AttestationError naming why none did."""
    if envelope.payload_type != payload_type:
        raise AttestationError(
            f"the {what}'s envelope carries {envelope.payload_type!r}, not {payload_type!r}"
        )
    if not envelope.key_ids:
        raise AttestationError(f"the {what} carries no signature")
    if not trust:
        raise AttestationError(
            f"no trusted keys to check the {what}'s signature against ({trust.source or 'none'})",
            "pass the signer's public key (--key, or LINEAGE_TRUSTED_KEYS)",
        )
    pae = envelope.dsse.pae()
    problems = []
    for kid, signature in envelope.dsse.signatures.items():
        key = trust.get(kid)
        if key is None:
            problems.append(f"signed by key {kid[:16]}, which is not trusted")
        elif not key.verify(signature.signature, pae):
            problems.append(
                f"the signature by key {kid[:16]} does not verify: the {what} or its "
                "signature was altered"
            )
        elif not key.valid_at(at):
            window = f"{key.not_before or 'the start'} to {key.not_after or 'now'}"
            problems.append(f"key {kid[:16]} signed it at {at}, outside its validity ({window})")
        else:
            return key
    raise AttestationError(
        f"the {what} {envelope.digest[:16]} is not validly signed: " + "; ".join(problems),
        f"trusted keys from {trust.source}",
    )
