"""The operator's side of the evidence: the key that signs tree heads and decisions, the keys
we trust, the transparency log, and what local jobs are given to sign with.

`Evidence(settings)` is opened per command (cheap: nothing is read until asked).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lineage import contract
from lineage.attest.envelopes import Envelope, sign, verify
from lineage.attest.jobinput import JobEvidence
from lineage.attest.keys import (
    AttestationError,
    SigningKey,
    TrustStore,
    init_keys,
    load_key_file,
    load_kms_key,
    utc_now,
)
from lineage.attest.merkle import TreeHead
from lineage.attest.statements import decision, statement_time
from lineage.attest.tlog import LogKeys, TransparencyLog
from lineage.config import Settings
from lineage.credentials import private_dir
from lineage.sqlstore import open_engine


@dataclass(frozen=True)
class Recorded:
    """A statement in the transparency log: its digest and leaf index."""

    digest: str
    index: int
    new: bool


class Evidence:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # -- keys ----------------------------------------------------------------------------------
    @functools.cached_property
    def key(self) -> SigningKey:
        """The operator's signing key: KMS, a configured file, or the home's (created once)."""
        settings = self.settings
        if settings.signing_kms_key_id:
            return load_kms_key(settings.signing_kms_key_id)
        if not settings.signing_key_file_override:
            init_keys(settings.home)
        return load_key_file(settings.signing_key_file)

    @functools.cached_property
    def trust(self) -> TrustStore:
        """`LINEAGE_TRUSTED_KEYS` and the operator's own key (it signs the log's heads and
        the decisions), else the home's trust file (the home's key among them)."""
        if self.settings.trusted_keys:
            configured = TrustStore.from_value(self.settings.trusted_keys)
            own = self.key
            if configured.get(own.key_id) is not None:
                return configured
            return TrustStore.of(
                [*configured.keys.values(), own.trusted()],
                f"{configured.source} and the operator's key {own.source}",
            )
        if not self.settings.signing_key_file_override and not self.settings.signing_kms_key_id:
            init_keys(self.settings.home)
        return TrustStore.load(self.settings.home, {})

    def job_env(self) -> dict[str, str]:
        """What a local job needs to sign: the key's *path* (or KMS id) and the public keys
        it must trust. Never the key itself."""
        env = {contract.TRUSTED_KEYS_ENV: self.trust.pem_bundle()}
        if self.settings.signing_kms_key_id:
            env[contract.SIGNING_KMS_ENV] = self.settings.signing_kms_key_id
        else:
            _ = self.key  # created and readable, or a clear error now rather than in the job
            env[contract.SIGNING_KEY_FILE_ENV] = str(self.settings.signing_key_file)
        return env

    # -- the transparency log ----------------------------------------------------------------
    @functools.cached_property
    def log(self) -> TransparencyLog:
        url = self.settings.consent_db
        if self.settings.consent_db_override is None:
            private_dir(self.settings.home)
        engine = open_engine(url, "LINEAGE_CONSENT_DB", "transparency log")
        return TransparencyLog(engine, self.log_keys)

    @property
    def log_keys(self) -> LogKeys:
        """The keys the transparency log signs and checks its heads with."""
        return LogKeys(self.settings.home, lambda: self.trust, lambda: self.key)

    def head(self) -> TreeHead:
        """A signed head covering every leaf of the log now."""
        return self.log.current_head()

    def job_input(self, directory: Path, dataset: Envelope | None = None) -> Path:
        """The `evidence` input of a job: today's signed head (and the dataset statement)."""
        return JobEvidence(self.head(), dataset, self.trust.pem_bundle()).write(directory)

    def record(self, envelope: Envelope, name: str, what: str = "statement") -> Recorded:
        """Put a statement's digest in the log, after checking its signature; once: a
        statement already in the log keeps its leaf."""
        body = envelope.body()
        verify(envelope, self.trust, at=statement_time(body), what=what)
        with self.log.writing() as connection:
            found = self.log.find(connection, "attestation", digest=envelope.digest)
            if found is not None:
                return Recorded(envelope.digest, found.index, False)
            (index,) = self.log.append(
                connection,
                [
                    {
                        "kind": "attestation",
                        "digest": envelope.digest,
                        "predicate_type": str(body.get("predicateType", "")),
                        "name": name,
                    }
                ],
            )
            head = self.log.sign_head(connection)
        self.log.witness(head)
        return Recorded(envelope.digest, index, True)

    def decide(
        self, kind: str, subjects: Sequence[Mapping[str, Any]], details: Mapping[str, Any]
    ) -> Envelope:
        """A decision signed by the operator and recorded in the log."""
        body = decision(kind, subjects, actor=self.settings.operator, at=utc_now(), details=details)
        envelope = sign(body, self.key)
        self.record(envelope, f"{kind}:{subjects[0].get('name', '')}", f"{kind} decision")
        return envelope


DECISIONS_DIR = "attestations/decisions"  # run artifacts: the signed decisions about its model


def model_subject(name: str, version: str, provenance_digest: str) -> dict[str, Any]:
    """A registered version as a statement's subject: its name, by its provenance's digest."""
    return {"name": f"models:/{name}/{version}", "digest": {"sha256": provenance_digest}}


def store_decision(settings: Settings, run_id: str, envelope: Envelope, kind: str) -> str:
    """Keep a signed decision with the run whose model it is about (an MLflow artifact)."""
    from lineage.registry import mlflow_client

    stamp = utc_now().replace(":", "").replace("-", "").replace(".", "")[:22]
    path = f"{DECISIONS_DIR}/{stamp}-{kind}-{envelope.digest[:12]}.dsse.json"  # by time
    mlflow_client(settings.mlflow_uri).log_text(run_id, envelope.dumps(), path)
    return path


def decisions_of_run(settings: Settings, run_id: str) -> list[Envelope]:
    """The signed decisions kept with a run, oldest first."""
    import tempfile

    from lineage.registry import mlflow_client

    client = mlflow_client(settings.mlflow_uri)
    listed = [a.path for a in client.list_artifacts(run_id, DECISIONS_DIR)]
    if not listed:
        return []
    with tempfile.TemporaryDirectory(prefix="lineage-decisions-") as tmp:
        local = Path(client.download_artifacts(run_id, DECISIONS_DIR, tmp))
        return [Envelope.read(path) for path in sorted(local.glob("*.dsse.json"))]


def verified(envelope: Envelope, trust: TrustStore, what: str) -> dict[str, Any]:
    """The statement of `envelope`, after its signature was checked."""
    body = envelope.body()
    verify(envelope, trust, at=statement_time(body), what=what)
    return body


__all__ = ["AttestationError", "Evidence", "Recorded", "verified"]
