"""`lineage train`, `lineage pipeline`, `lineage promote`."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lineage import contract
from lineage.attest.envelopes import Envelope
from lineage.attest.host import Evidence, Recorded
from lineage.config import Settings
from lineage.credentials import private_dir, write_private
from lineage.errors import LineageError
from lineage.gitops import split_credentials
from lineage.jobresult import TrainingResult
from lineage.jobspec import Channel, TrainingJobSpec, job_name
from lineage.openlineage.emit import forwarded_env
from lineage.ops.process import (
    DEFAULT_REPO,
    ProcessOptions,
    ProcessResult,
    kms_env,
    record_statement,
    run_processing_job,
    signing_env,
)
from lineage.ops.runtime import local_runner
from lineage.registry import parse_model_ref
from lineage.runtime import JobRunner
from lineage.tracking import DEFAULT_EXPERIMENT

log = logging.getLogger("lineage.train")


@dataclass(frozen=True)
class TrainOptions:
    tag: str
    epochs: int = 3
    learning_rate: float = 0.001
    batch_size: int = 64
    image_size: int = 128
    seed: int = 42
    model_name: str | None = None
    pretrained: str = "none"  # none | torchvision | PATH (becomes the `pretrained` channel)
    repo: str = DEFAULT_REPO
    experiment: str = DEFAULT_EXPERIMENT
    runtime: str = "process"
    register: bool = True
    reproduces: str | None = None  # run id this run re-executes (`lineage reproduce --retrain`)
    erasures: str | None = None  # JSON file md5 -> request: objects erased (the channel)
    repo_url: str | None = None  # the dataset repository, when not `repo` on the local server
    instance_count: int = 1  # hosts of the training job (DistributedDataParallel when > 1)


@dataclass(frozen=True)
class TrainResult:
    """What `lineage train` did: the job's own result (its run, the registry version), the
    job's name, its model.tar.gz, where its OpenLineage events are (when it kept any) and
    whether the new version joined the lineage index."""

    output: TrainingResult
    job_name: str
    model_artifact: str
    indexed: bool
    openlineage_events: str | None = None
    attestation: Recorded | None = None  # the model's signed provenance, in the log

    def to_json(self) -> dict[str, Any]:
        """What `train --json` prints: the job's result file (the provenance by its digest
        and log index), then what the run adds."""
        found = {
            **{k: v for k, v in self.output.to_json().items() if k != "attestation"},
            "attestation_sha256": None if self.attestation is None else self.attestation.digest,
            "tlog_index": None if self.attestation is None else self.attestation.index,
            "job_name": self.job_name,
            "model_artifact": self.model_artifact,
        }
        if self.openlineage_events is not None:
            found["openlineage_events"] = self.openlineage_events
        return {**found, "indexed": self.indexed}


@dataclass(frozen=True)
class PipelineResult:
    """What `lineage pipeline` did: the processing job, then the training job on its tag."""

    processing: ProcessResult
    training: TrainResult

    def to_json(self) -> dict[str, Any]:
        return {"processing": self.processing.to_json(), "training": self.training.to_json()}


@dataclass(frozen=True)
class Promotion:
    """What `lineage promote` did: `alias` of `model_name` moved to `version`."""

    model_name: str
    alias: str
    version: str
    previous_version: str | None  # where the alias pointed before, if anywhere
    decision_sha256: str = ""  # the signed promote decision

    def to_json(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "alias": self.alias,
            "version": self.version,
            "previous_version": self.previous_version,
            "decision_sha256": self.decision_sha256,
        }


def build_spec(
    settings: Settings, options: TrainOptions, repo_url: str, evidence: str | None = None
) -> TrainingJobSpec:
    hyperparameters = {
        "dvc_tag": options.tag,
        "epochs": str(options.epochs),
        "learning_rate": str(options.learning_rate),
        "batch_size": str(options.batch_size),
        "image_size": str(options.image_size),
        "seed": str(options.seed),
    }
    if options.model_name:
        hyperparameters["model_name"] = options.model_name
    if not options.register:
        hyperparameters["register"] = "false"
    if options.reproduces:
        hyperparameters["reproduces"] = options.reproduces
    channels = []
    if options.pretrained.lower() in ("none", "torchvision"):
        hyperparameters["pretrained"] = options.pretrained.lower()
    else:
        channels.append(Channel("pretrained", options.pretrained))
    if options.erasures:
        channels.append(Channel("erasures", options.erasures))
    if evidence:
        channels.append(Channel(contract.EVIDENCE_INPUT_NAME, evidence))
    name = job_name(f"train-{options.tag[:24]}")
    return TrainingJobSpec(
        name=name,
        image_uri=settings.image_uri("training"),
        hyperparameters=hyperparameters,
        environment={
            "DVC_REPO_URL": repo_url,
            "MLFLOW_TRACKING_URI": settings.mlflow_uri,
            "MLFLOW_EXPERIMENT_NAME": options.experiment,
            **kms_env(settings),
        },
        channels=channels,
        output_path=f"s3://{settings.mlflow_bucket}/training",
        region=settings.aws_region,
        instance_count=options.instance_count,
    )


def train(
    settings: Settings,
    options: TrainOptions,
    *,
    stream: bool = True,
    runner: JobRunner | None = None,
) -> TrainResult:
    """Run the training job on `options.tag` (on the local runtime `options.runtime` unless a
    `runner` is given); its run, the version it registered, and the index updated."""
    runner = runner or local_runner(settings, options.runtime)
    runner.prepare(("training",))
    name = start_training_job(settings, options, runner, stream=stream)
    return finish_training_job(settings, runner, name)


def start_training_job(
    settings: Settings,
    options: TrainOptions,
    runner: JobRunner,
    *,
    stream: bool,
    data_commit: str | None = None,
    dataset_statement: dict[str, Any] | None = None,
) -> str:
    """Build the training job and start it on a prepared runner; its name. The job gets
    the transparency log's signed head, the trusted public keys and, when the caller has it,
    the dataset's signed statement in its `evidence` channel (without it, the job reads the
    statement its processing run logged)."""
    if options.pretrained.lower() not in ("none", "torchvision"):
        path = Path(options.pretrained)
        if not path.exists():
            raise LineageError(
                f"pretrained weights {path} not found",
                "pass --pretrained PATH to a torchvision .pth, or none",
            )
    # credentials in a repository URL travel in the job's environment (like the stack's
    # keys), never in its config files, argv or the clone's .git/config
    if options.repo_url:
        repo_url, url_auth = split_credentials(options.repo_url)
    else:
        repo_url, url_auth = runner.dataset_repository(options.repo, create=False)
    options = with_erasures(settings, options)
    evidence = Evidence(settings)
    with tempfile.TemporaryDirectory(prefix="lineage-evidence-") as tmp:
        statement = None if dataset_statement is None else Envelope.from_json(dataset_statement)
        channel = evidence.job_input(Path(tmp), statement)
        spec = build_spec(settings, options, repo_url, evidence=str(channel))
        return runner.start_training(
            spec,
            runtime_env={**url_auth, **forwarded_env(), **signing_env(settings, runner)},
            stream=stream,
            data_commit=data_commit,
        )


def finish_training_job(settings: Settings, runner: JobRunner, job_name: str) -> TrainResult:
    """Wait for the training job, read its result, add the version it registered to the
    lineage index (whatever runtime trained it: audits read one index)."""
    run = runner.finish_training(job_name)
    output = run.output
    recorded = record_statement(
        Evidence(settings), output.attestation, f"runs:/{output.run_id}", "model provenance"
    )
    return TrainResult(
        output=output,
        job_name=run.job_name,
        model_artifact=run.model_artifact,
        openlineage_events=run.openlineage_events,
        indexed=index_version(settings, output.model_name, output.model_version, output.run_id),
        attestation=recorded,
    )


def with_erasures(settings: Settings, options: TrainOptions) -> TrainOptions:
    """Every object an erasure removed goes to the job as the `erasures` channel, so a
    version with erased records trains on the remainder instead of failing as damaged."""
    from lineage.erasure import erased_objects

    erased = erased_objects(settings)
    if not erased or options.erasures:
        return options
    path = private_dir(settings.home / "erasures") / "erased-objects.json"
    write_private(path, json.dumps(erased, indent=1, sort_keys=True))
    return replace(options, erasures=str(path))


def index_version(
    settings: Settings, model_name: str, model_version: str | None, run_id: str
) -> bool:
    """Add a newly registered version to the lineage index. The model is registered whatever
    happens here: a failure only leaves the index behind, which every audit detects."""
    if not model_version:
        return False
    from lineage.index.store import LineageIndex
    from lineage.registry import mlflow_client

    try:
        LineageIndex.from_settings(settings).add(
            mlflow_client(settings.mlflow_uri), model_name, str(model_version), run_id
        )
    except Exception as exc:  # noqa: BLE001 - never fail a registered model for the index
        log.warning("the lineage index was not updated (%s); run `lineage index rebuild`", exc)
        return False
    return True


@dataclass(frozen=True)
class StartedPipeline:
    """A pipeline whose training job was started, not waited for (SageMaker without
    `--wait`): the processing job's result and the training job's name."""

    processing: ProcessResult
    training_job: str


def pipeline(
    settings: Settings,
    process_options: ProcessOptions,
    train_options: TrainOptions,
    *,
    stream: bool = True,
    runner: JobRunner | None = None,
) -> PipelineResult:
    """Process, then train on the tag the processing job just published."""
    runner = runner or local_runner(settings, process_options.runtime)
    started = start_pipeline(settings, process_options, train_options, stream=stream, runner=runner)
    return PipelineResult(
        processing=started.processing,
        training=finish_training_job(settings, runner, started.training_job),
    )


def start_pipeline(
    settings: Settings,
    process_options: ProcessOptions,
    train_options: TrainOptions,
    *,
    stream: bool = True,
    runner: JobRunner | None = None,
) -> StartedPipeline:
    """Check both jobs can run, process, then start training on the published tag."""
    runner = runner or local_runner(settings, process_options.runtime)
    runner.prepare(("processing", "training"))
    processed = run_processing_job(settings, process_options, runner, stream=stream)
    options = replace(train_options, tag=processed.output.tag, repo=process_options.repo)
    name = start_training_job(
        settings,
        options,
        runner,
        stream=stream,
        data_commit=processed.output.commit,
        dataset_statement=processed.output.attestation,
    )
    return StartedPipeline(processing=processed, training_job=name)


def promote(settings: Settings, model: str, alias: str) -> Promotion:
    """Point registry alias `alias` at `model` (MLflow aliases, not deprecated stages)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    ref = parse_model_ref(model)
    name, version = ref.name, ref.version
    if version is None:
        raise LineageError("promote takes an exact version", "use --model NAME/VERSION")
    from lineage.integrity import checked_run
    from lineage.registry import mlflow_client, resolve

    client: MlflowClient = mlflow_client(settings.mlflow_uri)

    registered = resolve(client, ref)
    run = checked_run(client, registered)  # an alias points only at a provable version
    provenance = require_signed(settings, client, run, registered.ref, "promotable")
    try:
        previous = None
        try:
            previous = client.get_model_version_by_alias(name, alias).version
        except MlflowException:
            previous = None
        client.set_registered_model_alias(name, alias, version)
    except MlflowException as exc:
        raise LineageError(
            f"cannot set alias {alias} on {model}: {exc.message}",
            "check the name and version with the MLflow UI",
        ) from None
    from lineage.attest.host import model_subject, store_decision

    decision = Evidence(settings).decide(
        "promote",
        [model_subject(name, version, provenance)],
        {"alias": alias, "previous_version": previous, "run_id": run.run_id},
    )
    store_decision(settings, run.run_id, decision, "promote")
    return Promotion(
        model_name=name,
        alias=alias,
        version=version,
        previous_version=previous,
        decision_sha256=decision.digest,
    )


def require_signed(settings: Settings, client: Any, run: Any, subject: str, action: str) -> str:
    """Refuse a version whose model is not what its run trained, recorded and signed; the
    digest of its verified provenance."""
    from lineage.attest.checks import model_checks
    from lineage.integrity import model_dir_checks, require
    from lineage.record import LineageRecord
    from lineage.registry import download_artifact

    with tempfile.TemporaryDirectory(prefix="lineage-promote-") as tmp:
        model_dir = Path(download_artifact(client, run.run_id, "model", tmp))
        require(model_dir_checks(run, model_dir, "the registered"), subject, action)
        checks, verified = model_checks(
            model_dir, Evidence(settings).trust, LineageRecord.from_run(run), "the registered"
        )
        require(checks, subject, action)
    assert verified is not None
    return verified.provenance_digest
