"""The record-level audits on an in-memory MLflow (tests.helpers.FakeMlflow) and a consent
registry in a temp SQLite database, answered from the lineage index and from the full scan
alike: who was in which model, what a withdrawal touches, whether consent held at training,
whether a withdrawn patient is out of every model since.

The registry (tests.helpers.REGISTRY): PAT-00001 (two scans) and PAT-00002 consent,
PAT-00003 never did. cxr/1 (alias champion, served locally) was trained on PAT-00001 and
PAT-00002; PAT-00001 then withdrew; cxr/2 was trained on PAT-00002 alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lineage.audit.queries import audit_excluded, audit_model, audit_record, impact
from lineage.config import Settings
from lineage.consent import registry_csv
from lineage.consent.store import ConsentStore
from lineage.hashing import bytes_sha256
from lineage.index.source import AuditError, ModelData
from lineage.index.store import LineageIndex
from lineage.manifest import ManifestRow
from lineage.serving import EndpointListing, SageMakerEndpoint
from tests.helpers import REGISTRY, FakeMlflow

P1, P2, P3 = "PAT-00001", "PAT-00002", "PAT-00003"
LOCAL_URL = "http://127.0.0.1:8080"
REGION = "eu-west-1"
IMPORTED = "2026-01-01T00:00:00.000000Z"
WITHDRAWN = "2026-02-01T00:00:00.000000Z"


def row(patient: str, scan: int, split: str, label: str) -> ManifestRow:
    scan_id = f"{patient}-SCAN-{scan:04d}"
    return ManifestRow(
        file_path=f"{split}/{label}/{scan_id}.png",
        record_id=scan_id,
        split=split,
        label=label,
        sha256=bytes_sha256(scan_id.encode()),
        patient_id=patient,
        scan_id=scan_id,
    )


V1_ROWS = [row(P1, 1, "train", "normal"), row(P1, 2, "train", "normal")]
V1_ROWS.append(row(P2, 3, "val", "tuberculosis"))
V2_ROWS = [row(P2, 3, "train", "tuberculosis")]


def local_endpoints(_: Settings) -> list[dict[str, Any]]:
    """The local runtime's lister, as the CLI passes it: cxr/1 is served."""
    return [{"url": LOCAL_URL, "model_name": "cxr", "model_version": "1", "run_id": "run-cxr-1"}]


class Clock:
    """The consent log's clock (`utc_now`), set by the test."""

    def __init__(self) -> None:
        self.now = IMPORTED

    def __call__(self) -> str:
        return self.now


@dataclass
class World:
    settings: Settings
    mlflow: FakeMlflow
    store: ConsentStore
    clock: Clock
    v1: ModelData
    v2: ModelData

    def register(self, version: str, rows: list[ManifestRow], trained: str, **kw: Any) -> None:
        """Another cxr version, consent snapshot as of the day before training, then the
        index rebuilt (as the training job's indexing would)."""
        as_of = f"{trained}T00:00:00.000000Z"
        kw.setdefault("consent_snapshot_sha256", self.store.snapshot(as_of).sha256)
        self.mlflow.register("cxr", version, rows, trained=trained, consent_as_of=as_of, **kw)
        LineageIndex.from_settings(self.settings).rebuild(self.mlflow.client)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    clock = Clock()
    monkeypatch.setattr("lineage.consent.store.utc_now", clock)
    settings = Settings(home=tmp_path / "home")
    store = ConsentStore.from_settings(settings)
    store.import_rows(registry_csv.parse(REGISTRY), source="registry.csv", actor="test")
    mlflow = FakeMlflow(page_size=1)  # every search read page by page
    monkeypatch.setattr("lineage.audit.queries.mlflow_client", lambda _: mlflow.client)

    def version(number: str, rows: list[ManifestRow], as_of: str, trained: str) -> ModelData:
        snapshot = store.snapshot(as_of).sha256
        return mlflow.register(
            "cxr",
            number,
            rows,
            trained=trained,
            consent_as_of=as_of,
            consent_snapshot_sha256=snapshot,
        )

    v1 = version("1", V1_ROWS, "2026-01-02T00:00:00.000000Z", "2026-01-03")
    mlflow.aliases["cxr"] = {"champion": "1"}
    clock.now = WITHDRAWN
    store.record(P1, "withdraw", actor="dpo", reason="patient request")
    v2 = version("2", V2_ROWS, "2026-02-02T00:00:00.000000Z", "2026-02-03")
    LineageIndex.from_settings(settings).rebuild(mlflow.client)
    yield World(settings, mlflow, store, clock, v1, v2)


@pytest.fixture(params=[False, True], ids=["index", "scan"])
def scan(request: pytest.FixtureRequest) -> bool:
    """Every answer from the lineage index and from the full MLflow scan: they must agree."""
    return bool(request.param)


def test_impact_names_the_version_alias_and_endpoint_a_withdrawal_touches(
    world: World, scan: bool
) -> None:
    result = impact(world.settings, P1, endpoints=local_endpoints, scan=scan)
    assert result.status == "withdrawn"
    assert [h.model for h in result.models] == ["cxr/1"]
    assert result.aliases == ["cxr@champion"]
    assert result.endpoints == [{"url": LOCAL_URL, "model": "cxr/1"}]
    assert result.datasets == [world.v1.tag]
    assert (result.models_checked, result.source) == (2, "scan" if scan else "index")
    hit = result.models[0]
    assert hit.consent_at_training == "granted"  # withdrawn only after the snapshot
    assert hit.splits == ["train"]
    assert [s["scan_id"] for s in hit.scans] == [f"{P1}-SCAN-0001", f"{P1}-SCAN-0002"]
    assert hit.trained_at == "2026-01-03T00:00:00.000000Z"
    assert hit.deployed
    assert result.to_json()["sagemaker"] == {"asked": False, "region": None, "endpoints": []}


def _endpoint(name: str, model: str) -> SageMakerEndpoint:
    arn = f"arn:aws:sagemaker:{REGION}:123456789012:endpoint/{name}"
    return SageMakerEndpoint(name, arn, "InService", model, REGION)


def test_impact_asked_about_sagemaker_keeps_the_endpoints_of_affected_versions(
    world: World,
) -> None:
    asked = []

    def sagemaker() -> EndpointListing:
        asked.append(True)
        return EndpointListing(REGION, (_endpoint("prod", "cxr/1"), _endpoint("next", "cxr/2")))

    result = impact(world.settings, P1, endpoints=local_endpoints, sagemaker=sagemaker)
    assert asked == [True]
    shown = result.to_json()["sagemaker"]
    assert shown["asked"] is True and shown["region"] == REGION
    assert [e["name"] for e in shown["endpoints"]] == ["prod"]  # cxr/2 does not hold PAT-00001
    sagemaker_url = f"https://runtime.sagemaker.{REGION}.amazonaws.com/endpoints/prod"
    assert [e["url"] for e in result.endpoints] == [LOCAL_URL, sagemaker_url]


def test_a_patient_left_out_for_lack_of_consent_is_in_no_model(world: World, scan: bool) -> None:
    result = audit_record(world.settings, P3, endpoints=local_endpoints, scan=scan)
    assert result.consent is not None
    assert (result.consent["status"], result.consent["since"]) == ("withdrawn", IMPORTED)
    assert result.models == [] and result.models_checked == 2
    unknown = audit_record(world.settings, "PAT-99999", endpoints=local_endpoints, scan=scan)
    assert unknown.consent is None and unknown.models == []


def test_record_audit_lists_every_version_and_split_holding_the_patient(
    world: World, scan: bool
) -> None:
    result = audit_record(world.settings, P2, endpoints=local_endpoints, scan=scan)
    assert [(h.model, h.splits) for h in result.models] == [
        ("cxr/1", ["val"]),
        ("cxr/2", ["train"]),
    ]
    assert [h.consent_at_training for h in result.models] == ["granted", "granted"]
    assert [h.endpoints for h in result.models] == [[LOCAL_URL], []]
    shown = result.to_json()
    assert shown["consent"]["status"] == "granted" and len(shown["consent"]["events"]) == 1
    assert [m["model"] for m in shown["models"]] == ["cxr/1", "cxr/2"]


def test_model_audit_proves_consent_at_training_and_names_later_withdrawals(
    world: World, scan: bool
) -> None:
    result = audit_model(world.settings, "cxr@champion", endpoints=local_endpoints, scan=scan)
    assert result.model.ref == "cxr/1"
    assert result.snapshot_ok and result.ok
    assert result.records == {"train": {"normal": 2}, "val": {"tuberculosis": 1}}
    assert result.patients_by_split == {"train": 1, "val": 1, "test": 0}
    assert [(p.patient_id, p.withdrawn_at) for p in result.withdrawn_since] == [(P1, WITHDRAWN)]
    assert [p.consent_now for p in result.patients] == ["withdrawn", "granted"]
    assert (result.aliases, result.endpoints) == (["champion"], [LOCAL_URL])
    shown = result.to_json()
    assert shown["ok"] is True and shown["without_consent"] == []
    assert shown["withdrawn_since"] == [{"patient_id": P1, "at": WITHDRAWN}]


def test_model_audit_fails_on_a_wrong_snapshot_and_on_a_patient_without_consent(
    world: World,
) -> None:
    world.register("3", V2_ROWS, "2026-03-01", consent_snapshot_sha256="0" * 64)
    world.register("4", [*V2_ROWS, row(P3, 4, "train", "normal")], "2026-03-02")
    wrong = audit_model(world.settings, "cxr/3", endpoints=local_endpoints)
    assert not wrong.snapshot_ok and wrong.without_consent == [] and not wrong.ok
    assert wrong.snapshot_recomputed == world.store.snapshot("2026-03-01T00:00:00.000000Z").sha256
    unconsented = audit_model(world.settings, "cxr/4", endpoints=local_endpoints)
    assert unconsented.snapshot_ok and not unconsented.ok
    assert [p.patient_id for p in unconsented.without_consent] == [P3]
    assert unconsented.withdrawn_since == []  # out before the snapshot: not withdrawn *since*


def test_exclusion_fails_while_an_older_version_holding_the_patient_is_registered(
    world: World, scan: bool
) -> None:
    result = audit_excluded(world.settings, P1, endpoints=local_endpoints, scan=scan)
    assert result.since == WITHDRAWN  # the patient's last withdrawal
    assert result.violations == []
    assert [h.model for h in result.in_use] == ["cxr/1"]
    assert result.clean == ["cxr/2"]
    assert not result.passed and result.to_json()["passed"] is False
    only_new = audit_excluded(world.settings, P1, model="cxr/2", endpoints=local_endpoints)
    assert only_new.passed and only_new.models_checked == 1 and only_new.clean == ["cxr/2"]


def test_a_version_trained_on_the_patient_after_the_date_is_a_violation(world: World) -> None:
    world.register("3", [row(P1, 1, "train", "normal")], "2026-03-01")
    result = audit_excluded(world.settings, P1, endpoints=local_endpoints)
    assert [h.model for h in result.violations] == ["cxr/3"]
    assert [h.consent_at_training for h in result.violations] == ["withdrawn"]
    earlier = audit_excluded(world.settings, P1, "2026-01-02", endpoints=local_endpoints)
    assert [h.model for h in earlier.violations] == ["cxr/1", "cxr/3"]
    assert earlier.since == "2026-01-02T00:00:00.000000Z"


def test_exclusion_needs_a_date_for_a_patient_who_never_withdrew(world: World) -> None:
    with pytest.raises(AuditError, match="never withdrawn consent; pass --since DATE"):
        audit_excluded(world.settings, P2, endpoints=local_endpoints)


def test_a_stale_index_stops_the_audit_and_the_scan_still_answers(world: World) -> None:
    world.mlflow.register("cxr", "3", V2_ROWS, trained="2026-03-01")  # not indexed
    with pytest.raises(AuditError, match="out of date with MLflow: 1 registered versions not"):
        impact(world.settings, P2, endpoints=local_endpoints)
    scanned = impact(world.settings, P2, endpoints=local_endpoints, scan=True)
    assert [h.model for h in scanned.models] == ["cxr/1", "cxr/2", "cxr/3"]


def test_a_changed_manifest_or_a_version_without_run_stops_the_scan(world: World) -> None:
    world.mlflow.artifacts["run-cxr-2"] += b"PAT-00009,X,train/x.png,x,train,0,0\n"
    with pytest.raises(AuditError, match=r"cxr/2: the manifest artifact hashes to \w+, the run"):
        impact(world.settings, P2, endpoints=local_endpoints, scan=True)
    world.mlflow.versions[("cxr", "2")].run_id = None
    with pytest.raises(AuditError, match="cxr/2 has no source run"):
        impact(world.settings, P2, endpoints=local_endpoints, scan=True)
