"""The Processing job: source -> nested stratified sample -> ImageFolder + manifest -> DVC.

Runs as SageMaker runs a Processing container: container arguments ``--data-fraction``,
``--data-version``, ``--val-split`` (+ ``--test-split``, ``--seed``, ``--source``), and the
environment ``DVC_REPO_URL``, ``DVC_REPO_NAME``, ``MLFLOW_TRACKING_URI``,
``MLFLOW_EXPERIMENT_NAME``, ``PIPELINE_RUN_ID`` (the reference sample's names). On failure it
writes one paragraph to ``/opt/ml/output/message`` (DescribeProcessingJob's ExitMessage) and
exits non-zero. Its result (tag, commit, md5, counts) goes to
``/opt/ml/processing/output/lineage/result.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from lineage import contract, manifest, tracking
from lineage.attest.envelopes import Envelope
from lineage.attest.jobinput import JobEvidence, JobKeys
from lineage.attest.statements import DATASET_STATEMENT_FILE
from lineage.consent.snapshot import Snapshot
from lineage.errors import LineageError
from lineage.gitops import repository_name
from lineage.hashing import file_md5
from lineage.jobentry import run_job
from lineage.jobresult import ProcessingResult, write_result
from lineage.jobspec import dataset_tag
from lineage.manifest import DATASET_METADATA, DVC_FILE
from lineage.openlineage import events as ol
from lineage.openlineage.emit import KEEP_DIR, EventSink, JobRun
from lineage.redact import redact_url
from lineage.version import __version__
from processing.attestation import listing_bytes, sign_dataset
from processing.dataset import WrittenDataset, write_dataset
from processing.progress import Progress
from processing.publish import DatasetRepo, PublishResult
from processing.sampling import Assignment, SamplingError, assign, assign_by_patient
from processing.sampling import validate as validate_fractions
from processing.sources import PATIENT_KINDS, SourceError, SourceSpec, load_source, parse_source

log = logging.getLogger("lineage.processing")

RESULT_DIR = contract.PROCESSING_RESULT_DIR
CONSENT_INPUT = contract.CONSENT_INPUT_NAME  # /opt/ml/processing/input/consent
CONSENT_PARAMS = (
    "consent_snapshot_sha256",
    "consent_as_of",
    "consent_head_seq",  # anchors the consent log outside its database (consent verify)
    "consent_head_hash",
    "consent_log_id",
    "excluded_patients",
)


class JobError(LineageError):
    pass


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise JobError(f"bad container arguments: {message}", self.format_usage().strip())


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = _ArgumentParser(prog="processing", description=__doc__.splitlines()[0])
    parser.add_argument("--data-version", required=True, help="e.g. v1.0")
    parser.add_argument("--data-fraction", type=float, required=True, help="(0, 1]")
    parser.add_argument("--val-split", type=float, default=0.1)
    parser.add_argument(
        "--test-split",
        type=float,
        default=0.1,
        help="held out once per source, identical in every version",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--source",
        default="digits",
        help="digits | cifar10[:PATH] | imagefolder:PATH (PATH local or s3://)",
    )
    parser.add_argument(
        "--pattern",
        choices=("dataset", "record"),
        default="dataset",
        help="record: patient-level manifest, consent-filtered, split by patient",
    )
    parser.add_argument(
        "--remote-url",
        default=os.environ.get("DVC_REMOTE_URL"),
        help="DVC remote for a new repository (default s3://lineage-dvc/dvc)",
    )
    return parser.parse_args(list(argv))


@dataclass(frozen=True)
class _Version:
    """A dataset version as published by this job: what every later step reports on."""

    args: argparse.Namespace
    source: SourceSpec
    tag: str
    repo_url: str
    repo: DatasetRepo
    dataset: WrittenDataset
    consent: dict[str, object]
    published: PublishResult
    out_dir: Path
    statement: Envelope | None
    metadata: dict[str, object]  # the tag's message


def run(args: argparse.Namespace, paths: contract.ProcessingPaths) -> ProcessingResult:
    started = time.monotonic()
    _log_start(paths)
    repo_url, tracking_uri, experiment = _environment()
    source = parse_source(args.source)
    _check_pattern(args, source)
    validate_fractions(args.data_fraction, args.val_split, args.test_split)
    tag = dataset_tag(args.data_version, os.environ.get("PIPELINE_RUN_ID"))
    events = EventSink.from_env(paths.output_dir / RESULT_DIR / KEEP_DIR)
    job_run = JobRun(
        events,
        run_id=ol.processing_run_id(tag),
        job=ol.job(f"process/{repository_name(repo_url)}", "DATASET_VERSION"),
        inputs=[ol.source_dataset(str(source))],
        facts={"dvc_tag": tag, "data_version": args.data_version, "pattern": args.pattern},
    )
    with job_run:
        if tracking_uri:
            tracking.check_reachable(tracking_uri)
        else:
            log.warning("MLFLOW_TRACKING_URI is not set: the processing run is not logged")
        version = _publish(args, paths, source, tag, repo_url)
        # the tag last: a run that failed (its MLflow run ended FAILED) leaves no version
        # that a later `lineage train` could take for finished work
        if tracking_uri:
            with _logged_run(version, paths, tracking_uri, experiment) as run_id:
                version.repo.push_tag(version.published, version.metadata)
        else:
            run_id = None
            version.repo.push_tag(version.published, version.metadata)
        result = _result(version, run_id, started)
        job_run.outputs = [
            ol.dataset_version(
                repo_url, version.published.dataset_md5, _dataset_facts(result), output=True
            )
        ]
        write_result(version.out_dir / contract.PROCESSING_RESULT_FILE, result)
        _step(f"published {tag} -> {version.published.commit[:12]} ({result.seconds:.1f}s)")
        return result


def _publish(
    args: argparse.Namespace,
    paths: contract.ProcessingPaths,
    source: SourceSpec,
    tag: str,
    repo_url: str,
) -> _Version:
    """Draw, write, push and tag the version, then sign its statement."""
    repo = DatasetRepo(
        repo_url, paths.work_dir / "repo", args.remote_url or "s3://lineage-dvc/dvc", step=_step
    )
    repo.prepare(tag)
    snapshot = _consent_snapshot(args, source, paths)
    dataset, consent = _draw_and_write(args, source, paths, snapshot, repo)
    refuse_erased(dataset, paths.input_dir / contract.ERASURES_INPUT_NAME)
    metadata = _metadata(args, source, dataset, consent)
    published = repo.publish(
        tag,
        _commit_message(args, source, dataset),
        {DATASET_METADATA: (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode()},
    )
    out_dir = _copy_outputs(paths, repo)
    statement = _sign(paths, repo, tag, repo_url, args, source, published, dataset, consent)
    if statement is not None:
        statement.write(out_dir / DATASET_STATEMENT_FILE)
    return _Version(
        args, source, tag, repo_url, repo, dataset, consent, published, out_dir, statement, metadata
    )


def _logged_run(
    version: _Version, paths: contract.ProcessingPaths, tracking_uri: str, experiment: str
) -> contextlib.AbstractContextManager[str]:
    """The processing run in MLflow: params (and the log head the job was given), metrics,
    the manifest, the `.dvc` file and the signed statement; it ends FINISHED only when the
    block (the tag's push) completes."""
    _step(f"log processing run to MLflow experiment {experiment}")
    v, out_dir = version, version.out_dir
    return tracking.logged_run(
        uri=tracking_uri,
        experiment=experiment,
        run_name=f"process-{v.tag}",
        stage="processing",
        params={
            **_run_params(v.args, v.source, v.tag, v.repo_url, v.published, v.dataset, v.consent),
            **JobEvidence.read(paths.input_dir / contract.EVIDENCE_INPUT_NAME).params(),
        },
        metrics={f"records_{split}": float(n) for split, n in v.dataset.counts.items()},
        tags={"dvc_tag": v.tag, "data_git_commit_id": v.published.commit},
        artifacts=[
            out_dir / manifest.MANIFEST_NAME,
            out_dir / DVC_FILE,
            *([out_dir / DATASET_STATEMENT_FILE] if v.statement is not None else []),
        ],
    )


def _result(version: _Version, run_id: str | None, started: float) -> ProcessingResult:
    v = version
    return ProcessingResult(
        tag=v.tag,
        commit=v.published.commit,
        dataset_md5=v.published.dataset_md5,
        manifest_sha256=v.dataset.manifest_sha256,
        counts=v.dataset.counts,
        classes=v.dataset.classes,
        nfiles=v.published.nfiles,
        size_bytes=v.published.size,
        dvc_repo_url=redact_url(v.repo_url),
        reused_commit=v.published.reused_commit,
        data_version=v.args.data_version,
        source=str(v.source),
        mlflow_run_id=run_id,
        seconds=round(time.monotonic() - started, 2),
        pattern=v.args.pattern,
        consent=v.consent or None,
        patients=v.dataset.patients if v.args.pattern == "record" else None,
        attestation=None if v.statement is None else v.statement.to_json(),
    )


def _sign(
    paths: contract.ProcessingPaths,
    repo: DatasetRepo,
    tag: str,
    repo_url: str,
    args: argparse.Namespace,
    source: SourceSpec,
    published: PublishResult,
    dataset: WrittenDataset,
    consent: dict[str, object],
) -> Envelope | None:
    """The version's signed statement (see processing/attestation.py)."""
    evidence = JobEvidence.read(paths.input_dir / contract.EVIDENCE_INPUT_NAME)
    keys = JobKeys.from_env(trusted=evidence.trusted_keys)
    if keys.key is None:
        return None
    _step("sign the dataset statement")
    job_config = contract.read_json(paths.job_config_file) or {}
    return sign_dataset(
        keys=keys,
        evidence=evidence,
        manifest_sha256=dataset.manifest_sha256,
        listing=listing_bytes(repo.dir, repo.dataset_dir, published.dataset_md5),
        dataset_md5=published.dataset_md5,
        predicate={
            **_sampling(args, source),
            "repository": redact_url(repo_url),
            "tag": tag,
            "commit": published.commit,
            "dataset_md5": published.dataset_md5,
            "files": published.nfiles,
            "size_bytes": published.size,
            "counts": dataset.counts,
            "classes": dataset.classes,
            "code_version": __version__,
            "consent": {k: v for k, v in consent.items() if k in CONSENT_PARAMS} or None,
            "job": str(job_config.get("ProcessingJobName", "")),
        },
    )


def _log_start(paths: contract.ProcessingPaths) -> None:
    job_config = contract.read_json(paths.job_config_file) or {}
    resources = contract.read_json(paths.resource_config_file) or {}
    log.info(
        "processing job %s on %s (model-lineage %s)",
        job_config.get("ProcessingJobName", "(no job config)"),
        resources.get("current_host", "local"),
        __version__,
    )


def _environment() -> tuple[str, str | None, str]:
    """The dataset repository's URL (required), the MLflow tracking URI and experiment."""
    repo_url = os.environ.get("DVC_REPO_URL")
    if not repo_url:
        raise JobError(
            "DVC_REPO_URL is not set", "set it to the dataset git repository's clone URL"
        )
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI")
    experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or tracking.DEFAULT_EXPERIMENT
    return repo_url, tracking_uri, experiment


def refuse_erased(dataset: WrittenDataset, directory: Path) -> None:
    """Erased stays erased: a record whose bytes or scan id an erasure removed is never
    published again (whatever the pattern), before a byte is pushed."""
    path = directory / contract.ERASURES_FILE
    if not path.is_file():
        return
    erased = json.loads(path.read_text())
    objects, scans = erased.get("objects", {}), erased.get("scans", {})
    back = []
    for row in dataset.rows:
        request = scans.get(row.scan_id) if row.scan_id else None
        if request is None and objects:
            request = objects.get(file_md5(dataset.root / row.file_path))
        if request is not None:
            back.append(f"{row.record_id} ({row.scan_id or row.file_path}) under {request}")
    if back:
        raise JobError(
            f"{len(back)} records of this version were erased and must not be published again: "
            + "; ".join(back[:5]),
            "remove them from the source (the erasure's evidence names them); nothing was "
            "published",
        )


def _check_pattern(args: argparse.Namespace, source: SourceSpec) -> None:
    """A source with patients is never published unfiltered: every patient's record must
    pass the consent registry, and be found by erasures and audits by its patient id."""
    if args.pattern != "record" and source.kind in PATIENT_KINDS:
        raise JobError(
            f"{source} holds patients' records: it is published only with --pattern record "
            "(consent-filtered, the patient columns kept), never as a plain dataset",
            "rerun with --pattern record",
        )


def _consent_snapshot(
    args: argparse.Namespace, source: SourceSpec, paths: contract.ProcessingPaths
) -> Snapshot | None:
    """The record pattern's consent snapshot (its input channel); None in the dataset one."""
    if args.pattern != "record":
        return None
    if source.kind not in PATIENT_KINDS:
        raise JobError(
            f"the record pattern needs a source with patients, not {source.kind}",
            "use --source synthetic-cxr or --source cxr:PATH",
        )
    snapshot = Snapshot.read(paths.input_dir / CONSENT_INPUT)
    log.info(
        "consent snapshot %s as of %s: %d patients consent, %d do not",
        snapshot.sha256,
        snapshot.as_of,
        len(snapshot.consenting),
        len(snapshot.withdrawn),
    )
    return snapshot


def _draw_and_write(
    args: argparse.Namespace,
    source: SourceSpec,
    paths: contract.ProcessingPaths,
    snapshot: Snapshot | None,
    repo: DatasetRepo,
) -> tuple[WrittenDataset, dict[str, object]]:
    """Load the source, draw the sample and splits (by patient, consent-filtered, in the
    record pattern), write the images and the manifest into the repository's dataset."""
    record_pattern = args.pattern == "record"
    _step(f"load source {source}")
    records = load_source(source, paths.input_dir)
    sampler = assign_by_patient if record_pattern else assign
    assignments = sampler(
        records,
        fraction=args.data_fraction,
        val_split=args.val_split,
        test_split=args.test_split,
        seed=args.seed,
    )
    consent: dict[str, object] = {}
    if snapshot is not None:
        assignments, consent = _consent_filter(assignments, snapshot)
    _step(f"write {len(assignments)} of {len(records)} images")
    columns = manifest.RECORD_COLUMNS if record_pattern else manifest.BASE_COLUMNS
    with Progress(len(assignments), "writing images") as progress:
        dataset = write_dataset(assignments, repo.dataset_dir, progress.advance, columns)
    log.info("counts: %s; manifest sha256 %s", dataset.counts, dataset.manifest_sha256)
    return dataset, consent


def _metadata(
    args: argparse.Namespace,
    source: SourceSpec,
    dataset: WrittenDataset,
    consent: dict[str, object],
) -> dict[str, object]:
    """The version's `dataset.json` (committed beside the `.dvc` file) and tag message."""
    metadata = {
        **_sampling(args, source),
        "manifest_sha256": dataset.manifest_sha256,
        "counts": dataset.counts,
        "code_version": __version__,
        **consent,
    }
    if args.pattern == "record":
        metadata["patients"] = dataset.patients
        metadata["patient_count"] = len({r.patient_id for r in dataset.rows})
    return metadata


def _commit_message(args: argparse.Namespace, source: SourceSpec, dataset: WrittenDataset) -> str:
    counts = dataset.counts
    return (
        f"dataset {args.data_version}: {sum(counts.values())} records "
        f"(train {counts['train']}, val {counts['val']}, test {counts['test']}) "
        f"from {source.name}\n\nmanifest sha256 {dataset.manifest_sha256}"
    )


def _copy_outputs(paths: contract.ProcessingPaths, repo: DatasetRepo) -> Path:
    """The manifest and the `.dvc` file into the job's output (uploaded by SageMaker)."""
    out_dir = paths.output_dir / RESULT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / manifest.MANIFEST_NAME).write_bytes(
        (repo.dataset_dir / manifest.MANIFEST_NAME).read_bytes()
    )
    (out_dir / DVC_FILE).write_bytes((repo.dir / DVC_FILE).read_bytes())
    return out_dir


def _run_params(
    args: argparse.Namespace,
    source: SourceSpec,
    tag: str,
    repo_url: str,
    published: PublishResult,
    dataset: WrittenDataset,
    consent: dict[str, object],
) -> dict[str, object]:
    """The processing run's MLflow params."""
    record_pattern = args.pattern == "record"
    return {
        **_sampling(args, source),
        "data_git_commit_id": published.commit,
        "dvc_tag": tag,
        "dvc_repo_url": redact_url(repo_url),
        "dataset_md5": published.dataset_md5,
        "manifest_sha256": dataset.manifest_sha256,
        "reused_commit": published.reused_commit,
        "code_version": __version__,
        **contract.image_identity(),
        **{f"count_{split}": n for split, n in dataset.counts.items()},
        **{k: v for k, v in consent.items() if k in CONSENT_PARAMS},
        **({"patient_count": len({r.patient_id for r in dataset.rows})} if record_pattern else {}),
    }


def _sampling(args: argparse.Namespace, source: object) -> dict[str, object]:
    """How the version was drawn: in its committed dataset.json and in the run's params."""
    return {
        "pattern": args.pattern,
        "data_version": args.data_version,
        "data_fraction": args.data_fraction,
        "val_split": args.val_split,
        "test_split": args.test_split,
        "seed": args.seed,
        "source": str(source),
    }


def _dataset_facts(result: ProcessingResult) -> dict[str, object]:
    """The dataset version's facts for a lineage catalogue (the `modelLineage` facet)."""
    facts: dict[str, object] = {
        "dvc_tag": result.tag,
        "data_git_commit_id": result.commit,
        "dataset_md5": result.dataset_md5,
        "manifest_sha256": result.manifest_sha256,
        "data_version": result.data_version,
        "records": dict(result.counts),
        "files": result.nfiles,
        "size_bytes": result.size_bytes,
        "source": result.source,
        "pattern": result.pattern,
    }
    if result.consent:
        facts["consent"] = {k: v for k, v in result.consent.items() if v is not None}
    if result.patients:
        facts["patients"] = dict(result.patients)
    return facts


def _consent_filter(
    assignments: list[Assignment], snapshot: Snapshot
) -> tuple[list[Assignment], dict[str, object]]:
    """Keep only records of patients who consent at the snapshot; say what was left out.

    A patient the registry does not know has not consented: unknown means excluded.
    """
    consenting = set(snapshot.consenting)
    kept = [a for a in assignments if a.record.patient_id in consenting]
    excluded = {a.record.patient_id for a in assignments} - consenting
    log.info(
        "consent filter: kept %d records, excluded %d records of %d patients",
        len(kept),
        len(assignments) - len(kept),
        len(excluded),
    )
    return kept, {
        "consent_snapshot_sha256": snapshot.sha256,
        "consent_as_of": snapshot.as_of,
        "consent_head_seq": snapshot.head_seq,
        "consent_head_hash": snapshot.head_hash,
        "consent_log_id": snapshot.log_id,
        "excluded_patients": len(excluded),
        "excluded_records": len(assignments) - len(kept),
    }


def _step(message: str) -> None:
    log.info("step: %s", message)


def main(argv: Sequence[str] | None = None) -> None:
    paths = contract.ProcessingPaths.from_env()
    # SIGTERM stops the job at once, with a reason. Nothing half-published is left behind:
    # the tag is pushed last (see publish.py).
    run_job(
        lambda: run(parse_args(sys.argv[1:] if argv is None else argv), paths),
        paths.message_file,
        log=log,
        errors=(LineageError, SourceError, SamplingError),
        stopped_reason="stopped by SIGTERM (a version is tagged only after its data is pushed)",
    )
