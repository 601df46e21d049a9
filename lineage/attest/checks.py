"""The signature checks every consumer of a model makes (trace, deploy, promote, export,
reproduce, the inference server at load, an offline auditor).

A model directory is proven when:

1. `model.sig` (OpenSSF model signing) verifies under a trusted key: no file was changed,
   added or removed since training;
2. `provenance.dsse.json` (SLSA Provenance v1) is signed by a trusted key valid when the
   training finished, and its subjects are exactly the directory's signed files;
3. the provenance's training-time facts are the ones every other copy holds: `lineage.json`
   (classes, image size, data, digests), and, when asked online, the MLflow run's params and
   its id (a run forged through the MLflow API, even with copied params and a copied model,
   names another run than the one the training job signed);
4. the dataset statement the model carries is signed, is the one the provenance cites, and
   names the data the run recorded (manifest sha256, DVC md5).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lineage.attest.envelopes import Envelope, verify
from lineage.attest.keys import AttestationError, TrustStore
from lineage.attest.modelsig import verify_model_dir
from lineage.attest.statements import (
    DATASET,
    DATASET_STATEMENT_FILE,
    PROVENANCE_FILE,
    ModelProvenance,
    model_files,
    statement_time,
)
from lineage.check import Check
from lineage.record import LineageRecord

# lineage.json keys written after the provenance was signed (registration, deploy)
STAMPED = frozenset({"model_version", "alias"})


@dataclass(frozen=True)
class VerifiedModel:
    """A model directory whose signatures hold: what the training job signed."""

    provenance: ModelProvenance
    provenance_digest: str
    signer_key_id: str
    dataset: Envelope | None

    @property
    def record(self) -> LineageRecord:
        return LineageRecord.from_mapping(self.provenance.lineage)

    def served(self) -> dict[str, str]:
        """What the server adds to `/lineage` and every answer."""
        return {"signer_key_id": self.signer_key_id, "attestation_sha256": self.provenance_digest}


def verify_model(model_dir: Path, trust: TrustStore) -> VerifiedModel:
    """Checks 1, 2 and the dataset statement's signature (AttestationError at the first
    that fails, naming the file)."""
    sig_key = verify_model_dir(model_dir, trust)
    path = model_dir / PROVENANCE_FILE
    if not path.is_file():
        raise AttestationError(f"{model_dir} has no {PROVENANCE_FILE}: its provenance is unsigned")
    envelope = Envelope.read(path)
    body = envelope.body()
    provenance = ModelProvenance.of(body)
    signer = verify(envelope, trust, at=statement_time(body), what="model provenance")
    if signer.key_id != sig_key.key_id:
        raise AttestationError(
            f"model.sig is by key {sig_key.key_id[:16]} but the provenance by "
            f"{signer.key_id[:16]}: they were not made together"
        )
    _check_subjects(provenance.files, model_files(model_dir), model_dir)
    dataset = _dataset_envelope(model_dir, provenance, trust)
    return VerifiedModel(provenance, envelope.digest, signer.key_id, dataset)


def _check_subjects(signed: Mapping[str, str], found: Mapping[str, str], where: Path) -> None:
    missing = sorted(set(signed) - set(found))
    extra = sorted(set(found) - set(signed))
    changed = sorted(n for n in set(signed) & set(found) if signed[n] != found[n])
    if missing or extra or changed:
        parts = [
            f"{label}: {', '.join(names[:5])}"
            for label, names in (("changed", changed), ("missing", missing), ("not signed", extra))
            if names
        ]
        raise AttestationError(
            f"the files of {where} are not the ones the training job signed ({'; '.join(parts)})"
        )


def _dataset_envelope(
    model_dir: Path, provenance: ModelProvenance, trust: TrustStore
) -> Envelope | None:
    cited = provenance.dataset_statement_digest
    path = model_dir / DATASET_STATEMENT_FILE
    if not cited and not path.is_file():
        return None  # trained on a dataset published before datasets were signed
    if not path.is_file():
        raise AttestationError(
            f"{model_dir} lacks {DATASET_STATEMENT_FILE}, which its provenance cites"
        )
    envelope = Envelope.read(path)
    body = envelope.body()
    if body.get("predicateType") != DATASET:
        raise AttestationError(f"{path} is not a dataset statement")
    verify(envelope, trust, at=statement_time(body), what="dataset statement")
    if envelope.digest != cited:
        raise AttestationError(
            f"{path} ({envelope.digest[:16]}) is not the dataset statement the provenance cites "
            f"({cited[:16] or 'none'})"
        )
    return envelope


def lineage_disagreements(provenance: ModelProvenance, lineage: Mapping[str, Any]) -> list[str]:
    """How `lineage.json` differs from what the training job signed (stamped keys aside)."""
    signed = provenance.lineage
    return [
        f"{key}: {lineage.get(key)!r} (signed {signed.get(key)!r})"
        for key in sorted(set(signed) | set(lineage))
        if key not in STAMPED and signed.get(key) != lineage.get(key)
    ]


def dataset_facts(envelope: Envelope) -> dict[str, str]:
    """The dataset statement's subjects as the run records them."""
    body = envelope.body()
    digests = {s["name"]: s.get("digest", {}) for s in body.get("subject", [])}
    listing = digests.get("dataset.dir", {})
    return {
        "manifest_sha256": str(digests.get("dataset/manifest.csv", {}).get("sha256", "")),
        "dataset_md5": f"{listing.get('md5', '')}.dir",
        "dataset_dir_sha256": str(listing.get("sha256", "")),
        "dvc_tag": str(body.get("predicate", {}).get("tag", "")),
        "data_git_commit_id": str(body.get("predicate", {}).get("commit", "")),
    }


def model_checks(
    model_dir: Path,
    trust: TrustStore,
    run_record: LineageRecord | None,
    what: str,
    run_metrics: Mapping[str, float] | None = None,
) -> tuple[list[Check], VerifiedModel | None]:
    """The signature checks as `Check`s (for trace and the refusals of deploy and promote):
    signatures, lineage.json, and against the run's record and current metrics when given."""
    try:
        verified = verify_model(model_dir, trust)
    except AttestationError as exc:
        return [Check("signature", False, f"{what}: {exc}")], None
    checks = [
        Check(
            "signature",
            True,
            f"{what} model.sig and provenance {verified.provenance_digest[:16]} signed by key "
            f"{verified.signer_key_id[:16]}",
        )
    ]
    try:
        import json

        stored = json.loads((model_dir / "lineage.json").read_text())
    except (OSError, ValueError) as exc:
        stored = {"unreadable": str(exc)}
    differences = lineage_disagreements(verified.provenance, stored)
    checks.append(
        Check(
            "signed lineage.json",
            not differences,
            f"{what} lineage.json vs the signed provenance: " + "; ".join(differences[:4])
            if differences
            else f"{what} lineage.json repeats the signed training-time facts",
        )
    )
    if run_record is not None:
        checks.append(_run_check(verified, run_record))
    if run_metrics is not None:
        checks.append(metrics_check(verified.record.metrics, run_metrics))
    checks.append(_dataset_check(verified))
    return checks, verified


def metrics_check(signed: Mapping[str, float], current: Mapping[str, float]) -> Check:
    """The metrics that justified the model, as the training job signed them, against what
    the MLflow run shows now (`log_metric` on a finished run changes what it shows)."""
    differences = [
        f"{name}: the run shows {current.get(name)}, the training job signed {value}"
        for name, value in sorted(signed.items())
        if current.get(name) is None or abs(float(current[name]) - float(value)) > 1e-12
    ]
    return Check(
        "signed metrics",
        not differences,
        "; ".join(differences[:4])
        if differences
        else f"the run's {len(signed)} final metrics are the ones the training job signed",
    )


def _run_check(verified: VerifiedModel, run_record: LineageRecord) -> Check:
    signed = verified.record
    differences = [str(d) for d in signed.disagreements(run_record)]
    if signed.run_id != run_record.run_id:
        differences.insert(
            0, f"run_id: {run_record.run_id} (the training job signed {signed.run_id})"
        )
    return Check(
        "signed run",
        not differences,
        "MLflow run vs the signed provenance: " + "; ".join(differences[:4])
        if differences
        else f"run {run_record.run_id} and its {len(signed.facts())} facts are the signed ones",
    )


def _dataset_check(verified: VerifiedModel) -> Check:
    if verified.dataset is None:
        return Check(
            "signed dataset",
            False,
            "the model carries no signed dataset statement (its dataset was published before "
            "datasets were signed): republish and retrain",
        )
    facts = dataset_facts(verified.dataset)
    signed = verified.record
    differences = [
        f"{name}: {facts[name]} (the provenance says {getattr(signed, name)})"
        for name in ("manifest_sha256", "dataset_md5", "dvc_tag", "data_git_commit_id")
        if facts[name] != getattr(signed, name)
    ]
    return Check(
        "signed dataset",
        not differences,
        "the dataset statement vs the provenance: " + "; ".join(differences)
        if differences
        else f"dataset statement {verified.dataset.digest[:16]} names the data the model used",
    )


def dataset_statement_checks(
    envelope: Envelope | None,
    trust: TrustStore,
    *,
    tag: str,
    commit: str,
    dataset_md5: str,
    listing_sha256: str | None = None,
    manifest_sha256: str | None = None,
) -> list[Check]:
    """A dataset version against its signed statement: the signature, then each fact the
    statement names (tag, commit, DVC md5, and the sha256 of the listing and manifest bytes
    when they were read)."""
    if envelope is None:
        return [
            Check(
                "signed dataset",
                False,
                f"no signed statement for {tag}: published before datasets were signed, or not "
                "by `lineage process`",
            )
        ]
    body = envelope.body()
    if body.get("predicateType") != DATASET:
        return [Check("signed dataset", False, "the statement is not a dataset statement")]
    try:
        key = verify(envelope, trust, at=statement_time(body), what="dataset statement")
    except AttestationError as exc:
        return [Check("signed dataset", False, str(exc))]
    facts = dataset_facts(envelope)
    checks = [
        Check(
            "signed dataset",
            True,
            f"dataset statement {envelope.digest[:16]} signed by key {key.key_id[:16]}",
        )
    ]
    compared = {
        "dvc_tag": tag,
        "data_git_commit_id": commit,
        "dataset_md5": dataset_md5,
        "dataset_dir_sha256": listing_sha256,
        "manifest_sha256": manifest_sha256,
    }
    for name, actual in compared.items():
        if actual is None:
            continue
        ok = facts[name] == actual
        checks.append(
            Check(
                f"signed {name}",
                ok,
                f"{name}: {actual}"
                if ok
                else f"{name}: the data has {actual}, the signed statement {facts[name]}",
            )
        )
    return checks
