"""The lineage index on its own (SQLite and PostgreSQL): datasets stored once, answers by
patient and by model, and concurrent writers that neither duplicate nor lose anything."""

from __future__ import annotations

import multiprocessing

from lineage.index.source import ModelData
from lineage.index.store import IndexSource, LineageIndex
from lineage.manifest import ManifestRow


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
