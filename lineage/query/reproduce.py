"""`reproduce`: can we rebuild the model we deployed six months ago, byte for byte on the data
side? A fresh clone at the recorded commit, `dvc pull`, every byte re-hashed; with
``retrain``, the training job again on that data with the recorded hyperparameters and seed,
and its metrics compared with the original run's, epoch by epoch. Training is an operation,
so the retraining step is given by the caller (`Retrainer`; `lineage.ops.reproduce` gives
the training job's, and is what `lineage reproduce` and `lineage.reproduce` run).

Equal on CPU (the training job is deterministic there for a fixed seed); on a GPU, cuDNN
kernels are not bit-reproducible, so accuracies may differ by up to `GPU_TOLERANCE`.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lineage import datarepo
from lineage.config import Settings
from lineage.dvcremote import ErasedObject
from lineage.erasure import erased_objects, summarize_erased
from lineage.errors import LineageError
from lineage.query.chain import Check, RecordedData, agree, locate, recorded_data
from lineage.query.trace import signature_checks
from lineage.redact import redact_url
from lineage.registry import download_artifact, mlflow_client
from lineage.storage import s3_client

EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
FINAL_METRICS = ("best_val_accuracy", "test_accuracy", "test_loss")
GPU_TOLERANCE = 0.02  # absolute, on accuracies; losses get 5% of their value


@dataclass(frozen=True)
class MetricComparison:
    name: str
    original: list[float]
    reproduced: list[float]
    tolerance: float
    ok: bool


@dataclass(frozen=True)
class Retraining:
    run_id: str
    device: str
    metrics: list[MetricComparison]
    erased_records: int = 0  # trained on the remainder: metrics are compared, not required

    @property
    def ok(self) -> bool:
        return self.erased_records > 0 or all(m.ok for m in self.metrics)


class Retrainer(Protocol):
    """Train again on the verified data with the run's recorded hyperparameters and compare
    the metrics; `erased` is the number of records an erasure removed since."""

    def __call__(self, client: Any, data: RecordedData, erased: int, /) -> Retraining: ...


@dataclass(frozen=True)
class Reproduction:
    model: str | None
    run_id: str
    repo_url: str  # credentials redacted
    tag: str
    commit: str
    dataset_md5: str
    manifest_sha256: str
    files_verified: int
    directory: str | None  # the checkout, when kept (--dir)
    checks: list[Check] = field(default_factory=list)
    retraining: Retraining | None = None
    erased: list[ErasedObject] = field(default_factory=list)  # removed by an erasure

    @property
    def ok(self) -> bool:
        data_ok = all(c.ok for c in self.checks)
        return data_ok and (self.retraining is None or self.retraining.ok)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "model": self.model,
            "run_id": self.run_id,
            "repo_url": self.repo_url,
            "tag": self.tag,
            "commit": self.commit,
            "dataset_md5": self.dataset_md5,
            "manifest_sha256": self.manifest_sha256,
            "files_verified": self.files_verified,
            "directory": self.directory,
            "checks": [c.to_json() for c in self.checks],
            "erased": [e.__dict__ for e in self.erased],
            "retraining": None
            if self.retraining is None
            else {
                "ok": self.retraining.ok,
                "run_id": self.retraining.run_id,
                "device": self.retraining.device,
                "erased_records": self.retraining.erased_records,
                "metrics": [m.__dict__ for m in self.retraining.metrics],
            },
        }


def reproduce(
    settings: Settings,
    *,
    model: str | None = None,
    run_id: str | None = None,
    directory: Path | None = None,
    retrain: Retrainer | None = None,
    repo_url: str | None = None,
) -> Reproduction:
    client = mlflow_client(settings.mlflow_uri)
    version, run = locate(client, model=model, run_id=run_id)
    data = recorded_data(run, version, repo_url)
    if directory is not None and directory.exists() and any(directory.iterdir()):
        raise LineageError(f"{directory} is not empty", "pass --dir with a new or empty directory")
    checks: list[Check] = []
    found = datarepo.tag_commit(data.repo_url, data.tag)
    checks.append(
        agree("tag", f"tag {data.tag} on the git server vs run", data.commit, found)
        if found
        else Check("tag", False, f"tag {data.tag} no longer exists (data checked at the commit)")
    )
    tmp = Path(tempfile.mkdtemp(prefix="lineage-reproduce-"))
    repo_dir = directory if directory is not None else tmp / "repo"
    try:
        datarepo.clone(data.repo_url, repo_dir, commit=data.commit)
        pointer = datarepo.read_pointer(repo_dir)
        checks.append(agree("dvc pointer", "`.dvc` md5 vs run", data.dataset_md5, pointer.md5))
        label = f"{data.tag} ({data.commit[:12]})"
        verified = datarepo.pull_and_verify(
            repo_dir, label, s3_client(settings), settings.client_env(), erased_objects(settings)
        )
        checks.append(
            Check(
                "files",
                True,
                f"{len(verified.rows)} files re-hashed against the manifest and the listing; "
                f"intact except {summarize_erased(verified.erased)}"
                if verified.erased
                else f"{len(verified.rows)} files re-hashed against the manifest; directory "
                f"md5 {verified.dataset_md5}",
            )
        )
        checks.append(
            agree(
                "manifest", "manifest sha256 vs run", data.manifest_sha256, verified.manifest_sha256
            )
        )
        model_dir = Path(download_artifact(client, run.run_id, "model", str(tmp / "model")))
        checks += signature_checks(settings, run, model_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    retraining = None
    if retrain is not None:
        if not all(c.ok for c in checks):
            raise LineageError(
                "the data does not match the record, so retraining would not reproduce the model",
                "fix the failed checks first (run without --retrain to see them)",
            )
        retraining = retrain(client, data, len(verified.erased))
    return Reproduction(
        model=None if version is None else version.ref,
        run_id=run.run_id,
        repo_url=redact_url(data.shown_repo),
        tag=data.tag,
        commit=data.commit,
        dataset_md5=data.dataset_md5,
        manifest_sha256=data.manifest_sha256,
        files_verified=len(verified.rows),
        directory=str(directory) if directory is not None else None,
        checks=checks,
        retraining=retraining,
        erased=verified.erased,
    )
