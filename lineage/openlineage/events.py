"""OpenLineage RunEvents for the three jobs, with names a catalogue can join on.

Naming (what a catalogue such as Marquez or DataZone shows):

* job namespace ``OPENLINEAGE_NAMESPACE`` (default ``model-lineage``); job names
  ``process/<repository>``, ``train/<model name>``, ``deploy/<model name>``;
* the source: namespace = its scheme (``digits``, ``s3://bucket``, ``file``), name = the rest;
* a dataset version: namespace = the git repository URL (credentials redacted), name =
  ``dataset`` (the DVC-tracked directory), version facet = the DVC md5, plus the
  ``modelLineage`` dataset facet (tag, commit, manifest sha256, record counts, consent);
* a model version: namespace = the MLflow tracking URI (redacted), name = ``models/<name>``,
  version facet = the registry version, plus the ``modelLineage`` dataset facet (run id,
  weights and model digests, metrics);
* an endpoint: namespace = ``endpoint``, name = its URL.

Run ids are UUIDs derived (uuid5) from what names each run for good: the processing run's
from the dataset tag, the training run's from the training job name (recorded in the model's
lineage), so a training run names its parent and a deploy names its training run without
asking anyone; the MLflow run id is in the `modelLineage` run facet.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import attr
from openlineage.client.event_v2 import (
    InputDataset,
    Job,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
    set_producer,
)
from openlineage.client.facet_v2 import (
    DatasetFacet,
    RunFacet,
    dataset_version_dataset,
    error_message_run,
    job_type_job,
    parent_run,
    source_code_location_job,
)

from lineage.redact import redact_url
from lineage.version import __version__

PRODUCER = f"https://github.com/model-lineage/model-lineage/tree/{__version__}"
FACET_SCHEMA = "https://model-lineage.dev/spec/facets/1-0-0/ModelLineageFacet.json"
DEFAULT_NAMESPACE = "model-lineage"
_RUN_NAMESPACE = uuid.UUID("6f1c0a52-8e0b-4b59-9a43-2f4d3f3c1e11")
set_producer(PRODUCER)  # every facet we build names us as its producer


@attr.define
class ModelLineageDatasetFacet(DatasetFacet):
    """Our facts about a dataset or model version (documented in the README, schema at
    `FACET_SCHEMA`): the keys of the lineage record, as strings."""

    facts: dict[str, Any] = attr.field(factory=dict)
    _additional_skip_redact: ClassVar[list[str]] = ["facts"]

    @staticmethod
    def _get_schema() -> str:
        return FACET_SCHEMA + "#/$defs/ModelLineageDatasetFacet"


@attr.define
class ModelLineageRunFacet(RunFacet):
    """Our facts about a run (job name, image, hosts, consent snapshot)."""

    facts: dict[str, Any] = attr.field(factory=dict)
    _additional_skip_redact: ClassVar[list[str]] = ["facts"]

    @staticmethod
    def _get_schema() -> str:
        return FACET_SCHEMA + "#/$defs/ModelLineageRunFacet"


def job_namespace() -> str:
    return os.environ.get("OPENLINEAGE_NAMESPACE") or DEFAULT_NAMESPACE


def processing_run_id(tag: str) -> str:
    """The processing run of dataset tag `tag` (a tag is published exactly once)."""
    return str(uuid.uuid5(_RUN_NAMESPACE, f"process:{tag}"))


def training_run_id(job_name: str) -> str:
    """The training job `job_name` (unique per job, on SageMaker and locally)."""
    return str(uuid.uuid5(_RUN_NAMESPACE, f"train:{job_name}"))


def deploy_run_id(name: str, version: str, endpoint: str, stamp: str) -> str:
    return str(uuid.uuid5(_RUN_NAMESPACE, f"deploy:{name}/{version}@{endpoint}:{stamp}"))


def now() -> str:
    return datetime.now(UTC).isoformat()


def source_dataset(source: str) -> InputDataset:
    scheme, _, rest = source.partition(":")
    if source.startswith("s3://"):
        bucket, _, key = source[5:].partition("/")
        return InputDataset(namespace=f"s3://{bucket}", name=key or "/")
    return InputDataset(namespace=scheme or "source", name=rest or scheme)


def dataset_version(
    repo_url: str, md5: str, facts: Mapping[str, Any], *, output: bool
) -> InputDataset | OutputDataset:
    facets: dict[str, DatasetFacet] = {"modelLineage": ModelLineageDatasetFacet(_plain(facts))}
    if md5:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=md5)
    kind = OutputDataset if output else InputDataset
    return kind(namespace=redact_url(repo_url), name="dataset", facets=facets)


def model_version(
    tracking_uri: str, name: str, version: str | None, facts: Mapping[str, Any], *, output: bool
) -> InputDataset | OutputDataset:
    facets: dict[str, DatasetFacet] = {"modelLineage": ModelLineageDatasetFacet(_plain(facts))}
    if version:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=str(version)
        )
    kind = OutputDataset if output else InputDataset
    return kind(namespace=redact_url(tracking_uri), name=f"models/{name}", facets=facets)


def endpoint_dataset(url: str) -> OutputDataset:
    return OutputDataset(namespace="endpoint", name=url)


def job(name: str, kind: str, repo_url: str | None = None, commit: str | None = None) -> Job:
    """A job with its type facet (and where its input came from, as a git location)."""
    facets: dict[str, Any] = {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="MODEL_LINEAGE", jobType=kind
        )
    }
    if repo_url:
        facets["sourceCodeLocation"] = source_code_location_job.SourceCodeLocationJobFacet(
            type="git", url=redact_url(repo_url), repoUrl=redact_url(repo_url), version=commit
        )
    return Job(namespace=job_namespace(), name=name, facets=facets)


def parent(run_id: str, job_name: str) -> parent_run.ParentRunFacet:
    return parent_run.ParentRunFacet(
        run=parent_run.Run(runId=run_id),
        job=parent_run.Job(namespace=job_namespace(), name=job_name),
    )


def run_event(
    state: RunState,
    *,
    run_id: str,
    job: Job,
    inputs: list[InputDataset] | None = None,
    outputs: list[OutputDataset] | None = None,
    facts: Mapping[str, Any] | None = None,
    parent_facet: parent_run.ParentRunFacet | None = None,
    error: str | None = None,
    event_time: str | None = None,
) -> RunEvent:
    facets: dict[str, RunFacet] = {}
    if facts:
        facets["modelLineage"] = ModelLineageRunFacet(facts=_plain(facts))
    if parent_facet is not None:
        facets["parent"] = parent_facet
    if error:
        facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=redact_url(error)[:4000], programmingLanguage="python"
        )
    return RunEvent(
        eventType=state,
        eventTime=event_time or now(),
        run=Run(runId=run_id, facets=facets),
        job=job,
        producer=PRODUCER,
        inputs=inputs or [],
        outputs=outputs or [],
    )


def _plain(facts: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-able facts, empty values left out."""
    return {
        str(k): v
        for k, v in facts.items()
        if v not in (None, "", [], {}) and isinstance(v, str | int | float | bool | list | dict)
    }
