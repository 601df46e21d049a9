"""What a job signs with, described once for the operator that stages it and the job that
reads it: the `evidence` input (`evidence.json`: the transparency log's signed head when the
job was started, and for training the dataset statement of the tag it trains on), and the
keys from the job's environment (the signing key's path or KMS id; the trusted public keys).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lineage import contract
from lineage.attest.envelopes import Envelope
from lineage.attest.keys import (
    AttestationError,
    SigningKey,
    TrustedKey,
    TrustStore,
    signing_key_from_env,
)
from lineage.attest.merkle import TreeHead

log = logging.getLogger("lineage.attest")


@dataclass(frozen=True)
class JobEvidence:
    """The `evidence` input of a job."""

    tree_head: TreeHead | None = None
    dataset_statement: Envelope | None = None
    trusted_keys: str = ""  # PEM: the public keys whose statements the job may rely on

    def to_json(self) -> dict[str, Any]:
        return {
            "trusted_keys": self.trusted_keys,
            "tree_head": None if self.tree_head is None else self.tree_head.to_json(),
            "dataset_statement": None
            if self.dataset_statement is None
            else self.dataset_statement.to_json(),
        }

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / contract.EVIDENCE_FILE
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    def params(self) -> dict[str, str]:
        """The tree head as a run param (`tlog_head`): MLflow keeps it outside the log's
        database, where `lineage consent verify` and `lineage log verify` find it."""
        return {} if self.tree_head is None else {"tlog_head": self.tree_head.compact()}

    @classmethod
    def read(cls, directory: Path) -> JobEvidence:
        """The input in `directory` (empty when the job was given none: an older launcher)."""
        path = directory / contract.EVIDENCE_FILE
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
            head = data.get("tree_head")
            statement = data.get("dataset_statement")
            return cls(
                TreeHead.from_json(head, str(path)) if head else None,
                Envelope.from_json(statement, str(path)) if statement else None,
                str(data.get("trusted_keys") or ""),
            )
        except (ValueError, AttributeError) as exc:
            raise AttestationError(f"{path} is not an evidence input ({exc})") from None


@dataclass(frozen=True)
class JobKeys:
    """What a job signs with and what it trusts (from its environment)."""

    key: SigningKey | None
    trust: TrustStore

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, trusted: str = "") -> JobKeys:
        """The key from the environment; the trusted keys from `trusted` (the evidence
        input's), else `LINEAGE_TRUSTED_KEYS`, else the key's own public half."""
        env = os.environ if env is None else env
        key = signing_key_from_env(env)
        configured = trusted.strip() or env.get(contract.TRUSTED_KEYS_ENV, "").strip()
        if configured:
            trust = TrustStore.from_value(configured)
        elif key is not None:  # at least its own key: what it signed verifies
            trust = TrustStore.of([TrustedKey(key.key_id, key.public_key, source=key.source)], "")
        else:
            trust = TrustStore({}, "no key configured")
        if key is None:
            log.warning(
                "no signing key (%s or %s): this job's output is unsigned, and `trace`, "
                "`deploy` and `promote` will refuse it",
                contract.SIGNING_KEY_FILE_ENV,
                contract.SIGNING_KMS_ENV,
            )
        return cls(key, trust)

    @property
    def key_file(self) -> Path | None:
        """The key's file (None for KMS)."""
        if self.key is None or self.key.source.startswith("kms:"):
            return None
        return Path(self.key.source)
