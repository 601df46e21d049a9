"""`lineage export`: a verified chain in a standard format (OpenLineage events, W3C PROV).

The chain is traced first with every check `trace` makes; one failed check fails the export
(a catalogue must never be fed a chain we could not prove). The PROV document and the
OpenLineage events are built from the same facts: the trace's data link, the run's lineage
record (its immutable params) and the processing run that published the tag.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from openlineage.client.event_v2 import RunState
from openlineage.client.serde import Serde

from lineage import tracking
from lineage.config import Settings
from lineage.errors import LineageError
from lineage.gitops import repository_name
from lineage.openlineage import events as ol
from lineage.openlineage import prov
from lineage.query.chain import locate
from lineage.query.trace import Trace, trace
from lineage.record import LineageRecord
from lineage.registry import mlflow_client

FORMATS = ("openlineage", "prov-json", "prov-n")


@dataclass(frozen=True)
class Export:
    format: str
    content: str
    model: str
    checks: int


def export(settings: Settings, model: str, fmt: str, endpoint: str | None = None) -> Export:
    if fmt not in FORMATS:
        raise LineageError(f"unknown format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    traced = trace(settings, endpoint=endpoint) if endpoint else trace(settings, model=model)
    if not traced.ok:
        failed = "; ".join(f"{c.name}: {c.detail}" for c in traced.failed)
        raise LineageError(
            f"the chain of {model or endpoint} fails {len(traced.failed)} check(s), so nothing "
            f"was exported: {failed}",
            "see `lineage trace` for the whole chain; fix or retire that version",
        )
    chain = chain_facts(settings, traced)
    ref = f"{chain.model_name}/{chain.model_version}"
    if fmt == "openlineage":
        events = [json.loads(Serde.to_json(e)) for e in openlineage_events(settings, chain)]
        content = json.dumps(events, indent=2)
    else:
        content = prov.serialize(prov.build(chain), fmt)
    return Export(fmt, content, ref, len(traced.checks))


def chain_facts(settings: Settings, traced: Trace) -> prov.ChainFacts:
    if traced.model is None:
        raise LineageError("export takes a registered version", "use --model NAME/VERSION")
    client = mlflow_client(settings.mlflow_uri)
    _, run = locate(client, model=f"{traced.model.name}/{traced.model.version}")
    record = LineageRecord.from_run(run)
    processing = _processing_run(client, run.experiment_id, traced.data.tag)
    return prov.ChainFacts(
        model_name=traced.model.name,
        model_version=traced.model.version,
        aliases=list(traced.model.aliases),
        run_id=run.run_id,
        run_started_ms=run.start_ms,
        run_ended_ms=run.end_ms,
        record={
            **record.to_json(),
            "metrics": dict(traced.run.metrics),
            "training_job_name": run.tags.get("training_job_name") or record.training_job_name,
        },
        data=dict(traced.data.__dict__),
        checks=[c.to_json() for c in traced.checks],
        processing_run_id=None if processing is None else processing.info.run_id,
        processing_started_ms=None if processing is None else processing.info.start_time,
        processing_ended_ms=None if processing is None else processing.info.end_time,
        source="" if processing is None else str(processing.data.params.get("source", "")),
        endpoint=traced.endpoint,
        erasures=_erasures(run.params),
    )


def _processing_run(client: Any, experiment_id: str, tag: str) -> Any:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{tracking.STAGE_TAG}` = 'processing' and tags.dvc_tag = '{tag}'",
        max_results=1,
    )
    return runs[0] if runs else None


def _erasures(params: dict[str, str]) -> list[dict[str, Any]]:
    requests = [r for r in params.get("erasure_requests", "").split(",") if r]
    count = int(params.get("erased_records") or 0)
    return [{"request": r, "records": count if len(requests) == 1 else 0} for r in requests]


def openlineage_events(settings: Settings, chain: prov.ChainFacts) -> list[Any]:
    """COMPLETE events of the chain's jobs, as the jobs themselves emit them: processing
    (source -> dataset version), training (dataset version -> model version) and, from an
    endpoint, the deploy (model version -> endpoint), linked by parent run facets."""
    rec, data = chain.record, chain.data
    repo = repository_name(data["repo_url"])
    data_facts = {k: rec.get(k) for k in ("dvc_tag", "data_git_commit_id", "dataset_md5")}
    data_facts |= {"manifest_sha256": data["manifest_sha256"], "records": data["records"]}
    if rec.get("pattern") == "record":
        data_facts["consent_snapshot_sha256"] = rec.get("consent_snapshot_sha256")
    dataset_out = ol.dataset_version(data["repo_url"], data["dataset_md5"], data_facts, output=True)
    dataset_in = ol.dataset_version(data["repo_url"], data["dataset_md5"], data_facts, output=False)
    model_facts = {k: rec.get(k) for k in ("weights_sha256", "model_sha256", "onnx_sha256")}
    model_facts |= {"run_id": chain.run_id, "metrics": rec.get("metrics") or {}}
    job_name = str(rec.get("training_job_name") or chain.run_id)

    def model(*, output: bool) -> Any:
        return ol.model_version(
            settings.mlflow_uri, chain.model_name, chain.model_version, model_facts, output=output
        )

    events = [
        ol.run_event(
            RunState.COMPLETE,
            run_id=ol.processing_run_id(data["tag"]),
            job=ol.job(f"process/{repo}", "DATASET_VERSION"),
            inputs=[ol.source_dataset(chain.source)] if chain.source else [],
            outputs=[dataset_out],  # type: ignore[list-item]
            facts={"dvc_tag": data["tag"], "mlflow_run_id": chain.processing_run_id},
            event_time=_iso(chain.processing_ended_ms),
        ),
        ol.run_event(
            RunState.COMPLETE,
            run_id=ol.training_run_id(job_name),
            job=ol.job(f"train/{repo}", "MODEL_TRAINING", data["repo_url"], data["commit"]),
            inputs=[dataset_in],  # type: ignore[list-item]
            outputs=[model(output=True)],
            parent_facet=ol.parent(ol.processing_run_id(data["tag"]), f"process/{repo}"),
            facts={"mlflow_run_id": chain.run_id, "training_job_name": job_name},
            event_time=_iso(chain.run_ended_ms),
        ),
    ]
    if chain.endpoint:
        events.append(
            ol.run_event(
                RunState.COMPLETE,
                run_id=ol.deploy_run_id(chain.model_name, chain.model_version, chain.endpoint, ""),
                job=ol.job(f"deploy/{chain.model_name}", "MODEL_DEPLOYMENT"),
                inputs=[model(output=False)],
                outputs=[ol.endpoint_dataset(chain.endpoint)],
                parent_facet=ol.parent(ol.training_run_id(job_name), f"train/{repo}"),
            )
        )
    return events


def _iso(ms: int | None) -> str | None:
    from datetime import UTC, datetime

    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()
