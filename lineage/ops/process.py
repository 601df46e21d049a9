"""`lineage process`: build the Processing job description and run it on the chosen runtime."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lineage import contract
from lineage.attest.envelopes import Envelope
from lineage.attest.host import Evidence, Recorded
from lineage.config import Settings
from lineage.errors import ConfigError, LineageError
from lineage.jobresult import ProcessingResult
from lineage.jobspec import (
    ProcessingInput,
    ProcessingJobSpec,
    ProcessingOutput,
    dataset_tag,
    job_name,
)
from lineage.openlineage.emit import forwarded_env
from lineage.ops.runtime import local_runner
from lineage.runtime import JobRunner
from lineage.tracking import DEFAULT_EXPERIMENT

log = logging.getLogger("lineage.process")

DEFAULT_REPO = "datasets"
PATTERNS = ("dataset", "record")


@dataclass(frozen=True)
class ProcessOptions:
    version: str
    fraction: float
    source: str = "digits"
    val_split: float = 0.1
    test_split: float = 0.1
    seed: int = 42
    repo: str = DEFAULT_REPO
    experiment: str = DEFAULT_EXPERIMENT
    pipeline_run_id: str | None = None
    runtime: str = "process"
    pattern: str = "dataset"  # dataset | record


@dataclass(frozen=True)
class ProcessResult:
    """What `lineage process` did: the job's own result (the dataset version it published),
    the job's name and, when it kept any, where its OpenLineage events are (for replay)."""

    output: ProcessingResult
    job_name: str
    openlineage_events: str | None = None
    attestation: Recorded | None = None  # the signed dataset statement, in the log

    def to_json(self) -> dict[str, Any]:
        """What `process --json` prints: the job's result file (the statement by its digest
        and log index), then what the run adds."""
        found = {
            **{k: v for k, v in self.output.to_json().items() if k != "attestation"},
            "attestation_sha256": None if self.attestation is None else self.attestation.digest,
            "tlog_index": None if self.attestation is None else self.attestation.index,
            "job_name": self.job_name,
        }
        if self.openlineage_events is not None:
            found["openlineage_events"] = self.openlineage_events
        return found


def build_spec(
    settings: Settings,
    options: ProcessOptions,
    repo_url: str,
    consent_source: str | None = None,
    evidence_source: str | None = None,
    erasures_source: str | None = None,
) -> ProcessingJobSpec:
    """The job description; `consent_source` (record pattern) is where the consent snapshot
    taken at job start lies (a local directory here, an s3:// prefix on SageMaker), and
    `evidence_source` the evidence the job signs with (the transparency log's head, the keys
    it trusts)."""
    environment = {
        "DVC_REPO_URL": repo_url,
        "DVC_REPO_NAME": options.repo,
        "DVC_REMOTE_URL": settings.dvc_remote_url,
        "MLFLOW_TRACKING_URI": settings.mlflow_uri,
        "MLFLOW_EXPERIMENT_NAME": options.experiment,
        **kms_env(settings),
    }
    if options.pipeline_run_id:
        environment["PIPELINE_RUN_ID"] = options.pipeline_run_id
    name = job_name(f"process-{options.version}")
    return ProcessingJobSpec(
        name=name,
        image_uri=settings.image_uri("processing"),
        arguments=[
            "--data-version",
            options.version,
            "--data-fraction",
            str(options.fraction),
            "--val-split",
            str(options.val_split),
            "--test-split",
            str(options.test_split),
            "--seed",
            str(options.seed),
            "--source",
            options.source,
            *(["--pattern", options.pattern] if options.pattern != "dataset" else []),
        ],
        environment=environment,
        inputs=[
            ProcessingInput(name, source, f"{contract.PROCESSING_INPUT_DIR}/{name}")
            for name, source in (
                (contract.CONSENT_INPUT_NAME, consent_source),
                (contract.EVIDENCE_INPUT_NAME, evidence_source),
                (contract.ERASURES_INPUT_NAME, erasures_source),
            )
            if source
        ],
        outputs=[
            ProcessingOutput(
                contract.PROCESSING_RESULT_OUTPUT,
                f"{contract.PROCESSING_OUTPUT_DIR}/{contract.PROCESSING_RESULT_DIR}",
                f"s3://{settings.dvc_bucket}/jobs/{name}/output/{contract.PROCESSING_RESULT_OUTPUT}",
            )
        ],
        region=settings.aws_region,
    )


def process(
    settings: Settings,
    options: ProcessOptions,
    *,
    stream: bool = True,
    runner: JobRunner | None = None,
) -> ProcessResult:
    """Run the processing job (on the local runtime `options.runtime` unless a `runner` is
    given); return its result (tag, commit, md5, counts, ...)."""
    runner = runner or local_runner(settings, options.runtime)
    runner.prepare(("processing",))
    return run_processing_job(settings, options, runner, stream=stream)


def run_processing_job(
    settings: Settings, options: ProcessOptions, runner: JobRunner, *, stream: bool
) -> ProcessResult:
    """The processing job on a prepared runner. The dataset tag is chosen here and given to
    the job (PIPELINE_RUN_ID); the job's result must confirm it, whatever ran it."""
    if options.pattern not in PATTERNS:
        raise ConfigError(f"unknown pattern {options.pattern!r}", "use dataset or record")
    run_id = dataset_tag(options.version, options.pipeline_run_id)
    options = replace(options, pipeline_run_id=run_id)
    repo_url, url_auth = runner.dataset_repository(options.repo, create=True)
    evidence = Evidence(settings)
    with tempfile.TemporaryDirectory(prefix="lineage-consent-") as tmp:
        consent_source = None
        if options.pattern == "record":
            consent_dir = take_consent_snapshot(settings, Path(tmp) / "consent")
            consent_source = runner.stage_input(contract.CONSENT_INPUT_NAME, consent_dir, run_id)
        evidence_dir = Path(tmp) / "evidence"
        evidence.job_input(evidence_dir)
        evidence_source = runner.stage_input(contract.EVIDENCE_INPUT_NAME, evidence_dir, run_id)
        erasures_dir = erasures_input(settings, Path(tmp) / "erasures")
        erasures_source = (
            None
            if erasures_dir is None
            else runner.stage_input(contract.ERASURES_INPUT_NAME, erasures_dir, run_id)
        )
        spec = build_spec(
            settings, options, repo_url, consent_source, evidence_source, erasures_source
        )
        run = runner.run_processing(
            spec,
            runtime_env={**url_auth, **forwarded_env(), **signing_env(settings, runner)},
            stream=stream,
        )
    if run.output.tag != run_id:
        raise LineageError(
            f"processing job {run.job_name} published tag {run.output.tag!r}, expected {run_id}",
            "the job did not use PIPELINE_RUN_ID: check the processing image version",
        )
    recorded = record_statement(evidence, run.output.attestation, run_id, "dataset statement")
    return ProcessResult(
        output=run.output,
        job_name=run.job_name,
        openlineage_events=run.openlineage_events,
        attestation=recorded,
    )


def erasures_input(settings: Settings, directory: Path) -> Path | None:
    """What every erasure removed (object md5s and scan ids, each with its request), for
    the job to refuse publishing it again; None when nothing was ever erased."""
    import json

    from lineage.erasure.log import ErasureLog

    erased = ErasureLog.from_settings(settings).erased()
    if not erased:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    (directory / contract.ERASURES_FILE).write_text(
        json.dumps(
            {
                "objects": {md5: event.request for md5, (event, _) in erased.items()},
                "scans": {t.scan_id: event.request for event, t in erased.values() if t.scan_id},
            },
            indent=1,
            sort_keys=True,
        )
    )
    return directory


def kms_env(settings: Settings) -> dict[str, str]:
    """A KMS signing key is named in the job's description (an id, no secret)."""
    if settings.signing_kms_key_id:
        return {contract.SIGNING_KMS_ENV: settings.signing_kms_key_id}
    return {}


def signing_env(settings: Settings, runner: JobRunner) -> dict[str, str]:
    """What a local job signs with (the key's path, never the key); on SageMaker the jobs
    sign through KMS, named in their description."""
    if runner.name == "sagemaker":
        return {}
    return Evidence(settings).job_env()


def record_statement(
    evidence: Evidence, statement: dict[str, Any] | None, name: str, what: str
) -> Recorded | None:
    """A job's signed statement, checked and put in the transparency log (None, with a
    warning, when the job signed nothing)."""
    if statement is None:
        log.warning(
            "the job signed no %s (no signing key was given to it): `trace`, `deploy` and "
            "`promote` will refuse what it made",
            what,
        )
        return None
    return evidence.record(Envelope.from_json(statement, what), name, what)


def take_consent_snapshot(settings: Settings, directory: Path) -> Path:
    """The consent registry's state now, as the file the job reads; fails when empty."""
    from lineage.consent.store import ConsentStore

    snapshot = ConsentStore.from_settings(settings).snapshot()
    if not snapshot.consenting and not snapshot.withdrawn:
        raise ConfigError(
            "the consent registry is empty",
            "import the registry first: `lineage consent import registry.csv`",
        )
    snapshot.write(directory)
    return directory
