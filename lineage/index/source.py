"""Where record-level answers come from: the lineage index, or a full scan of MLflow.

Both implement `LineageSource`, so every audit can run on either and the two must agree
(a test proves it). The scan reads every registered version's run and manifest artifact and
checks each manifest against the sha256 its run recorded; the index is a cache of exactly
that, with a freshness check against the registry before each answer. Either way, a version
whose records cannot be read stops the audit: it is never reported as "not found".
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lineage import manifest
from lineage.errors import LineageError
from lineage.hashing import file_sha256
from lineage.manifest import ManifestRow
from lineage.record import DATA_FACTS, LineageRecord
from lineage.registry import RunRecord, download_artifact, get_run

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


class AuditError(LineageError):
    """An audit cannot be answered completely, so it is not answered at all."""


@dataclass(frozen=True)
class ModelData:
    """One registered model version and the dataset it was trained on (no records)."""

    name: str
    version: str
    run_id: str
    trained_ms: int  # run start
    tag: str
    commit: str
    dataset_md5: str
    manifest_sha256: str
    pattern: str
    consent_snapshot_sha256: str | None
    consent_as_of: str | None

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"


class LineageSource(Protocol):
    kind: str  # "index" | "scan"

    def models(self) -> list[ModelData]: ...

    def records_of_patient(self, patient_id: str) -> dict[str, list[ManifestRow]]:
        """model ref -> that model's records of the patient (only models that have some)."""
        ...

    def records_of_model(self, ref: str) -> list[ManifestRow]: ...


def registered_versions(client: MlflowClient) -> Iterator[tuple[str, str, str | None]]:
    """(name, version, run_id) of every registered version, page by page."""
    from mlflow.exceptions import MlflowException

    token = None
    while True:
        try:
            page = client.search_model_versions(max_results=1000, page_token=token)
        except MlflowException as exc:
            raise AuditError(f"cannot list the model registry: {exc.message}") from None
        for version in page:
            yield str(version.name), str(version.version), version.run_id or None
        token = page.token
        if not token:
            return


def model_data(name: str, version: str, run: RunRecord) -> ModelData:
    """What the run recorded about its data; a run without it stops the audit."""
    record = LineageRecord.from_run(run)
    missing = [fact for fact in DATA_FACTS if not getattr(record, fact)]
    if missing:
        raise AuditError(
            f"{name}/{version}: run {run.run_id} has no {', '.join(missing)}: its lineage is "
            "incomplete",
            "its training data cannot be audited; retrain it or remove it from the registry",
        )
    return ModelData(
        name=name,
        version=version,
        run_id=run.run_id,
        trained_ms=run.start_ms,
        tag=record.dvc_tag,
        commit=record.data_git_commit_id,
        dataset_md5=record.dataset_md5,
        manifest_sha256=record.manifest_sha256,
        pattern=record.pattern,
        consent_snapshot_sha256=record.consent_snapshot_sha256 or None,
        consent_as_of=record.consent_as_of or None,
    )


def download_manifest(client: MlflowClient, model: ModelData, tmp: Path) -> Path:
    """The run's manifest artifact on disk, checked against the sha256 the run recorded."""
    try:
        path = Path(
            download_artifact(client, model.run_id, manifest.MANIFEST_NAME, str(tmp / model.run_id))
        )
    except LineageError as exc:
        raise AuditError(
            f"{model.ref}: {exc.message}",
            "the audit cannot tell whose records trained this model; restore the artifact "
            "(the dataset's own manifest.csv, from `lineage reproduce`)",
        ) from None
    actual = file_sha256(path)
    if actual != model.manifest_sha256:
        raise AuditError(
            f"{model.ref}: the manifest artifact hashes to {actual}, the run recorded "
            f"{model.manifest_sha256}",
            "the artifact was changed after training; restore it before auditing",
        )
    return path


def read_manifest(client: MlflowClient, model: ModelData, tmp: Path) -> list[ManifestRow]:
    return manifest.read(download_manifest(client, model, tmp))


class ScanSource:
    """Every answer from MLflow itself: slow (one manifest download per version), exact."""

    kind = "scan"

    def __init__(self, client: MlflowClient) -> None:
        self.client = client
        self._models: list[ModelData] | None = None
        self._manifests: dict[str, list[ManifestRow]] = {}  # by manifest sha256
        self._checked: set[str] = set()  # runs whose own artifact was downloaded and verified

    def models(self) -> list[ModelData]:
        if self._models is None:
            found = []
            for name, version, run_id in registered_versions(self.client):
                if run_id is None:
                    raise AuditError(
                        f"{name}/{version} has no source run: its training data is unknown",
                        "remove it from the registry or register it from a training run",
                    )
                found.append(model_data(name, version, get_run(self.client, run_id)))
            self._models = sorted(found, key=lambda m: (m.name, int(m.version)))
        return self._models

    def _records(self, model: ModelData) -> list[ManifestRow]:
        """Every version's own artifact is downloaded and checked (any one may be missing or
        changed); identical manifests are parsed once, so memory follows distinct datasets."""
        if model.run_id not in self._checked:
            with tempfile.TemporaryDirectory(prefix="lineage-scan-") as tmp:
                path = download_manifest(self.client, model, Path(tmp))
                if model.manifest_sha256 not in self._manifests:
                    self._manifests[model.manifest_sha256] = manifest.read(path)
            self._checked.add(model.run_id)
        return self._manifests[model.manifest_sha256]

    def records_of_patient(self, patient_id: str) -> dict[str, list[ManifestRow]]:
        out = {}
        for model in self.models():
            rows = [r for r in self._records(model) if r.patient_id == patient_id]
            if rows:
                out[model.ref] = rows
        return out

    def records_of_model(self, ref: str) -> list[ManifestRow]:
        model = next((m for m in self.models() if m.ref == ref), None)
        if model is None:
            raise AuditError(f"{ref} is not a registered model version")
        return self._records(model)


def describe_rows(rows: list[ManifestRow]) -> dict[str, Any]:
    return {
        "splits": sorted({r.split for r in rows}),
        "scans": [
            {
                "scan_id": r.scan_id or r.record_id,
                "split": r.split,
                "label": r.label,
                "file_path": r.file_path,
                "sha256": r.sha256,
            }
            for r in sorted(rows, key=lambda r: (r.scan_id, r.record_id))
        ],
    }
