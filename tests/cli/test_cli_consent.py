"""`lineage consent ...` on a real registry (SQLite under the test's LINEAGE_HOME: in process
and fast, so not faked), with the impact of a withdrawal faked; `lineage erase` with the
erasure faked."""

from __future__ import annotations

import csv
import io
import stat
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from lineage.audit.queries import Impact
from lineage.config import Settings
from lineage.erasure.erase import Erasure
from lineage.erasure.plan import DatasetVersion, ErasurePlan, ImpactOf, PlannedObject
from lineage.ops.deploy import running_endpoints
from tests.helpers import REGISTRY, CliRun

Cli = Callable[..., CliRun]
P1 = "PAT-00001"


@pytest.fixture
def registry(cli: Cli, tmp_path: Path) -> Path:
    """The reference CSV, imported: PAT-00001 and PAT-00002 consent, PAT-00003 does not."""
    path = tmp_path / "registry.csv"
    path.write_text(REGISTRY)
    ran = cli("consent", "import", str(path))
    assert ran.code == 0, ran.stderr
    assert ran.stdout == (
        "4 rows: 3 new patients, 4 new scans, 2 grants, 1 withdrawals, 0 patients unchanged\n"
    )
    return path


def no_impact(_: Settings, patient_id: str, **__: Any) -> Impact:
    return Impact(patient_id, "withdrawn", [], [], [], [], 0, "index")


def test_import_is_idempotent_and_a_bad_file_names_its_line(
    cli: Cli, registry: Path, tmp_path: Path
) -> None:
    again = cli("consent", "import", str(registry), "--json")
    assert again.code == 0
    assert (again.json()["changed"], again.json()["unchanged"]) == (False, 3)
    assert "(nothing changed)" in cli("consent", "import", str(registry)).stdout
    bad = tmp_path / "bad.csv"
    bad.write_text(REGISTRY + "PAT-00004,S-9,x.png,normal,maybe\n")
    refused = cli("consent", "import", str(bad))
    assert refused.code == 1 and refused.stderr.startswith("error: ")
    assert "line 6: consent_status 'maybe'" in refused.stderr
    missing = cli("consent", "import", str(tmp_path / "none.csv"))
    assert missing.stderr.endswith("none.csv does not exist; pass the registry CSV's path\n")


def test_a_withdrawal_is_recorded_and_its_impact_shown(
    cli: Cli, registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[str, Any]] = []

    def impact(settings: Settings, patient_id: str, **kwargs: Any) -> Impact:
        asked.append((patient_id, kwargs["endpoints"]))
        return no_impact(settings, patient_id)

    monkeypatch.setattr("lineage.audit.queries.impact", impact)
    ran = cli("consent", "withdraw", P1, "--reason", "patient request", "--json")
    assert ran.code == 0, ran.stderr
    shown = ran.json()
    assert (shown["event"]["action"], shown["event"]["actor"]) == ("withdraw", "tester")
    assert shown["event"]["seq"] == 4 and shown["impact"]["models"] == []
    assert asked == [(P1, running_endpoints)]  # the local runtime's endpoints
    status = cli("consent", "status", P1, "--json").json()
    assert status["status"] == "withdrawn" and len(status["events"]) == 2
    assert [e["reason"] for e in status["events"]] == ["import registry.csv", "patient request"]


def test_a_withdrawal_stays_recorded_when_its_impact_cannot_be_computed(
    cli: Cli, registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def impact(*_: Any, **__: Any) -> Impact:
        raise ConnectionError("MLflow is down")

    monkeypatch.setattr("lineage.audit.queries.impact", impact)
    ran = cli("consent", "withdraw", P1, "--reason", "patient request", "--actor", "dpo")
    assert ran.code == 0
    assert ran.stdout.startswith(f"event 4: {P1} withdraw at ")
    assert "by dpo (patient request)" in ran.stdout
    assert "withdrawal recorded, but its impact could not be computed: MLflow is down" in ran.said
    assert f"run `lineage impact {P1}` when it is fixed" in ran.said
    assert cli("consent", "status", P1, "--json").json()["status"] == "withdrawn"


def test_grant_refuses_an_unknown_patient_and_an_empty_reason(cli: Cli, registry: Path) -> None:
    unknown = cli("consent", "grant", "PAT-09999", "--reason", "consented")
    assert unknown.code == 1 and unknown.stdout == ""
    assert unknown.stderr.startswith("error: patient PAT-09999 is not in the consent registry; ")
    blank = cli("consent", "grant", "PAT-00003", "--reason", " ")
    assert blank.stderr == "error: a reason is required; pass --reason, e.g. 'patient request'\n"
    regranted = cli("consent", "grant", "PAT-00003", "--reason", "consented", "--json")
    assert regranted.code == 0 and regranted.json()["impact"] is None  # only withdrawals


def test_export_writes_the_registry_as_it_stood(cli: Cli, registry: Path, tmp_path: Path) -> None:
    before = cli("consent", "export", "--json").json()
    assert before["snapshot"]["consenting"] == [P1, "PAT-00002"]
    assert {r["scan_id"] for r in before["rows"] if r["patient_id"] == P1} == {
        f"{P1}-SCAN-0001",
        f"{P1}-SCAN-0002",
    }
    out = tmp_path / "export.csv"
    ran = cli("consent", "export", "--out", str(out))
    assert ran.code == 0 and ran.stdout == ""
    assert f"2 patients consent, 1 do not; snapshot sha256 {before['snapshot']['sha256']}" in (
        ran.said
    )
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # who consents and who does not
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 4 and rows[0]["patient_id"] == P1
    on_stdout = cli("consent", "export", "--as-of", "2000-01-01")
    assert on_stdout.stdout == "patient_id,scan_id,file_path,label,consent_status\n"
    bad_time = cli("consent", "export", "--as-of", "yesterday")
    assert bad_time.code == 1 and "yesterday" in bad_time.stderr


def test_verify_offline_counts_the_log_and_the_erasures(cli: Cli, registry: Path) -> None:
    ran = cli("consent", "verify", "--offline", "--json")
    assert ran.code == 0, ran.stderr
    shown = ran.json()
    assert (shown["ok"], shown["events"], shown["patients"]) == (True, 3, 3)
    assert (shown["mlflow_checked"], shown["erasures"]) == (False, 0)
    printed = cli("consent", "verify", "--offline").stdout
    assert printed.startswith("intact: 3 events, 3 patients")
    assert "heads recorded in MLflow" not in printed  # not asked: not claimed


def _erasure(dry_run: bool) -> Erasure:
    dataset = DatasetVersion("datasets", "v1-x", "c" * 40, "d.dir", "s3://lineage-dvc/files")
    scan = PlannedObject("a" * 32, "b" * 64, "r1", f"{P1}-SCAN-0001", "train/0/a.png", "s3://r")
    scan.datasets.append(dataset)
    impact = no_impact(Settings(home=Path()), P1)
    plan = ErasurePlan(P1, "2026-02-01T00:00:00.000000Z", [dataset], [scan], [], [], impact, [])
    return Erasure("REQ-1", "dpo", plan, dry_run, None, [], [], "", "2026-02-01T00:00:05Z", {}, {})


def test_erase_passes_the_request_and_the_impact_and_a_dry_run_changes_nothing(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    asked: list[dict[str, Any]] = []

    def erase(_: Settings, patient_id: str, *, impact_of: ImpactOf, **kwargs: Any) -> Erasure:
        assert isinstance(impact_of, partial)
        asked.append({"patient": patient_id, "endpoints": impact_of.keywords["endpoints"]})
        asked[-1].update(kwargs)
        return _erasure(kwargs["dry_run"])

    monkeypatch.setattr("lineage.cli.erase.erase", erase)
    ran = cli("erase", P1, "--request", "REQ-1", "--actor", "dpo", "--dry-run")
    assert ran.code == 0, ran.stderr
    assert "objects: would delete 1, kept 0" in ran.stdout
    assert "dry run: nothing was changed" in ran.stdout
    assert asked == [
        {
            "patient": P1,
            "endpoints": running_endpoints,
            "request": "REQ-1",
            "actor": "dpo",
            "dry_run": True,
            "out_dir": None,
        }
    ]
    shown = cli("erase", P1, "--request", "R", "--actor", "a", "--out", str(tmp_path), "--json")
    assert shown.code == 0 and shown.json()["plan"]["objects"][0]["md5"] == "a" * 32
    assert shown.json()["dry_run"] is False and asked[-1]["out_dir"] == tmp_path
