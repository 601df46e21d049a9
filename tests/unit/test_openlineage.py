"""OpenLineage events and the PROV export without a stack: the events are valid RunEvents,
a dead catalogue costs a job a bounded wait and loses nothing, replay delivers, the PROV
document parses back and the picture is drawn from it."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from openlineage.client.event_v2 import RunState
from openlineage.client.serde import Serde
from prov.model import ProvDocument

from lineage.errors import LineageError
from lineage.openlineage import events as ol
from lineage.openlineage import prov
from lineage.openlineage.emit import EventSink, JobRun, configured, forwarded_env, replay
from tests.helpers import LineageReceiver, assert_valid_run_event


def _as_json(event: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Serde.to_json(event))
    return data


def _training_run(sink: EventSink | None) -> JobRun:
    return JobRun(
        sink,
        run_id=ol.training_run_id("train-t1-job"),
        job=ol.job("train/datasets", "MODEL_TRAINING", "http://u:secret@git/datasets.git", "c0"),
        parent=ol.parent(ol.processing_run_id("t1"), "process/datasets"),
        facts={"dvc_tag": "t1"},
    )


def test_built_events_are_valid_run_events_with_linked_runs_and_no_credentials() -> None:
    dataset = ol.dataset_version(
        "http://u:secret@git/datasets.git", "ab.dir", {"x": 1}, output=True
    )
    model = ol.model_version("http://mlflow", "digits", "3", {"weights_sha256": "ff"}, output=True)
    event = ol.run_event(
        RunState.COMPLETE,
        run_id=ol.training_run_id("train-t1-job"),
        job=ol.job("train/datasets", "MODEL_TRAINING", "http://u:secret@git/datasets.git", "c0"),
        inputs=[ol.source_dataset("s3://bucket/raw/")],
        outputs=[dataset, model],  # type: ignore[list-item]
        parent_facet=ol.parent(ol.processing_run_id("t1"), "process/datasets"),
        error=None,
    )
    data = _as_json(event)
    assert_valid_run_event(data)
    assert data["run"]["facets"]["parent"]["run"]["runId"] == ol.processing_run_id("t1")
    assert data["outputs"][0]["facets"]["version"]["datasetVersion"] == "ab.dir"
    assert data["outputs"][1]["name"] == "models/digits"
    assert data["inputs"][0]["namespace"] == "s3://bucket"
    assert "secret" not in json.dumps(data)
    # a facet of ours names us as its producer
    assert data["outputs"][0]["facets"]["modelLineage"]["_producer"] == ol.PRODUCER
    # the run ids are stable: a deploy names its training run without asking anyone
    assert ol.training_run_id("train-t1-job") == ol.training_run_id("train-t1-job")


def test_a_schema_violation_is_caught() -> None:
    data = _as_json(
        ol.run_event(RunState.START, run_id=ol.processing_run_id("t"), job=ol.job("j", "X"))
    )
    data["run"]["runId"] = "not-a-uuid"
    with pytest.raises(Exception, match="uuid"):
        assert_valid_run_event(data)


def test_off_unless_configured_the_standard_way() -> None:
    assert not configured({})
    assert configured({"OPENLINEAGE_URL": "http://x"})
    assert configured({"OPENLINEAGE__TRANSPORT__TYPE": "console"})
    assert not configured({"OPENLINEAGE_URL": "http://x", "OPENLINEAGE_DISABLED": "true"})
    assert forwarded_env({"OPENLINEAGE_URL": "u", "PATH": "/bin"}) == {"OPENLINEAGE_URL": "u"}


def test_a_dead_catalogue_costs_a_bounded_wait_and_every_event_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    down = LineageReceiver()  # a port nobody listens on
    monkeypatch.setenv("OPENLINEAGE_URL", down.url)
    monkeypatch.setenv("LINEAGE_OPENLINEAGE_TIMEOUT", "3")
    sink = EventSink.from_env(tmp_path / "kept")
    assert sink is not None
    started = time.monotonic()
    with _training_run(sink):
        pass
    assert time.monotonic() - started < 2 * 3 + 2  # two events, each bounded
    kept = sorted((tmp_path / "kept").iterdir())
    assert [p.name for p in kept] == ["001-START.json", "002-COMPLETE.json"]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in kept)
    assert "lineage export --replay" in caplog.text and sink.sent == 0

    up = LineageReceiver(down.port).start()
    try:
        result = replay(tmp_path / "kept", up.url)
    finally:
        up.close()
    assert result.ok and len(result.sent) == 2
    assert [e["eventType"] for e in up.events] == ["START", "COMPLETE"]
    for event in up.events:
        assert_valid_run_event(event)


def test_a_failing_job_emits_fail_with_its_reason_and_still_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = LineageReceiver().start()
    monkeypatch.setenv("OPENLINEAGE_URL", receiver.url)
    try:
        with pytest.raises(LineageError), _training_run(EventSink.from_env(tmp_path)):
            raise LineageError("dataset t1 does not match its DVC listing")
    finally:
        receiver.close()
    assert [e["eventType"] for e in receiver.events] == ["START", "FAIL"]
    message = receiver.events[1]["run"]["facets"]["errorMessage"]["message"]
    assert "does not match its DVC listing" in message


def test_replay_refuses_a_directory_without_events(tmp_path: Path) -> None:
    with pytest.raises(LineageError, match="no OpenLineage events"):
        replay(tmp_path, "http://127.0.0.1:1")


def _chain(**changes: Any) -> prov.ChainFacts:
    base = prov.ChainFacts(
        model_name="digits",
        model_version="2",
        aliases=["champion"],
        run_id="r" * 32,
        run_started_ms=1_700_000_000_000,
        run_ended_ms=1_700_000_060_000,
        record={
            "code_version": "0.1.0",
            "weights_sha256": "w" * 64,
            "model_sha256": "m" * 64,
            "pattern": "record",
            "consent_snapshot_sha256": "c" * 64,
            "consent_as_of": "2026-11-01T00:00:00Z",
            "patient_count": 12,
            "world_size": 2,
        },
        data={
            "repo_url": "http://git/datasets.git",
            "tag": "v2.0-x",
            "commit": "c0ffee",
            "dataset_md5": "ab.dir",
            "manifest_sha256": "f" * 64,
            "nfiles": 40,
            "records": {"train": 30, "val": 5, "test": 5},
        },
        checks=[
            {"name": "registry tags", "ok": True, "detail": ""},
            {"name": "tag", "ok": True, "detail": ""},
            {"name": "dvc listing", "ok": False, "detail": "1 object missing"},
        ],
        source="synthetic-cxr:seed=1",
        erasures=[{"request": "DPO-1", "records": 2}],
    )
    return prov.ChainFacts(**{**base.__dict__, **changes})


def test_the_prov_document_parses_back_with_its_entities_relations_and_checks() -> None:
    doc = prov.build(_chain())
    for fmt in ("prov-json", "prov-n"):
        assert prov.serialize(doc, fmt)
    parsed = ProvDocument.deserialize(content=prov.serialize(doc, "prov-json"), format="json")
    ids = {str(r.identifier) for r in parsed.get_records() if r.identifier is not None}
    for expected in (
        "lineage:dataset/v2.0-x",
        "lineage:records/v2.0-x",
        "lineage:model/digits/2",
        "lineage:run/" + "r" * 32,
        "lineage:consent/" + "c" * 64,
        "lineage:erasure/DPO-1",
    ):
        assert expected in ids, expected
    kinds = {type(r).__name__ for r in parsed.get_records()}
    assert {"ProvUsage", "ProvGeneration", "ProvDerivation", "ProvAssociation"} <= kinds
    assert "ProvInvalidation" in kinds  # the erasure
    text = prov.serialize(doc, "prov-n")
    assert 'lineage:checks="ok: dvc listing' not in text  # a failed check is never "ok"
    assert "FAILED: dvc listing" in text


def test_the_picture_is_drawn_from_the_prov_document() -> None:
    svg = prov.chain_svg(prov.build(_chain(endpoint="http://127.0.0.1:8080")))
    root = ET.fromstring(svg)  # noqa: S314 (our own output) well-formed, self-contained SVG
    assert root.tag.endswith("svg")
    texts = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    for label in ("endpoint", "registered version", "training run", "dataset version", "records"):
        assert label in texts
    assert "consent snapshot" in texts
    assert "FAILED: dvc listing" in texts  # the failed link is written on its edge
    assert "#b00020" in svg  # and drawn in red


def test_a_chain_that_fails_a_check_is_not_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from lineage.query import export as export_module
    from lineage.query.chain import Check

    failed = Check("model weights", False, "sha256 of weights.pt differs from the run's record")
    traced = SimpleNamespace(ok=False, failed=[failed], checks=[failed])
    monkeypatch.setattr(export_module, "trace", lambda *_a, **_k: traced)
    with pytest.raises(LineageError, match=r"fails 1 check.*nothing was exported.*model weights"):
        export_module.export(SimpleNamespace(), "digits/1", "prov-json")  # type: ignore[arg-type]


def test_sagemaker_jobs_get_the_catalogue_settings_but_no_credentials() -> None:
    from lineage.sagemaker.jobs import public_openlineage_env

    env = {
        "OPENLINEAGE_URL": "https://marquez.example:5000",
        "OPENLINEAGE_NAMESPACE": "prod",
        "OPENLINEAGE_API_KEY": "s3cr3t",
        "OPENLINEAGE__TRANSPORT__AUTH__API_KEY": "s3cr3t",
        "HOME": "/root",
    }
    assert public_openlineage_env(env) == {
        "OPENLINEAGE_URL": "https://marquez.example:5000",
        "OPENLINEAGE_NAMESPACE": "prod",
    }
    assert public_openlineage_env({"OPENLINEAGE_URL": "https://u:pw@marquez"}) == {}
