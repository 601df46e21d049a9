"""What each signed statement says (in-toto Statement v1; the model's is SLSA Provenance v1).

- **dataset** (signed by the processing job): subjects the manifest (`dataset/manifest.csv`,
  sha256) and DVC's `.dir` listing (md5, DVC's name for the version, and sha256 of the same
  bytes); the predicate names the source, the sampling parameters, tag, commit, repository,
  image, the consent snapshot and the transparency log's signed head when the job started.
- **model** (signed by the training job): SLSA Provenance v1 whose subjects are every file of
  the model directory but the few written after training (`UNSIGNED_FILES`);
  `externalParameters` are the hyperparameters and the dataset tag, `resolvedDependencies`
  the dataset repository at its commit, the dataset (DVC md5, manifest sha256), the dataset
  statement's digest and the image; `internalParameters.lineage` holds the training-time
  facts of `lineage.json` (data, digests, classes, image size, run id, metrics), so nothing
  a server or an auditor reads from `lineage.json` is unsigned.
- **decision** (signed by the operator's CLI): who moved which alias, deployed, erased or
  reported what, when; its subject is the statement or file the decision is about.

Every statement is checked against the in-toto attestation framework's own protobuf
definitions (Statement v1, SLSA Provenance v1) before it is signed or believed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lineage import contract
from lineage.attest.keys import AttestationError
from lineage.hashing import file_sha256

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
DATASET = "https://model-lineage.dev/attestations/dataset/v1"
PROVENANCE = "https://slsa.dev/provenance/v1"
DECISION = "https://model-lineage.dev/attestations/decision/v1"
TRAINING_BUILD = "https://model-lineage.dev/buildtypes/training/v1"
BUILDER_ID = "https://model-lineage.dev/builders/training-job"
DECISIONS = ("promote", "deploy", "erase", "audit-report", "reanchor")

# Files of a model directory that are written after training, so never signed: the deploy
# stamps lineage.json (registry version, alias), MLflow adds registered_model_meta when it
# downloads models:/, and the signatures themselves. Everything else is a subject.
SIGNATURE_FILE = contract.MODEL_SIGNATURE_FILE
PROVENANCE_FILE = contract.MODEL_PROVENANCE_FILE
DATASET_STATEMENT_FILE = contract.MODEL_DATASET_STATEMENT_FILE
LINEAGE_FILE = contract.MODEL_LINEAGE_FILE
MODEL_SIGNING_IGNORE = contract.MODEL_SIGNING_IGNORE
UNSIGNED_FILES = (*MODEL_SIGNING_IGNORE, SIGNATURE_FILE, PROVENANCE_FILE, DATASET_STATEMENT_FILE)


def subject(name: str, **digest: str) -> dict[str, Any]:
    return {"name": name, "digest": {k: v for k, v in digest.items() if v}}


def statement(
    subjects: Sequence[Mapping[str, Any]], predicate_type: str, predicate: Mapping[str, Any]
) -> dict[str, Any]:
    body = {
        "_type": STATEMENT_TYPE,
        "subject": [dict(s) for s in subjects],
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }
    validate(body)
    return body


def validate(body: Mapping[str, Any]) -> None:
    """Refuse anything that is not a valid in-toto Statement v1 (and, for provenance, a
    valid SLSA Provenance v1 predicate), by the attestation framework's own definitions."""
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement

    try:
        parsed = json_format.ParseDict(dict(body), statement_pb2.Statement())
        Statement.copy_from_pb(parsed).validate()
        if body.get("predicateType") == PROVENANCE:
            json_format.ParseDict(dict(body["predicate"]), provenance_pb2.Provenance())
    except (json_format.ParseError, ValueError, KeyError, TypeError) as exc:
        raise AttestationError(f"not a valid in-toto statement: {exc}") from None


# -- the dataset ------------------------------------------------------------------------------
def dataset_statement(
    *,
    manifest_sha256: str,
    listing_md5: str,
    listing_sha256: str,
    predicate: Mapping[str, Any],
) -> dict[str, Any]:
    return statement(
        [
            subject("dataset/manifest.csv", sha256=manifest_sha256),
            subject("dataset.dir", md5=listing_md5.removesuffix(".dir"), sha256=listing_sha256),
        ],
        DATASET,
        predicate,
    )


# -- the model --------------------------------------------------------------------------------
def model_files(model_dir: Path) -> dict[str, str]:
    """relpath -> sha256 of every signed file of a model directory."""
    found = {}
    for path in sorted(model_dir.rglob("*")):
        if not path.is_file():
            continue
        relpath = path.relative_to(model_dir).as_posix()
        if relpath in UNSIGNED_FILES or relpath.split("/")[0] in UNSIGNED_FILES:
            continue
        found[relpath] = file_sha256(path)
    return found


def provenance(
    files: Mapping[str, str],
    *,
    external: Mapping[str, Any],
    internal: Mapping[str, Any],
    dependencies: Sequence[Mapping[str, Any]],
    invocation: str,
    started: str,
    finished: str,
    builder_version: str,
    byproducts: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """SLSA Provenance v1 of a model directory whose files hash to `files`."""
    if not files:
        raise AttestationError("a model with no files cannot be attested")
    predicate = {
        "buildDefinition": {
            "buildType": TRAINING_BUILD,
            "externalParameters": dict(external),
            "internalParameters": dict(internal),
            "resolvedDependencies": [dict(d) for d in dependencies],
        },
        "runDetails": {
            "builder": {"id": BUILDER_ID, "version": {"model-lineage": builder_version}},
            "metadata": {"invocationId": invocation, "startedOn": started, "finishedOn": finished},
            "byproducts": [dict(b) for b in byproducts],
        },
    }
    return statement(
        [subject(name, sha256=digest) for name, digest in sorted(files.items())],
        PROVENANCE,
        predicate,
    )


@dataclass(frozen=True)
class ModelProvenance:
    """The facts a verified model provenance carries, read back."""

    body: dict[str, Any]

    @property
    def files(self) -> dict[str, str]:
        return {s["name"]: s["digest"].get("sha256", "") for s in self.body.get("subject", [])}

    @property
    def predicate(self) -> dict[str, Any]:
        predicate: dict[str, Any] = self.body.get("predicate", {})
        return predicate

    @property
    def lineage(self) -> dict[str, Any]:
        found: dict[str, Any] = (
            self.predicate.get("buildDefinition", {}).get("internalParameters", {}).get("lineage")
            or {}
        )
        return found

    @property
    def finished(self) -> str | None:
        metadata = self.predicate.get("runDetails", {}).get("metadata", {})
        finished = metadata.get("finishedOn")
        return str(finished) if finished else None

    @property
    def tree_head(self) -> dict[str, Any] | None:
        internal = self.predicate.get("buildDefinition", {}).get("internalParameters", {})
        head: dict[str, Any] | None = internal.get("transparency_log")
        return head

    def dependency(self, name: str) -> dict[str, Any] | None:
        deps = self.predicate.get("buildDefinition", {}).get("resolvedDependencies", [])
        return next((d for d in deps if d.get("name") == name), None)

    @property
    def dataset_statement_digest(self) -> str:
        found = self.dependency("dataset-attestation")
        return str((found or {}).get("digest", {}).get("sha256", ""))

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> ModelProvenance:
        if body.get("predicateType") != PROVENANCE:
            raise AttestationError(
                f"not a model provenance (predicateType {body.get('predicateType')!r})"
            )
        validate(body)
        return cls(dict(body))


# -- decisions --------------------------------------------------------------------------------
def decision(
    kind: str,
    subjects: Sequence[Mapping[str, Any]],
    *,
    actor: str,
    at: str,
    details: Mapping[str, Any],
) -> dict[str, Any]:
    """A person's decision about a model or a record, signed by the operator's key."""
    if kind not in DECISIONS:
        raise ValueError(f"unknown decision {kind!r}")
    return statement(
        subjects, DECISION, {"decision": kind, "actor": actor, "at": at, "details": dict(details)}
    )


def statement_time(body: Mapping[str, Any]) -> str | None:
    """When a statement says it was made (checked against its key's validity)."""
    predicate = body.get("predicate") or {}
    if body.get("predicateType") == PROVENANCE:
        return ModelProvenance(dict(body)).finished
    found: object = predicate.get("signed_at") or predicate.get("at")
    return str(found) if found else None
