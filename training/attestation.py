"""The model's signed provenance, made by the job that trained it.

Before training: the dataset statement the operator staged (the `evidence` channel) must be
signed by a trusted key and name exactly the data the job fetched and verified (manifest
sha256, DVC md5, tag, commit); a statement for other data fails the job. After training:
SLSA Provenance v1 over every model file, `provenance.dsse.json`, the dataset statement
beside it, then `model.sig` over the whole directory (OpenSSF model signing), all before a
byte leaves the job.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lineage.attest.checks import dataset_facts, verify_model
from lineage.attest.envelopes import Envelope, sign, verify
from lineage.attest.jobinput import JobEvidence, JobKeys
from lineage.attest.keys import AttestationError, utc_now
from lineage.attest.modelsig import sign_model_dir
from lineage.attest.statements import (
    DATASET_STATEMENT_FILE,
    PROVENANCE_FILE,
    UNSIGNED_FILES,
    model_files,
    provenance,
    statement_time,
)
from lineage.errors import LineageError
from lineage.record import LineageRecord
from lineage.version import __version__
from training.fetch import FetchedDataset
from training.hyperparameters import TrainingHyperparameters

log = logging.getLogger("lineage.training")


class SigningError(LineageError):
    pass


def checked_dataset_statement(
    evidence: JobEvidence, keys: JobKeys, fetched: FetchedDataset
) -> Envelope | None:
    """The dataset statement, verified against the fetched data (None when none was given:
    a dataset published before datasets were signed; the provenance then cites none)."""
    envelope = evidence.dataset_statement
    if envelope is None:
        log.warning("no signed dataset statement for %s: the model will cite none", fetched.tag)
        return None
    if not keys.trust:  # no key at all: the model is unsigned anyway, and refused downstream
        log.warning(
            "no trusted keys to check the dataset statement of %s: the model will cite none",
            fetched.tag,
        )
        return None
    try:
        verify(envelope, keys.trust, at=statement_time(envelope.body()), what="dataset statement")
    except AttestationError as exc:
        raise SigningError(f"the dataset statement of {fetched.tag}: {exc}") from None
    facts = dataset_facts(envelope)
    fetched_facts = {
        "manifest_sha256": fetched.manifest_sha256,
        "dataset_md5": fetched.dataset_md5,
        "dvc_tag": fetched.tag,
        "data_git_commit_id": fetched.commit,
    }
    wrong = [
        f"{k}: signed {facts[k]}, fetched {v}" for k, v in fetched_facts.items() if facts[k] != v
    ]
    if wrong:
        raise SigningError(
            f"the signed dataset statement does not name the data fetched for {fetched.tag} "
            f"({'; '.join(wrong)})",
            "do not train on it: the tag or the data was changed after the version was signed",
        )
    log.info("dataset statement %s verified against the fetched data", envelope.digest[:16])
    return envelope


def sign_model(
    model_dir: Path,
    *,
    keys: JobKeys,
    evidence: JobEvidence,
    record: LineageRecord,
    params: TrainingHyperparameters,
    dataset: Envelope | None,
    started: str,
) -> Envelope | None:
    """Sign the model directory (None, with a warning already logged, when no key is set);
    then check it as a consumer would."""
    if keys.key is None:
        return None
    if dataset is not None:
        dataset.write(model_dir / DATASET_STATEMENT_FILE)
    body = provenance(
        model_files(model_dir),
        external={
            "dvc_tag": params.dvc_tag,
            "repository": record.dvc_repo_url,
            "model_name": record.model_name,
            "hyperparameters": {
                k: v for k, v in asdict(params).items() if k not in ("register",) and v is not None
            },
        },
        internal={
            "lineage": record.to_json(),
            "transparency_log": None
            if evidence.tree_head is None
            else evidence.tree_head.to_json(),
            "unsigned_files": list(UNSIGNED_FILES),
        },
        dependencies=_dependencies(record, dataset),
        invocation=record.training_job_name or "",
        started=started,
        finished=utc_now(),
        builder_version=__version__,
        byproducts=[{"name": "mlflow-run", "uri": f"runs:/{record.run_id}"}],
    )
    envelope = sign(body, keys.key)
    envelope.write(model_dir / PROVENANCE_FILE)
    sign_model_dir(model_dir, keys.key, keys.key_file)
    try:
        verify_model(model_dir, keys.trust)
    except AttestationError as exc:
        raise SigningError(f"the model's own signatures do not verify: {exc}") from None
    log.info(
        "model signed: provenance %s and model.sig by key %s",
        envelope.digest[:16],
        keys.key.key_id[:16],
    )
    return envelope


def _dependencies(record: LineageRecord, dataset: Envelope | None) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = [
        {
            "name": "dataset-repository",
            "uri": f"git+{record.dvc_repo_url}@refs/tags/{record.dvc_tag}",
            "digest": {"gitCommit": record.data_git_commit_id},
        },
        {
            "name": "dataset",
            "uri": f"{record.dvc_repo_url}#{record.dvc_tag}:dataset",
            "digest": {"md5": record.dataset_md5.removesuffix(".dir")},
        },
        {
            "name": "dataset-manifest",
            "uri": f"{record.dvc_repo_url}#{record.dvc_tag}:dataset/manifest.csv",
            "digest": {"sha256": record.manifest_sha256},
        },
    ]
    if dataset is not None:
        found.append({"name": "dataset-attestation", "digest": {"sha256": dataset.digest}})
    if record.image_uri:
        digest = record.image_digest.split(":", 1)[-1] if record.image_digest else ""
        found.append(
            {
                "name": "training-image",
                "uri": record.image_uri,
                **({"digest": {"sha256": digest}} if digest else {}),
            }
        )
    return found
