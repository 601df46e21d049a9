"""`lineage impact | audit record | model | excluded | report | index rebuild | status`: the
audits' answers as people and scripts read them, and their verdicts as exit codes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lineage.audit.queries import (
    Exclusion,
    Impact,
    ModelAudit,
    ModelHit,
    PatientLine,
    RecordAudit,
)
from lineage.config import Settings
from lineage.index.source import AuditError, ModelData
from lineage.ops.deploy import running_endpoints
from tests.helpers import CliRun, FakeMlflow

Cli = Callable[..., CliRun]
P1 = "PAT-00001"
MODEL = ModelData(
    "cxr", "1", "r1", 0, "v1-x", "c" * 40, "d.dir", "e" * 64, "record", "s" * 64, "2026-01-02"
)


def hit(model: str = "cxr/1", aliases: tuple[str, ...] = ("champion",)) -> ModelHit:
    return ModelHit(
        model=model,
        aliases=list(aliases),
        endpoints=["http://127.0.0.1:8080"],
        run_id="r1",
        trained_at="2026-01-03T00:00:00.000000Z",
        tag="v1-x",
        commit="c" * 40,
        consent_snapshot_sha256="s" * 64,
        consent_as_of="2026-01-02T00:00:00.000000Z",
        consent_at_training="granted",
        splits=["train"],
        scans=[{"scan_id": f"{P1}-SCAN-0001"}],
    )


class Audits:
    """Stands in for lineage.audit.queries in the CLI module: records how it was asked."""

    def __init__(self) -> None:
        self.asked: list[dict[str, Any]] = []
        self.exclusion = Exclusion(P1, "2026-02-01T00:00:00.000000Z", [], [], ["cxr/2"], 2, "index")

    def _ask(self, patient_or_ref: str, **kwargs: Any) -> None:
        self.asked.append({"what": patient_or_ref, **kwargs})

    def impact(self, _: Settings, patient_id: str, **kwargs: Any) -> Impact:
        self._ask(patient_id, **kwargs)
        endpoints = [{"url": "http://127.0.0.1:8080", "model": "cxr/1"}]
        return Impact(
            patient_id, "withdrawn", [hit()], ["cxr@champion"], endpoints, ["v1-x"], 2, "index"
        )

    def audit_record(self, _: Settings, patient_id: str, **kwargs: Any) -> RecordAudit:
        self._ask(patient_id, **kwargs)
        consent = {"status": "granted", "since": "2026-01-01", "events": []}
        erased = {
            "seq": 1,
            "request": "DSR-7",
            "actor": "dpo",
            "at": "2026-03-01T00:00:00.000000Z",
            "records": 2,
            "scans": [f"{P1}-SCAN-0001"],
            "dataset_versions": ["v1-x"],
            "models_trained_on_them": ["cxr/1"],
        }
        source = "scan" if kwargs["scan"] else "index"
        return RecordAudit(patient_id, consent, [hit()], 2, source, erasures=[erased])

    def audit_model(self, _: Settings, ref: str, **kwargs: Any) -> ModelAudit:
        self._ask(ref, **kwargs)
        patient = PatientLine(P1, 2, ["train"], ["normal"], "withdrawn", "withdrawn", None)
        return ModelAudit(
            MODEL, [], [], {"train": {"normal": 2}}, {"train": 1}, [patient], "s" * 64, "index"
        )

    def audit_excluded(
        self, _: Settings, patient_id: str, since: str | None, **kwargs: Any
    ) -> Exclusion:
        self._ask(patient_id, since=since, **kwargs)
        return self.exclusion


@pytest.fixture
def audits(monkeypatch: pytest.MonkeyPatch) -> Audits:
    fake = Audits()
    for name in ("impact", "audit_record", "audit_model", "audit_excluded"):
        monkeypatch.setattr(f"lineage.cli.audit.{name}", getattr(fake, name))
    return fake


def test_impact_json_and_what_the_audit_was_given(cli: Cli, audits: Audits) -> None:
    ran = cli("impact", P1, "--scan", "--json")
    assert ran.code == 0, ran.stderr
    shown = ran.json()
    assert set(shown) == {
        *("patient_id", "status", "models", "aliases", "endpoints", "datasets"),
        *("models_checked", "source", "sagemaker"),
    }
    assert shown["models"][0]["model"] == "cxr/1" and shown["aliases"] == ["cxr@champion"]
    assert audits.asked[0] == {
        "what": P1,
        "endpoints": running_endpoints,
        "sagemaker": None,
        "scan": True,
    }
    printed = cli("impact", P1).stdout
    assert "in the training data of 1 of 2 registered model versions (from the index)" in printed
    assert "running endpoints: http://127.0.0.1:8080" in printed
    assert f"then `lineage audit excluded {P1}`" in printed


def test_record_audit_prints_the_consent_and_each_model(cli: Cli, audits: Audits) -> None:
    ran = cli("audit", "record", P1, "--scan")
    assert ran.code == 0
    assert f"{P1} (granted since 2026-01-01): in 1 of 2 registered model versions" in ran.stdout
    assert "(from the scan)" in ran.stdout and "@champion" in ran.stdout
    # the text says what --json says: the patient's data was erased, under which request
    assert "erased under DSR-7 at 2026-03-01T00:00:00.000000Z by dpo: 2 record(s)" in ran.stdout
    assert "models trained on them: cxr/1" in ran.stdout


def test_model_audit_fails_when_consent_at_training_is_not_proven(cli: Cli, audits: Audits) -> None:
    ran = cli("audit", "model", "cxr@champion")
    assert ran.code == 1
    assert "FAILED: consent at training time not proven" in ran.stderr
    assert "patients without consent at training: 1" in ran.stdout
    shown = cli("audit", "model", "cxr/1", "--json")
    assert shown.code == 1 and shown.json()["ok"] is False
    assert shown.json()["without_consent"] == [P1]


def test_exclusion_exit_code_is_its_verdict(cli: Cli, audits: Audits) -> None:
    passed = cli("audit", "excluded", P1, "--since", "2026-02-01", "--model", "cxr/2")
    assert passed.code == 0 and passed.stdout.startswith("PASSED:")
    assert "trained after the date without the patient: cxr/2" in passed.stdout
    assert audits.asked[-1] | {"endpoints": None} == {
        "what": P1,
        "since": "2026-02-01",
        "model": "cxr/2",
        "endpoints": None,
        "sagemaker": None,
        "scan": False,
    }
    audits.exclusion = Exclusion(P1, "2026-02-01", [hit("cxr/3", ())], [hit()], [], 3, "index")
    failed = cli("audit", "excluded", P1, "--json")
    assert failed.code == 1
    assert failed.json()["passed"] is False
    assert [v["model"] for v in failed.json()["violations"]] == ["cxr/3"]
    printed = cli("audit", "excluded", P1)
    assert printed.code == 1 and printed.stdout.startswith("FAILED:")
    assert "still registered: retire or replace" in printed.stdout


def test_an_audit_that_cannot_answer_says_what_to_do(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    def stale(*_: Any, **__: Any) -> Impact:
        raise AuditError("the lineage index is out of date", "run `lineage index rebuild`")

    monkeypatch.setattr("lineage.cli.audit.impact", stale)
    ran = cli("impact", P1, "--json")
    assert (ran.code, ran.stdout) == (1, "")
    assert ran.stderr == "error: the lineage index is out of date; run `lineage index rebuild`\n"


def test_report_names_both_files_and_the_verdict(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def write_report(_: Settings, ref: str, out: Path, **kwargs: Any) -> tuple[Path, Path, str]:
        assert (ref, kwargs["scan"]) == ("cxr@champion", False)
        return out, out.with_suffix(".json"), "PASSED"

    monkeypatch.setattr("lineage.audit.report.write_report", write_report)
    out = tmp_path / "report.html"
    ran = cli("audit", "report", "--model", "cxr@champion", "--out", str(out))
    assert ran.code == 0 and ran.stdout == f"wrote {out} and {out.with_suffix('.json')}: PASSED\n"


def test_index_rebuild_then_status_and_a_stale_index(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lineage.manifest import ManifestRow

    rows = [ManifestRow(f"train/0/{p}.png", p, "train", "0", "0" * 64, p, p) for p in "ab"]
    mlflow = FakeMlflow()
    mlflow.register("cxr", "1", rows, trained="2026-01-01")
    monkeypatch.setattr("lineage.registry.mlflow_client", lambda _: mlflow.client)
    rebuilt = cli("index", "rebuild", "--json")
    assert rebuilt.code == 0, rebuilt.stderr
    assert {k: rebuilt.json()[k] for k in ("models", "runs", "datasets", "records")} == {
        "models": 1,
        "runs": 1,
        "datasets": 1,
        "records": 2,
    }
    fresh = cli("index", "status", "--json")
    assert fresh.code == 0 and (fresh.json()["fresh"], fresh.json()["problem"]) == (True, None)
    mlflow.register("cxr", "2", rows[:1], trained="2026-01-02")
    stale = cli("index", "status", "--json")
    assert stale.code == 1 and stale.json()["fresh"] is False
    assert "1 registered versions not indexed" in stale.json()["problem"]
    printed = cli("index", "rebuild")
    assert printed.code == 0 and printed.stdout.startswith("indexed 2 model versions, 2 runs")
