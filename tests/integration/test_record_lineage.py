"""The healthcare scenario against the real stack: consent registry -> v1.0 -> train ->
three withdrawals -> v2.0 -> train, then every record-level question, answered from the
index and from a full scan of MLflow (they must agree), failing closed on damage."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from lineage import manifest
from lineage.audit.queries import audit_excluded, audit_record, impact
from lineage.config import Settings
from lineage.ops.deploy import running_endpoints
from lineage.storage import s3_client
from tests.conftest import RunningStack, free_port_block, run_cli
from tests.helpers import checkout_with_plain_dvc, ok
from tests.integration.conftest import DemoRun, demo_run, private_registry_env

pytestmark = pytest.mark.integration


class Scenario(DemoRun):
    @property
    def withdrawn(self) -> list[str]:
        return list(self.result["withdrawn"])


@pytest.fixture(scope="module")
def scenario(
    running_stack: RunningStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scenario]:
    """`lineage demo --pattern record`, with its own consent registry and index."""
    env = private_registry_env(running_stack, tmp_path_factory.mktemp("record"))
    repo = f"patients-{uuid.uuid4().hex[:6]}"
    name = f"cxr-{repo}"
    with demo_run(env, repo, name, "--pattern", "record", "--fractions", "0.5,0.5") as (
        port,
        result,
    ):
        yield Scenario(env, repo, name, port, result)


def own(scenario: Scenario, hits: list[dict[str, Any]], *names: str) -> list[str]:
    """The models among `hits` that are this module's (its scenario's, or `names`): other
    modules on the session's stack publish the same deterministic cohort, and the audits
    rightly find their models too."""
    prefixes = (f"{scenario.name}/", *(f"{name}/" for name in names))
    return [h["model"] for h in hits if h["model"].startswith(prefixes)]


def cli(scenario: Scenario, *args: str, expect: int = 0) -> dict[str, Any]:
    out = run_cli(*args, "--json", env=scenario.env, timeout=600)
    assert out.returncode == expect, out.stderr[-3000:]
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def manifest_rows(
    stack: RunningStack, scenario: Scenario, version: str, dest: Path
) -> list[manifest.ManifestRow]:
    """A version's files and manifest: v2.0 through plain git + DVC; v1.0 holds the patient
    the demo erased at its end, and DVC checks a directory out whole or not at all, so its
    remainder comes from `lineage reproduce --dir` (every remaining byte verified)."""
    if version == "v1.0":
        cli(scenario, "reproduce", "--model", scenario.ref("v1.0"), "--dir", str(dest))
        dataset = dest / "dataset"
    else:
        dataset = checkout_with_plain_dvc(
            stack, stack.settings.repo_url(scenario.repo), scenario.tag(version), dest
        )
    return manifest.read(dataset / manifest.MANIFEST_NAME)


def test_the_record_manifest_is_patient_level_and_consent_filtered(
    running_stack: RunningStack, scenario: Scenario, tmp_path: Path
) -> None:
    v1 = manifest_rows(running_stack, scenario, "v1.0", tmp_path / "v1")
    v2 = manifest_rows(running_stack, scenario, "v2.0", tmp_path / "v2")
    header = (tmp_path / "v2" / "dataset" / manifest.MANIFEST_NAME).read_text().splitlines()[0]
    assert header == "patient_id,scan_id,record_id,file_path,split,label,sha256"
    for rows in (v1, v2):
        splits: dict[str, set[str]] = {}
        for row in rows:
            splits.setdefault(row.patient_id, set()).add(row.split)
        assert all(len(s) == 1 for s in splits.values()), "a patient is in two splits"
    withdrawn = set(scenario.withdrawn)
    assert withdrawn <= {r.patient_id for r in v1}
    assert not withdrawn & {r.patient_id for r in v2}
    # exactly their records left; nobody else moved
    v1_by_id = {r.record_id: r.split for r in v1 if r.patient_id not in withdrawn}
    assert v1_by_id == {r.record_id: r.split for r in v2}


def test_the_demo_ends_with_an_erasure_that_keeps_v1_verifiable(
    running_stack: RunningStack, scenario: Scenario, tmp_path: Path
) -> None:
    erasure = scenario.result["erasure"]
    erased = scenario.withdrawn[0]
    assert erasure["patient_id"] == erased and erasure["deleted_objects"]
    assert erasure["verify_after"]["ok"] and erasure["verify_after"]["erased"]
    assert scenario.ref("v1.0") in erasure["to_retrain_or_retire"]
    assert Path(erasure["evidence"]["html"]).is_file()
    # the checkout of v1.0: the erased patient's files are gone, everyone else's are there
    rows = manifest_rows(running_stack, scenario, "v1.0", tmp_path / "v1")
    dataset = tmp_path / "v1" / "dataset"
    for row in rows:
        assert (dataset / row.file_path).is_file() == (row.patient_id != erased), row
    answer = cli(scenario, "audit", "record", erased)
    assert answer["erasures"][0]["request"] == erasure["request"]


def test_runs_and_datasets_record_the_consent_snapshot(
    running_stack: RunningStack, scenario: Scenario, tmp_path: Path
) -> None:
    client = MlflowClient(running_stack.settings.mlflow_uri)
    processing = scenario.result["versions"]["v1.0"]["processing"]
    run = client.get_run(scenario.result["versions"]["v1.0"]["training"]["run_id"])
    params = run.data.params
    assert params["consent_snapshot_sha256"] == processing["consent"]["consent_snapshot_sha256"]
    assert params["consent_as_of"] == processing["consent"]["consent_as_of"]
    assert int(params["patient_count"]) == sum(processing["patients"].values())
    # dataset.json is committed in git beside the .dvc file (no data needed to read it)
    url, tag = running_stack.settings.repo_url(scenario.repo), scenario.tag("v1.0")
    subprocess.run(["git", "clone", "--quiet", url, str(tmp_path / "c")], check=True)
    subprocess.run(["git", "checkout", "--quiet", tag], cwd=tmp_path / "c", check=True)
    committed = json.loads((tmp_path / "c" / manifest.DATASET_METADATA).read_text())
    assert committed["consent_snapshot_sha256"] == params["consent_snapshot_sha256"]
    assert committed["pattern"] == "record"
    # the consent head it was taken at, and which log that head belongs to, in every copy
    for key in ("consent_head_seq", "consent_head_hash", "consent_log_id"):
        assert str(committed[key]) == params[key], key


def test_as_of_export_reproduces_v1s_snapshot(scenario: Scenario) -> None:
    consent = scenario.result["versions"]["v1.0"]["processing"]["consent"]
    then = cli(scenario, "consent", "export", "--as-of", consent["consent_as_of"])
    assert then["snapshot"]["sha256"] == consent["consent_snapshot_sha256"]
    now = cli(scenario, "consent", "export")
    assert now["snapshot"]["sha256"] != consent["consent_snapshot_sha256"]
    assert set(scenario.withdrawn) <= set(now["snapshot"]["withdrawn"])
    assert scenario.result["consent_check"]["matches"]


def test_audit_record_finds_withdrawn_patients_in_v1_only(scenario: Scenario) -> None:
    v1 = scenario.ref("v1.0")
    for patient in scenario.withdrawn:
        answer = cli(scenario, "audit", "record", patient)
        assert own(scenario, answer["models"]) == [v1]
        hit = next(m for m in answer["models"] if m["model"] == v1)
        assert hit["splits"] == ["train"] and hit["scans"]
        assert all(s["scan_id"].startswith(f"{patient}-SCAN-") for s in hit["scans"])
        assert hit["consent_at_training"] == "granted"
        assert (
            hit["consent_snapshot_sha256"]
            == (
                scenario.result["versions"]["v1.0"]["processing"]["consent"][
                    "consent_snapshot_sha256"
                ]
            )
        )
        assert answer["consent"]["status"] == "withdrawn"


def test_audit_excluded_passes_for_v2_and_fails_for_v1(scenario: Scenario) -> None:
    patient = scenario.withdrawn[0]
    v1, v2 = scenario.ref("v1.0"), scenario.ref("v2.0")
    assert cli(scenario, "audit", "excluded", patient, "--model", v2)["passed"]
    failed = cli(scenario, "audit", "excluded", patient, "--model", v1, expect=1)
    assert [h["model"] for h in failed["in_use"]] == [v1]
    overall = cli(scenario, "audit", "excluded", patient, expect=1)
    assert own(scenario, overall["in_use"]) == [v1] and not own(scenario, overall["violations"])
    assert v2 in overall["clean"]
    # a date after which v1 was trained: v1 becomes a violation, not just "still in use"
    since = "2000-01-01"
    strict = cli(scenario, "audit", "excluded", patient, "--since", since, expect=1)
    assert v1 in [h["model"] for h in strict["violations"]]


def test_impact_lists_the_model_its_alias_and_endpoint(scenario: Scenario) -> None:
    # the demo moved production to v2: point a second alias and endpoint at v1 to see them
    v1 = scenario.ref("v1.0")
    ok(run_cli("promote", "--model", v1, "--alias", "previous", "--json", env=scenario.env))
    port = free_port_block(1)
    ok(
        run_cli(
            "deploy",
            "--model",
            f"{scenario.name}@previous",
            "--port",
            str(port),
            "--json",
            env=scenario.env,
            timeout=300,
        )
    )
    try:
        answer = cli(scenario, "impact", scenario.withdrawn[1])
    finally:
        run_cli("deploy", "--stop", "--port", str(port), env=scenario.env)
    assert own(scenario, answer["models"]) == [v1]
    ours = [a for a in answer["aliases"] if a.startswith(f"{scenario.name}@")]
    assert ours == [f"{scenario.name}@previous"]
    assert own(scenario, answer["endpoints"]) == [v1]
    assert {"url": f"http://127.0.0.1:{port}", "model": v1} in answer["endpoints"]
    assert scenario.tag("v1.0") in answer["datasets"]
    assert scenario.tag("v2.0") not in answer["datasets"]
    # the demo's own impact step saw v1 deployed as champion on its endpoint
    first = scenario.result["impacts"][0]
    assert [a for a in first["aliases"] if a.startswith(f"{scenario.name}@")] == [
        f"{scenario.name}@champion"
    ]
    assert own(scenario, first["endpoints"]) == [v1]


def _without_source(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "source"}


def test_index_and_full_scan_agree_on_every_question(scenario: Scenario) -> None:
    """The index is a cache of MLflow: every answer it gives equals a full scan's. (Python
    API here, to ask many questions quickly; the CLI prints these same results.)"""
    settings = Settings.from_env({**os.environ, **scenario.env})
    patients = [*scenario.withdrawn, "PAT-00001", "PAT-00002", "PAT-99999"]
    for patient in patients:
        for question in (audit_record, impact):
            indexed = question(settings, patient, endpoints=running_endpoints).to_json()
            scanned = question(settings, patient, endpoints=running_endpoints, scan=True).to_json()
            assert indexed["source"] == "index" and scanned["source"] == "scan"
            assert _without_source(indexed) == _without_source(scanned), question
        for ref in (scenario.ref("v1.0"), scenario.ref("v2.0")):
            indexed = audit_excluded(
                settings, patient, "2026-01-01", model=ref, endpoints=running_endpoints
            ).to_json()
            scanned = audit_excluded(
                settings, patient, "2026-01-01", model=ref, endpoints=running_endpoints, scan=True
            ).to_json()
            assert _without_source(indexed) == _without_source(scanned)
    for ref in (scenario.ref("v1.0"), scenario.ref("v2.0")):
        indexed = cli(scenario, "audit", "model", ref)
        scanned = cli(scenario, "audit", "model", ref, "--scan")
        assert _without_source(indexed) == _without_source(scanned)
        assert indexed["snapshot_ok"] and indexed["without_consent"] == []
    v1 = cli(scenario, "audit", "model", scenario.ref("v1.0"))
    assert {w["patient_id"] for w in v1["withdrawn_since"]} == set(scenario.withdrawn)


def test_a_missing_manifest_or_stale_index_fails_closed(
    running_stack: RunningStack, scenario: Scenario
) -> None:
    client = MlflowClient(running_stack.settings.mlflow_uri)
    run = client.get_run(scenario.result["versions"]["v1.0"]["training"]["run_id"])
    root = run.info.artifact_uri.removeprefix("mlflow-artifacts:/")
    key = f"artifacts/{root}/{manifest.MANIFEST_NAME}"
    s3 = s3_client(running_stack.settings)
    bucket = running_stack.settings.mlflow_bucket
    saved = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.delete_object(Bucket=bucket, Key=key)
    try:
        for command in (("audit", "record", scenario.withdrawn[0], "--scan"), ("index", "rebuild")):
            out = run_cli(*command, env=scenario.env, timeout=600)
            assert out.returncode != 0, command
            assert scenario.ref("v1.0") in out.stderr and "manifest.csv" in out.stderr
    finally:
        s3.put_object(Bucket=bucket, Key=key, Body=saved)

    # a version registered behind the index's back makes indexed answers refuse
    stale_name = f"stale-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(stale_name)
    client.create_model_version(stale_name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    try:
        out = run_cli("audit", "record", scenario.withdrawn[0], env=scenario.env)
        assert out.returncode != 0 and "out of date" in out.stderr
        assert "lineage index rebuild" in out.stderr
        rebuilt = cli(scenario, "index", "rebuild")
        assert rebuilt["models"] >= 3
        answer = cli(scenario, "audit", "record", scenario.withdrawn[0])
        assert sorted(own(scenario, answer["models"], stale_name)) == sorted(
            [scenario.ref("v1.0"), f"{stale_name}/1"]
        )
    finally:
        client.delete_registered_model(stale_name)
        cli(scenario, "index", "rebuild")


def test_the_report_is_self_contained_and_names_the_withdrawals(
    scenario: Scenario, tmp_path: Path
) -> None:
    v1 = scenario.ref("v1.0")
    out = run_cli(
        "audit",
        "report",
        "--model",
        v1,
        "--out",
        str(tmp_path / "r.html"),
        env=scenario.env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    page = (tmp_path / "r.html").read_text()
    data = json.loads((tmp_path / "r.json").read_text())
    assert (
        page.startswith("<!doctype html>")
        and "<script" not in page
        and "http" not in page.split("<body>")[0]
    )
    assert {w["patient_id"] for w in data["consent"]["withdrawn_since_training"]} == set(
        scenario.withdrawn
    )
    assert data["verdict"]["lineage_verified"] and data["verdict"]["consent_verified"]
    assert data["verdict"]["action_required"]
    for patient in scenario.withdrawn:
        assert patient in page
    assert data["consent"]["snapshot_sha256"] in page
    # the chain's picture, drawn from its PROV document, every link labelled with its checks
    svg = page[page.index("<svg") : page.index("</svg>")]
    for label in ("registered version", "training run", "dataset version", "consent snapshot"):
        assert label in svg
    assert "ok: tag, dvc pointer" in svg and "ok: consent snapshot" in svg
    assert "FAILED" not in svg and "not checked" not in svg
    # the demo's own report is of production (v2): nothing to act on
    demo_report = json.loads(Path(scenario.result["report"]["json"]).read_text())
    assert demo_report["model"]["ref"] == scenario.ref("v2.0")
    assert not demo_report["verdict"]["action_required"]


def test_a_truncated_consent_log_is_caught_even_with_its_local_anchors_rolled_back(
    scenario: Scenario, tmp_path: Path
) -> None:
    """Someone with write access to the consent database deletes the newest events (a
    withdrawn patient would read as granted again). The transparency log catches it; if they
    could also rebuild its leaves and roll its witness file back, the consent head and the
    signed tree head v2.0's runs recorded in MLflow still do."""
    settings = Settings.from_env(scenario.env)
    db = Path(settings.consent_db.removeprefix("sqlite:///"))
    v2_head = int(scenario.result["versions"]["v2.0"]["processing"]["consent"]["consent_head_seq"])
    with sqlite3.connect(db) as connection:
        (log_id,) = connection.execute(
            "SELECT value FROM tlog_meta WHERE name = 'log_id'"
        ).fetchone()
    witness = settings.home / "tlog-heads" / f"{log_id}.jsonl"
    saved_witness = witness.read_text()
    with sqlite3.connect(db) as live, sqlite3.connect(tmp_path / "backup.db") as backup:
        live.backup(backup)
    try:
        with sqlite3.connect(db) as connection:
            connection.execute(
                "DELETE FROM consent_events WHERE seq = (SELECT MAX(seq) FROM consent_events)"
            )
        out = run_cli("consent", "verify", env=scenario.env)
        assert out.returncode != 0 and "events were deleted" in out.stderr
        out = run_cli("audit", "record", scenario.withdrawn[0], env=scenario.env)
        assert out.returncode != 0 and "events were deleted" in out.stderr

        # the rollback: events from v2.0's head on, and every leaf from the first of them on,
        # deleted; the signed heads deleted; the witness file cut back to before them
        with sqlite3.connect(db) as connection:
            connection.execute(f"DELETE FROM consent_events WHERE seq >= {v2_head}")
            first = min(
                idx
                for idx, entry in connection.execute(
                    "SELECT idx, entry FROM tlog_leaves WHERE kind = 'consent'"
                )
                if json.loads(entry)["seq"] >= v2_head
            )
            connection.execute(f"DELETE FROM tlog_leaves WHERE idx >= {first}")
            connection.execute("DELETE FROM tlog_heads")
        kept = [line for line in saved_witness.splitlines() if json.loads(line)["size"] < first]
        witness.write_text("".join(f"{line}\n" for line in kept))
        offline = run_cli("consent", "verify", "--offline", env=scenario.env)
        assert offline.returncode == 0, offline.stderr  # the local anchors were rolled back too
        online = run_cli("consent", "verify", env=scenario.env)
        assert online.returncode != 0
        assert f"event {v2_head} was anchored (MLflow run" in online.stderr
        logged = run_cli("log", "verify", env=scenario.env)
        assert logged.returncode != 0 and "was truncated" in logged.stderr
    finally:
        with sqlite3.connect(tmp_path / "backup.db") as backup, sqlite3.connect(db) as live:
            backup.backup(live)
        witness.write_text(saved_witness)
    assert cli(scenario, "consent", "verify")["external_anchors"] >= 4


def test_bad_input_changes_nothing(scenario: Scenario, tmp_path: Path) -> None:
    before = cli(scenario, "consent", "verify")["events"]
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "patient_id,scan_id,file_path,label,consent_status\n"
        "PAT-00001,PAT-00001-SCAN-0001,images/x.png,normal,granted\n"
        "PAT-00002,PAT-00002-SCAN-9999,images/y.png,normal,perhaps\n"
    )
    out = run_cli("consent", "import", str(bad), env=scenario.env)
    assert out.returncode != 0 and "line 3" in out.stderr and "nothing was imported" in out.stderr
    out = run_cli("consent", "withdraw", "PAT-99999", "--reason", "x", env=scenario.env)
    assert out.returncode != 0 and "PAT-99999 is not in the consent registry" in out.stderr
    assert cli(scenario, "consent", "verify")["events"] == before
    broken = {**scenario.env, "LINEAGE_CONSENT_DB": "sqlite:////no/such/dir/consent.db"}
    out = run_cli("consent", "status", "PAT-00001", env=broken)
    assert out.returncode != 0 and "LINEAGE_CONSENT_DB" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_record_process_without_a_registry_or_patients_is_refused(
    running_stack: RunningStack, scenario: Scenario, tmp_path: Path
) -> None:
    env = {**running_stack.env, "LINEAGE_CONSENT_DB": f"sqlite:///{tmp_path / 'empty.db'}"}

    def process(source: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return run_cli(
            "process",
            "--pattern",
            "record",
            "--source",
            source,
            "--version",
            "v1.0",
            "--fraction",
            "0.1",
            "--repo",
            f"norec-{uuid.uuid4().hex[:6]}",
            env=environment,
            timeout=300,
        )

    out = process("synthetic-cxr", env)
    assert out.returncode != 0 and "consent registry is empty" in out.stderr
    out = process("digits", scenario.env)
    assert out.returncode != 0 and "needs a source with patients" in out.stderr


def test_a_concurrent_cli_withdrawal_storm_loses_nothing(scenario: Scenario) -> None:
    before = cli(scenario, "consent", "verify")["events"]
    patients = ["PAT-00010", "PAT-00011", "PAT-00012", "PAT-00013"]
    # All eight run at once; each `with Popen` closes its pipes and reaps it, and a grant
    # still running when the test gives up is killed first (callbacks run before the exits).
    with contextlib.ExitStack() as running:
        procs = [
            running.enter_context(
                subprocess.Popen(
                    [sys.executable, "-m", "lineage", "consent", "grant", p, "--reason", "storm"],
                    env={**os.environ, **scenario.env},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
            for p in patients * 2
        ]
        for proc in procs:
            running.callback(proc.kill)  # a no-op once it has exited
        errors = [proc.communicate(timeout=120)[1] for proc in procs]
    failed = [
        err.decode()[-1000:] for proc, err in zip(procs, errors, strict=True) if proc.returncode
    ]
    assert not failed, failed
    assert cli(scenario, "consent", "verify")["events"] == before + len(procs)
