"""`compare`: why did performance change between two model versions?

Side by side: the hyperparameters, the data versions, the record counts, the metrics, and
the record-level difference of the two datasets (records added, removed, or relabelled /
moved between splits / changed in content), read from each run's manifest artifact, whose
sha256 must match what the run recorded.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lineage import manifest
from lineage.attest.checks import metrics_check
from lineage.config import Settings
from lineage.errors import LineageError
from lineage.hashing import file_sha256
from lineage.manifest import ManifestRow
from lineage.query.chain import locate, recorded_data
from lineage.record import FACTS
from lineage.registry import RegisteredVersion, RunRecord, download_artifact, mlflow_client

METRICS = ("best_val_accuracy", "test_accuracy", "test_loss", "best_epoch")
# what the run recorded about its data and its model's bytes: compared elsewhere, not knobs
NOT_HYPERPARAMETERS = frozenset(
    {
        *FACTS,
        "dvc_repo_url",
        "count_train",
        "count_val",
        "count_test",
        "patient_count",
        # the evidence of each run: its signed provenance, who signed, the log's head then
        "attestation_sha256",
        "signer_key_id",
        "tlog_head",
    }
)


@dataclass(frozen=True)
class Side:
    ref: str
    model_name: str
    version: str
    aliases: list[str]
    run_id: str
    data_version: str
    tag: str
    commit: str
    dataset_md5: str
    counts: dict[str, int]


@dataclass(frozen=True)
class Row:
    name: str
    a: str | float | None
    b: str | float | None

    @property
    def same(self) -> bool:
        return self.a == self.b


@dataclass(frozen=True)
class RecordChange:
    record_id: str
    field: str
    a: str
    b: str


@dataclass(frozen=True)
class RecordDiff:
    added: list[dict[str, str]]
    removed: list[dict[str, str]]
    changed: list[RecordChange]
    common: int


@dataclass(frozen=True)
class Comparison:
    a: Side
    b: Side
    params: list[Row]
    metrics: list[Row]  # as the training jobs signed them
    records: RecordDiff
    disagreements: list[str] = field(default_factory=list)  # run metrics vs signed ones

    @property
    def ok(self) -> bool:
        """Both sides' metrics are the ones their training jobs signed."""
        return not self.disagreements

    @property
    def summary(self) -> str:
        """One sentence: what differs, in the order a reviewer asks."""
        parts = []
        added = [r for r in self.records.added if r["split"] != "test"]
        removed = [r for r in self.records.removed if r["split"] != "test"]
        if added or removed:
            parts.append(f"{len(added)} training/validation records added, {len(removed)} removed")
        if self.records.changed:
            parts.append(f"{len(self.records.changed)} record fields changed")
        hyper = [row.name for row in self.params if not row.same]
        parts.append(
            f"hyperparameters differ: {', '.join(hyper)}" if hyper else "same hyperparameters"
        )
        for row in self.metrics:
            if (
                row.name == "best_val_accuracy"
                and isinstance(row.a, float)
                and isinstance(row.b, float)
            ):
                parts.append(f"best val accuracy {row.a:.4f} -> {row.b:.4f} ({row.b - row.a:+.4f})")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a.__dict__,
            "b": self.b.__dict__,
            "summary": self.summary,
            "params": [{**r.__dict__, "same": r.same} for r in self.params],
            "metrics": [{**r.__dict__, "same": r.same} for r in self.metrics],
            "ok": self.ok,
            "disagreements": self.disagreements,
            "records": {
                "added": self.records.added,
                "removed": self.records.removed,
                "changed": [c.__dict__ for c in self.records.changed],
                "common": self.records.common,
            },
        }


def compare(settings: Settings, a: str, b: str) -> Comparison:
    client = mlflow_client(settings.mlflow_uri)
    sides, rows = [], []
    with tempfile.TemporaryDirectory(prefix="lineage-compare-") as tmp:
        for index, ref in enumerate((a, b)):
            version, run = locate(client, model=ref)
            sides.append(_side(ref, version, run))
            rows.append(_manifest(client, run, Path(tmp) / str(index)))
    run_a, run_b = (client.get_run(s.run_id) for s in sides)
    params_a, params_b = dict(run_a.data.params), dict(run_b.data.params)
    param_rows = [
        Row(name, params_a.get(name), params_b.get(name))
        for name in sorted(set(params_a) | set(params_b))
        if name not in NOT_HYPERPARAMETERS
    ]
    signed_a, signed_b = (signed_metrics(settings, client, s) for s in sides)
    metric_rows = [Row(name, signed_a.get(name), signed_b.get(name)) for name in METRICS]
    disagreements = [
        f"{side.ref}: {check.detail}"
        for side, run, signed in ((sides[0], run_a, signed_a), (sides[1], run_b, signed_b))
        if not (check := metrics_check(signed, dict(run.data.metrics))).ok
    ]
    return Comparison(
        sides[0], sides[1], param_rows, metric_rows, diff_records(*rows), disagreements
    )


def signed_metrics(settings: Settings, client: Any, side: Side) -> dict[str, float]:
    """The final metrics the training job signed (its provenance, signature checked)."""
    from lineage.attest.checks import VerifiedModel
    from lineage.attest.envelopes import Envelope, verify
    from lineage.attest.host import Evidence
    from lineage.attest.statements import PROVENANCE_FILE, ModelProvenance, statement_time

    with tempfile.TemporaryDirectory(prefix="lineage-compare-") as tmp:
        path = download_artifact(client, side.run_id, f"model/{PROVENANCE_FILE}", tmp)
        envelope = Envelope.read(Path(path))
    body = envelope.body()
    verify(envelope, Evidence(settings).trust, at=statement_time(body), what="model provenance")
    provenance = ModelProvenance.of(body)
    return dict(VerifiedModel(provenance, envelope.digest, "", None).record.metrics)


def _side(ref: str, version: RegisteredVersion | None, run: RunRecord) -> Side:
    data = recorded_data(run, version, for_git=False)
    assert version is not None  # locate() by model always has a version
    return Side(
        ref=ref,
        model_name=version.name,
        version=version.version,
        aliases=version.aliases,
        run_id=run.run_id,
        data_version=data.data_version,
        tag=data.tag,
        commit=data.commit,
        dataset_md5=data.dataset_md5,
        counts=data.counts,
    )


def _manifest(client: Any, run: RunRecord, tmp: Path) -> list[ManifestRow]:
    path = Path(download_artifact(client, run.run_id, manifest.MANIFEST_NAME, str(tmp)))
    recorded = run.param("manifest_sha256")
    actual = file_sha256(path)
    if actual != recorded:
        raise LineageError(
            f"the manifest artifact of run {run.run_id} hashes to {actual}, but the run recorded "
            f"{recorded}",
            "the artifact was changed after training; the record-level difference cannot be "
            "trusted (`lineage trace --run` shows the whole chain)",
        )
    return manifest.read(path)


def _brief(row: ManifestRow) -> dict[str, str]:
    brief = {"record_id": row.record_id, "split": row.split, "label": row.label}
    if row.patient_id:
        brief["patient_id"] = row.patient_id
    return brief


def diff_records(a: list[ManifestRow], b: list[ManifestRow]) -> RecordDiff:
    by_a = {row.record_id: row for row in a}
    by_b = {row.record_id: row for row in b}
    changed = []
    for record_id in sorted(by_a.keys() & by_b.keys()):
        old, new = by_a[record_id], by_b[record_id]
        for name in ("split", "label", "sha256"):
            if getattr(old, name) != getattr(new, name):
                changed.append(
                    RecordChange(record_id, name, getattr(old, name), getattr(new, name))
                )
    return RecordDiff(
        added=[_brief(by_b[r]) for r in sorted(by_b.keys() - by_a.keys())],
        removed=[_brief(by_a[r]) for r in sorted(by_a.keys() - by_b.keys())],
        changed=changed,
        common=len(by_a.keys() & by_b.keys()),
    )
