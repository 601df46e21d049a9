"""The lineage index on its own (SQLite and PostgreSQL): datasets stored once, answers by
patient and by model, concurrent writers that neither duplicate nor lose anything, and the
rebuild from MLflow (an in-memory one, tests.helpers.FakeMlflow): idempotent, in step with
the registry, agreeing with the full scan."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from lineage.index.source import AuditError, ModelData, ScanSource
from lineage.index.store import IndexSource, LineageIndex
from lineage.manifest import ManifestRow
from tests.helpers import FakeMlflow


def _model(name: str, version: str, dataset: str = "d1") -> ModelData:
    return ModelData(
        name=name,
        version=version,
        run_id=f"run-{name}-{version}",
        trained_ms=1_700_000_000_000,
        tag=f"v-{dataset}",
        commit="c" * 40,
        dataset_md5=f"{dataset}.dir",
        manifest_sha256=f"sha-{dataset}",
        pattern="record",
        consent_snapshot_sha256="s" * 64,
        consent_as_of="2026-11-28T00:00:00.000000Z",
    )


def _rows(dataset: str, patients: int = 20) -> list[ManifestRow]:
    return [
        ManifestRow(
            file_path=f"train/{p % 2}/{dataset}-{p}.png",
            record_id=f"{dataset}-{p}",
            split="train" if p % 5 else "val",
            label=str(p % 2),
            sha256=f"{p:064d}",
            patient_id=f"PAT-{p:05d}",
            scan_id=f"PAT-{p:05d}-SCAN-1",
        )
        for p in range(patients)
    ]


def test_datasets_are_stored_once_and_answer_by_patient_and_model(database_url: str) -> None:
    index = LineageIndex(database_url)
    for version in ("1", "2"):  # two versions trained on the same dataset
        index.add_dataset(_model("cxr", version), _rows("d1"))
        index.add_model(_model("cxr", version))
    index.add_dataset(_model("cxr", "3", "d2"), _rows("d2", patients=5))
    index.add_model(_model("cxr", "3", "d2"))
    summary = index.summary()
    assert (summary.models, summary.runs, summary.datasets, summary.records) == (3, 3, 2, 25)

    source = IndexSource(index)  # answers without the registry freshness check (no MLflow here)
    answers = source.records_of_patient("PAT-00003")
    assert sorted(answers) == ["cxr/1", "cxr/2", "cxr/3"]
    assert answers["cxr/1"][0].scan_id == "PAT-00003-SCAN-1"
    assert source.records_of_patient("PAT-00019").keys() == {"cxr/1", "cxr/2"}
    assert source.records_of_patient("PAT-99999") == {}
    assert len(source.records_of_model("cxr/3")) == 5
    assert [m.ref for m in source.models()] == ["cxr/1", "cxr/2", "cxr/3"]


def _writer(url: str, versions: list[str]) -> None:
    index = LineageIndex(url)
    for version in versions:
        index.add_dataset(_model("cxr", version), _rows("shared", patients=200))
        index.add_model(_model("cxr", version))


def test_concurrent_writers_store_one_dataset_and_every_version(database_url: str) -> None:
    LineageIndex(database_url)  # tables exist before the writers race
    context = multiprocessing.get_context("spawn")
    writers = [
        context.Process(target=_writer, args=(database_url, [f"{w}{i}" for i in range(3)]))
        for w in range(1, 5)
    ]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=120)
        assert w.exitcode == 0
    summary = LineageIndex(database_url).summary()
    assert (summary.models, summary.datasets, summary.records) == (12, 1, 200)


def _registry() -> FakeMlflow:
    """cxr/1 and cxr/2 trained on one dataset, cxr/3 on another; searches come in pages of 2."""
    mlflow = FakeMlflow(page_size=2)
    for version in ("1", "2"):
        mlflow.register("cxr", version, _rows("d1"), trained=f"2026-01-0{version}")
    mlflow.register("cxr", "3", _rows("d2", patients=5), trained="2026-01-03")
    return mlflow


def _answers(source: IndexSource | ScanSource) -> dict[str, Any]:
    return {
        "models": [m.ref for m in source.models()],
        "PAT-00003": source.records_of_patient("PAT-00003"),
        "PAT-00019": source.records_of_patient("PAT-00019"),
        "cxr/3": source.records_of_model("cxr/3"),
    }


def test_rebuild_from_mlflow_is_idempotent_and_stores_a_shared_dataset_once(
    database_url: str,
) -> None:
    mlflow = _registry()
    index = LineageIndex(database_url)
    first = index.rebuild(mlflow.client)
    assert (first.models, first.runs, first.datasets, first.records) == (3, 3, 2, 25)
    answers = _answers(index.source(mlflow.client))  # source(): checked fresh first
    again = index.rebuild(mlflow.client)
    assert again.to_json() | {"seconds": 0} == first.to_json() | {"seconds": 0}
    assert _answers(index.source(mlflow.client)) == answers
    assert sorted(answers["PAT-00003"]) == ["cxr/1", "cxr/2", "cxr/3"]


def test_the_index_and_the_full_scan_give_the_same_answers(tmp_path: Path) -> None:
    mlflow = _registry()
    index = LineageIndex(f"sqlite:///{tmp_path / 'index.db'}")
    index.rebuild(mlflow.client)
    indexed, scanned = index.source(mlflow.client), ScanSource(mlflow.client)
    assert _answers(indexed) == _answers(scanned)
    assert indexed.models() == scanned.models()  # every recorded fact, not only the refs
    for source in (indexed, scanned):
        with pytest.raises(AuditError, match="cxr/9 is not a registered model version"):
            source.records_of_model("cxr/9")


def test_the_freshness_check_names_what_the_index_misses_or_still_holds(tmp_path: Path) -> None:
    mlflow = _registry()
    index = LineageIndex(f"sqlite:///{tmp_path / 'index.db'}")
    index.rebuild(mlflow.client)
    index.check_fresh(mlflow.client)
    mlflow.register("cxr", "4", _rows("d2", patients=5), trained="2026-01-04")
    with pytest.raises(AuditError, match=r"1 registered versions not indexed, 0 .*\(cxr/4\)"):
        index.source(mlflow.client)
    index.rebuild(mlflow.client)
    del mlflow.versions[("cxr", "1")]
    with pytest.raises(AuditError, match=r"0 registered .* 1 indexed versions no longer .*cxr/1"):
        index.check_fresh(mlflow.client)


def test_sync_indexes_what_the_registry_gained_and_forgets_what_it_lost(tmp_path: Path) -> None:
    mlflow = _registry()
    index = LineageIndex(f"sqlite:///{tmp_path / 'index.db'}")
    index.rebuild(mlflow.client)
    mlflow.register("cxr", "4", _rows("d2", patients=5), trained="2026-01-04")
    del mlflow.versions[("cxr", "1")]
    assert index.sync(mlflow.client) == 2
    index.check_fresh(mlflow.client)
    assert ("cxr", "4", "run-cxr-4") in index.indexed_versions()
    assert index.sync(mlflow.client) == 0


def test_deleted_or_edited_rows_are_found_by_count_and_against_the_manifest(
    tmp_path: Path,
) -> None:
    """The attack on the index itself: a patient's rows deleted (then the count "repaired"),
    a row's split edited. The count check stops every answer at once; the full check names
    the dataset; a rebuild restores it."""
    from sqlalchemy import create_engine, text

    mlflow = _registry()
    url = f"sqlite:///{tmp_path / 'index.db'}"
    index = LineageIndex(url)
    index.rebuild(mlflow.client)
    assert index.verify(mlflow.client).ok
    engine = create_engine(url)
    with engine.begin() as connection:
        patient = connection.execute(text("SELECT patient_id FROM idx_records LIMIT 1")).scalar()
        connection.execute(text("DELETE FROM idx_records WHERE patient_id = :p"), {"p": patient})
    with pytest.raises(AuditError, match="disagrees with the manifests"):
        index.check_fresh(mlflow.client)
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE idx_datasets SET records = "
                "(SELECT count(*) FROM idx_records WHERE dataset_id = idx_datasets.id)"
            )
        )
    index.check_fresh(mlflow.client)  # counts repaired: only the full check can tell now
    result = index.verify(mlflow.client)
    assert not result.ok and "manifest rows missing" in result.mismatches[0]
    index.rebuild(mlflow.client)
    with engine.begin() as connection:
        connection.execute(text("UPDATE idx_records SET split = 'test' WHERE rowid = 1"))
    assert not index.verify(mlflow.client).ok
    engine.dispose()


def test_rebuild_stops_at_a_version_whose_lineage_is_incomplete(tmp_path: Path) -> None:
    mlflow = _registry()
    del mlflow.runs["run-cxr-3"].data.params["dataset_md5"]
    index = LineageIndex(f"sqlite:///{tmp_path / 'index.db'}")
    with pytest.raises(AuditError, match="run run-cxr-3 has no dataset_md5: its lineage is"):
        index.rebuild(mlflow.client)
    mlflow = _registry()
    del mlflow.artifacts["run-cxr-3"]
    with pytest.raises(AuditError, match=r"cxr/3: artifact manifest\.csv of run run-cxr-3"):
        index.rebuild(mlflow.client)
