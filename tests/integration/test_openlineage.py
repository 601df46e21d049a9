"""Lineage in the open, end to end on the real stack: the jobs send OpenLineage events to a
catalogue (a loopback receiver speaking the OpenLineage HTTP API), still succeed when it is
down and keep their events for replay; `lineage export` writes the verified chain of a
two-version pipeline as PROV that parses back, and as OpenLineage events."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from prov.model import ProvDocument

from tests.conftest import RunningStack, free_port_block, run_cli
from tests.helpers import LineageReceiver, assert_valid_run_event
from tests.integration.conftest import run_pipeline


def _by_job(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    jobs: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        jobs.setdefault(event["job"]["name"], []).append(event)
    return jobs


def _prov(path: Path) -> dict[str, set[str]]:
    doc = ProvDocument.deserialize(content=path.read_text(), format="json")
    found: dict[str, set[str]] = {}
    for record in doc.get_records():
        key = type(record).__name__
        ident = str(record.identifier) if record.identifier is not None else ""
        if not ident:
            ident = "->".join(str(v) for _, v in list(record.formal_attributes)[:2] if v)
        found.setdefault(key, set()).add(ident)
    return found


def test_jobs_send_linked_events_survive_a_dead_catalogue_and_export_prov(
    running_stack: RunningStack, tmp_path: Path
) -> None:
    repo = f"ol-{uuid.uuid4().hex[:6]}"
    name = f"digits-{repo}"
    receiver = LineageReceiver().start()
    env = {**running_stack.env, "OPENLINEAGE_URL": receiver.url}
    try:
        first = run_pipeline(running_stack, repo, name, epochs=1, fraction=0.1, env=env)
    finally:
        receiver.close()
    for event in receiver.events:
        assert_valid_run_event(event)
    jobs = _by_job(receiver.events)
    assert sorted(jobs) == [f"process/{repo}", f"train/{repo}"]
    assert [e["eventType"] for e in jobs[f"process/{repo}"]] == ["START", "COMPLETE"]
    assert [e["eventType"] for e in jobs[f"train/{repo}"]] == ["START", "COMPLETE"]
    processed, trained = jobs[f"process/{repo}"][-1], jobs[f"train/{repo}"][-1]
    # the catalogue can join them: the training run's parent is the processing run, and the
    # dataset version one produced is the one the other consumed
    assert trained["run"]["facets"]["parent"]["run"]["runId"] == processed["run"]["runId"]
    produced, consumed = processed["outputs"][0], trained["inputs"][0]
    assert (produced["namespace"], produced["name"]) == (consumed["namespace"], consumed["name"])
    assert produced["facets"]["version"] == consumed["facets"]["version"]
    assert produced["facets"]["version"]["datasetVersion"] == first["processing"]["dataset_md5"]
    model = trained["outputs"][0]
    assert model["name"] == f"models/{name}" and model["facets"]["version"]["datasetVersion"] == "1"
    assert model["facets"]["modelLineage"]["facts"]["run_id"] == first["training"]["run_id"]

    # the catalogue is down: the second version is published and trained all the same, its
    # events kept, and replay delivers them once the catalogue is back
    down = LineageReceiver()
    env = {**running_stack.env, "OPENLINEAGE_URL": down.url, "LINEAGE_OPENLINEAGE_TIMEOUT": "3"}
    out = run_cli(
        "pipeline", "--version", "v2.0", "--fraction", "0.2", "--epochs", "1", "--repo", repo,
        "--model-name", name, "--json", env=env, timeout=1200,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    second = json.loads(out.stdout)
    jobs_dir = running_stack.settings.home / "jobs"
    for job in (second["processing"]["job_name"], second["training"]["job_name"]):
        log = (jobs_dir / job / "job.log").read_text()
        assert log.count("lineage export --replay") == 1, job  # one warning: what to do
    kept = [second["processing"]["openlineage_events"], second["training"]["openlineage_events"]]
    back = LineageReceiver(down.port).start()
    try:
        for directory in kept:
            replayed = run_cli("export", "--replay", directory, "--to", back.url, "--json", env=env)
            assert replayed.returncode == 0, replayed.stderr[-2000:]
            assert json.loads(replayed.stdout)["ok"]
    finally:
        back.close()
    assert sorted((e["job"]["name"], e["eventType"]) for e in back.events) == [
        (f"process/{repo}", "COMPLETE"),
        (f"process/{repo}", "START"),
        (f"train/{repo}", "COMPLETE"),
        (f"train/{repo}", "START"),
    ]

    # the PROV export of both versions: the same repository, two dataset versions, two runs
    docs = {}
    for version in ("1", "2"):
        path = tmp_path / f"v{version}.json"
        done = run_cli(
            "export", "--model", f"{name}/{version}", "--format", "prov-json", "--out", str(path),
            env=running_stack.env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        docs[version] = _prov(path)
    tags = {"1": first["processing"]["tag"], "2": second["processing"]["tag"]}
    for version, doc in docs.items():
        assert f"lineage:model/{name}/{version}" in doc["ProvEntity"]
        assert f"lineage:dataset/{tags[version]}" in doc["ProvEntity"]
        assert f"lineage:records/{tags[version]}" in doc["ProvEntity"]
        assert "lineage:source/digits" in doc["ProvEntity"]
        assert {"ProvUsage", "ProvGeneration", "ProvDerivation", "ProvAssociation"} <= doc.keys()
    runs = {
        v: {i for i in d["ProvActivity"] if i.startswith("lineage:run/")} for v, d in docs.items()
    }
    assert runs["1"] == {f"lineage:run/{first['training']['run_id']}"}
    assert runs["1"] != runs["2"]

    # deploy is a job too, consuming the model; exported from the endpoint, the chain has
    # all three jobs, each a child of the one before
    receiver = LineageReceiver().start()
    port = free_port_block(1)
    env = {**running_stack.env, "OPENLINEAGE_URL": receiver.url}
    try:
        deployed = run_cli("deploy", "--model", f"{name}/1", "--port", str(port), env=env)
        assert deployed.returncode == 0, deployed.stderr[-2000:]
        exported = run_cli(
            "export", "--endpoint", f"http://127.0.0.1:{port}", "--format", "openlineage",
            env=running_stack.env,
        )  # fmt: skip
    finally:
        run_cli("deploy", "--stop", "--port", str(port), env=running_stack.env)
        receiver.close()
    deploy_events = _by_job(receiver.events)[f"deploy/{name}"]
    assert [e["eventType"] for e in deploy_events] == ["START", "COMPLETE"]
    assert deploy_events[-1]["run"]["facets"]["parent"]["run"]["runId"] == trained["run"]["runId"]
    assert deploy_events[-1]["outputs"][0]["name"] == f"http://127.0.0.1:{port}"
    assert exported.returncode == 0, exported.stderr[-2000:]
    chain = json.loads(exported.stdout)
    for event in chain:
        assert_valid_run_event(event)
    assert [e["job"]["name"] for e in chain] == [
        f"process/{repo}",
        f"train/{repo}",
        f"deploy/{name}",
    ]
    assert chain[1]["run"]["runId"] == trained["run"]["runId"]  # the same ids as the jobs sent
