"""The Training job: exact DVC tag -> verified data -> MobileNetV3-Small -> MLflow + registry.

Started as SageMaker starts a training container (``train``): hyperparameters, input data
config and resource config come from ``/opt/ml/input/config`` through the sagemaker-training
toolkit's own parser; the model goes to ``/opt/ml/model`` (an MLflow pytorch model plus
``lineage.json``), checkpoints to ``/opt/ml/checkpoints``; a failure reason goes to
``/opt/ml/output/failure`` and the exit code is non-zero.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from lineage import contract, datarepo, tracking
from lineage.attest.envelopes import Envelope
from lineage.attest.jobinput import JobEvidence, JobKeys
from lineage.attest.keys import utc_now
from lineage.errors import LineageError
from lineage.gitops import repository_name
from lineage.jobentry import run_job
from lineage.jobresult import TrainingResult, write_result
from lineage.openlineage import events as ol
from lineage.openlineage.emit import KEEP_DIR, EventSink, JobRun
from lineage.record import CONSENT_FACTS, DATA_FACTS, MODEL_FACTS, LineageRecord
from lineage.redact import redact_url
from lineage.version import __version__
from training import distributed
from training import hyperparameters as hp
from training.attestation import checked_dataset_statement, sign_model
from training.data import Split, class_names, load_split
from training.distributed import Cluster, ClusterError, Group
from training.export import ONNX_OPSET, check_parity, export_onnx
from training.fetch import FetchedDataset, fetch_dataset
from training.loop import EpochMetrics, FitResult, evaluate, fit, seed_everything
from training.model import ARCHITECTURE, BATCHNORM_MOMENTUM, PretrainedWeightsError, build_model

log = logging.getLogger("lineage.training")

LINEAGE_FILE = contract.MODEL_LINEAGE_FILE
WEIGHTS_FILE = contract.MODEL_WEIGHTS_FILE
RESULT_FILE = contract.TRAINING_RESULT_FILE
REPRODUCES_TAG = "lineage.reproduces"  # on a retrain: the run it re-executes


class TrainingError(LineageError):
    pass


class _StopFlag:
    """SIGTERM (SageMaker's stop, spot interruption): finish the batch, checkpoint, exit."""

    def __init__(self) -> None:
        self.stopped = False

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        log.warning("signal %d received: stopping after this batch and saving a checkpoint", signum)
        self.stopped = True


def _toolkit_environment() -> Any:
    from sagemaker_training import environment

    try:
        return environment.Environment()
    except FileNotFoundError as exc:
        raise TrainingError(
            f"SageMaker config file missing: {exc.filename}",
            "the job must be started by SageMaker or the local runner (`lineage train`)",
        ) from None
    except (ValueError, json.JSONDecodeError) as exc:
        raise TrainingError(f"unreadable SageMaker config: {exc}") from None


def _check_channels(env: Any) -> dict[str, Path]:
    channels = {name: Path(path) for name, path in env.channel_input_dirs.items()}
    for name, path in channels.items():
        if not path.is_dir():
            raise TrainingError(
                f"input channel {name!r} is declared in inputdataconfig.json but {path} is missing",
                "check the job's InputDataConfig (the channel's S3 prefix may be empty)",
            )
    return channels


@dataclass
class _Prepared:
    """What every host holds before training: the verified data, the network, the record."""

    params: hp.TrainingHyperparameters
    fetched: FetchedDataset
    repo_url: str
    tracking_uri: str
    experiment: str
    source: str
    train: Split
    val: Split
    test: Split
    model: torch.nn.Module
    device: torch.device
    record: LineageRecord
    keys: JobKeys
    evidence: JobEvidence
    dataset_statement: Envelope | None
    started_at: str


def run(paths: contract.TrainingPaths, stop: _StopFlag) -> TrainingResult | None:
    """Train; on several hosts, only the leader logs, registers and writes the model (the
    others return None). The leader's run is an OpenLineage run too (when configured)."""
    started = time.monotonic()
    env = _toolkit_environment()
    cluster = Cluster.from_toolkit(env)
    with _lineage_run(paths, env, cluster) as job_run:
        if not cluster.multi_host:
            prepared = _prepare(paths, env, cluster)
            return _train_and_register(paths, stop, prepared, None, started, job_run)
        with distributed.joined(cluster) as group:
            try:
                try:
                    prepared = _prepare(paths, env, cluster)
                except LineageError as exc:
                    group.report(str(exc))
                    raise
                group.report("ok")
                group.wait_for_all()  # every host verified the same data, or none trains
                group.init_process_group(prepared.device)
                if cluster.is_leader:
                    return _train_and_register(paths, stop, prepared, group, started, job_run)
                _fit(prepared, stop, group)
                log.info(
                    "%s done: the leader %s logs and registers; waiting for it to finish",
                    cluster.describe(),
                    cluster.leader,
                )
                group.outlive_leader()
                return None
            except ClusterError:
                raise  # another host's failure: that host is named, not this one
            except BaseException as exc:
                group.report_failure(str(exc) or exc.__class__.__name__)
                raise


def _lineage_run(paths: contract.TrainingPaths, env: Any, cluster: Cluster) -> JobRun:
    """The job as an OpenLineage run `train/<dataset repository>` (the leader's only), its
    parent the processing run that published the tag; inputs and outputs are filled in
    once the data is verified and the model registered."""
    repo_url = os.environ.get("DVC_REPO_URL", "")
    tag = str(env.hyperparameters.get("dvc_tag", ""))
    repo = repository_name(repo_url)
    sink = EventSink.from_env(paths.output_data_dir / KEEP_DIR) if cluster.is_leader else None
    return JobRun(
        sink,
        run_id=ol.training_run_id(env.job_name or "training"),
        job=ol.job(f"train/{repo}", "MODEL_TRAINING", repo_url or None),
        parent=ol.parent(ol.processing_run_id(tag), f"process/{repo}") if tag else None,
        facts={"dvc_tag": tag, "training_job_name": env.job_name, "hosts": list(cluster.hosts)},
    )


def _prepare(
    paths: contract.TrainingPaths, env: Any, cluster: Cluster
) -> _Prepared:  # long: a job stage; its checks run in order on every host
    """Fetch and verify the data at the tag (fail-closed, on every host), build the network
    and the lineage record."""
    started_at = utc_now()
    params = hp.parse(dict(env.hyperparameters))
    channels = _check_channels(env)
    repo_url = os.environ.get("DVC_REPO_URL")
    if not repo_url:
        raise TrainingError("DVC_REPO_URL is not set", "set it to the dataset repository URL")
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise TrainingError(
            "MLFLOW_TRACKING_URI is not set", "set it to the MLflow tracking server"
        )
    experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or tracking.DEFAULT_EXPERIMENT
    tracking.check_reachable(tracking_uri)

    pretrained = params.pretrained
    if "pretrained" in channels:
        pretrained = str(channels["pretrained"])

    fetched = fetch_dataset(
        repo_url, params.dvc_tag, paths.work_dir / "dataset-repo", _erased(channels)
    )
    _check_published_commit(tracking_uri, experiment, fetched)
    evidence = _evidence(paths, tracking_uri, experiment, params.dvc_tag)
    keys = JobKeys.from_env(trusted=evidence.trusted_keys)
    dataset_statement = checked_dataset_statement(evidence, keys, fetched)
    meta = datarepo.tag_metadata(fetched.repo_dir, params.dvc_tag)
    committed = datarepo.committed_metadata(fetched.repo_dir)  # dataset.json at the commit
    source = str(meta.get("source", "dataset")).split(":", 1)[0]
    model_name = params.model_name or f"{source}-mobilenetv3"

    classes = class_names(fetched.rows)
    train = load_split(fetched.dir, fetched.rows, "train", classes, params.image_size)
    val = load_split(fetched.dir, fetched.rows, "val", classes, params.image_size)
    test = load_split(fetched.dir, fetched.rows, "test", classes, params.image_size)
    if len(train) < 2 * cluster.world_size:
        raise TrainingError(
            f"dataset {params.dvc_tag} has {len(train)} training images "
            f"for {cluster.world_size} host(s)",
            "publish a version with a larger --fraction",
        )
    log.info(
        "data: train %d, val %d, test %d, %d classes", len(train), len(val), len(test), len(classes)
    )

    seed_everything(params.seed)  # before the model exists: its random init must repeat too
    try:
        model, is_pretrained = build_model(len(classes), pretrained)
    except PretrainedWeightsError as exc:
        raise TrainingError(
            str(exc), "pass --pretrained none or a torchvision state dict"
        ) from None
    use_cuda = env.num_gpus > 0 and torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")
    log.info("device: %s (SM_NUM_GPUS=%s), %s", device, env.num_gpus, cluster.describe())
    image = contract.image_identity()
    record = LineageRecord(
        data_git_commit_id=fetched.commit,
        dvc_tag=params.dvc_tag,
        data_version=str(meta.get("data_version", params.dvc_tag)),
        dataset_md5=fetched.dataset_md5,
        manifest_sha256=fetched.manifest_sha256,
        **_record_pattern_facts(committed, fetched),
        model_name=model_name,
        experiment=experiment,
        dvc_repo_url=redact_url(repo_url),
        code_version=__version__,
        model_architecture=ARCHITECTURE,
        image_size=params.image_size,
        classes=classes,
        pretrained=is_pretrained,
        training_job_name=env.job_name,
        image_uri=image.get("image_uri", ""),
        image_digest=image.get("image_digest", ""),
        image_revision=image.get("image_revision", ""),
        instance_count=cluster.world_size,
        world_size=cluster.world_size,
        hosts=list(cluster.hosts),
    )
    return _Prepared(
        params,
        fetched,
        repo_url,
        tracking_uri,
        experiment,
        source,
        train,
        val,
        test,
        model,
        device,
        record,
        keys,
        evidence,
        dataset_statement,
        started_at,
    )


def _evidence(
    paths: contract.TrainingPaths, tracking_uri: str, experiment: str, tag: str
) -> JobEvidence:
    """The `evidence` channel; without a dataset statement in it, the one the processing
    run of the tag logged (checked against the fetched data either way)."""
    evidence = JobEvidence.read(paths.channel_dir(contract.EVIDENCE_INPUT_NAME))
    if evidence.dataset_statement is not None:
        return evidence
    text = tracking.processing_artifact(
        tracking_uri, experiment, tag, contract.MODEL_DATASET_STATEMENT_FILE
    )
    if text is None:
        return evidence
    statement = Envelope.from_json(json.loads(text), f"the dataset statement of {tag}")
    return replace(evidence, dataset_statement=statement)


def _fit(
    prepared: _Prepared,
    stop: _StopFlag,
    group: Group | None,
    on_epoch: Callable[[EpochMetrics], None] = lambda _: None,
) -> FitResult:
    """The loop, on one host or all of them; a broken collective names the host that broke."""
    params = prepared.params
    try:
        return fit(
            prepared.model,
            prepared.train,
            prepared.val,
            epochs=params.epochs,
            learning_rate=params.learning_rate,
            batch_size=params.batch_size,
            seed=params.seed,
            device=prepared.device,
            on_epoch=on_epoch,
            should_stop=lambda: stop.stopped,
        )
    except RuntimeError as exc:  # torch.distributed's errors (a peer died, a timeout)
        if group is None:
            raise
        raise group.blame(exc) from None


def _train_and_register(  # long: a job stage: train, export, log and register in order
    paths: contract.TrainingPaths,
    stop: _StopFlag,
    prepared: _Prepared,
    group: Group | None,
    started: float,
    job_run: JobRun,
) -> TrainingResult:
    """The leader's part (the only part on one host): the MLflow run around the loop, the
    model with its digests, the export, the registry version."""
    import mlflow

    params, fetched, record = prepared.params, prepared.fetched, prepared.record
    model, device = prepared.model, prepared.device
    train, val, test = prepared.train, prepared.val, prepared.test
    mlflow.set_tracking_uri(prepared.tracking_uri)
    mlflow.set_experiment(prepared.experiment)
    with tracking.tracked_run(prepared.tracking_uri, f"train-{params.dvc_tag}") as run:
        run_id = run.info.run_id
        record = replace(record, run_id=run_id)
        mlflow.set_tags(
            {
                tracking.STAGE_TAG: "training",
                "dvc_tag": params.dvc_tag,
                "data_git_commit_id": fetched.commit,
                "model_name": record.model_name,
                "training_job_name": record.training_job_name or "",
                **({REPRODUCES_TAG: params.reproduces} if params.reproduces else {}),
            }
        )
        mlflow.log_params(
            {
                **record.to_params(),  # the data facts; the model's digests once it exists
                "batchnorm_momentum": BATCHNORM_MOMENTUM,
                "epochs": params.epochs,
                "learning_rate": params.learning_rate,
                "batch_size": params.batch_size,
                "seed": params.seed,
                "num_classes": len(record.classes),
                "source": prepared.source,
                "device": device.type,
                **{
                    f"count_{name}": len(split)
                    for name, split in (("train", train), ("val", val), ("test", test))
                },
                **_erasure_params(fetched),
                **prepared.evidence.params(),
            }
        )
        _log_dataset_input(mlflow, fetched, prepared.repo_url)

        def on_epoch(m: EpochMetrics) -> None:
            # One line per epoch in a fixed shape, so a SageMaker metric regex can scrape it.
            print(
                f"epoch={m.epoch} train_loss={m.train_loss:.6f} "
                f"train_accuracy={m.train_accuracy:.6f} val_loss={m.val_loss:.6f} "
                f"val_accuracy={m.val_accuracy:.6f} images_per_second="
                f"{m.images_per_second:.1f}",
                flush=True,
            )
            mlflow.log_metrics({k: v for k, v in m.as_dict().items() if v == v}, step=m.epoch)
            _save_checkpoint(paths.checkpoint_dir, model, m.epoch)

        fitted = _fit(prepared, stop, group, on_epoch)
        if fitted.stopped_early:
            last_epoch = fitted.history[-1].epoch if fitted.history else 0
            raise TrainingError(
                f"stopped by SIGTERM in epoch {last_epoch}",
                f"a checkpoint is in {paths.checkpoint_dir}",
            )
        model.load_state_dict(fitted.best_state)
        test_loss, test_acc = evaluate(model, test, device)
        final = {
            "best_val_accuracy": fitted.best_val_accuracy,
            "best_epoch": float(fitted.best_epoch),
            "test_accuracy": test_acc,
            "test_loss": test_loss,
        }
        mlflow.log_metrics({k: v for k, v in final.items() if v == v})
        log.info(
            "best epoch %d: val_accuracy %.4f; test_accuracy %.4f",
            fitted.best_epoch,
            fitted.best_val_accuracy,
            test_acc,
        )
        record, provenance = _save_and_log_model(
            mlflow, paths, model.cpu(), record, prepared, final
        )
        version = None
        if params.register:
            log.info("step: register %s with its lineage tags", record.model_name)
            version = _register(mlflow, run_id, record)
            record = replace(record, model_version=version)
            record.write(paths.model_dir)
            # the registered artifact's lineage.json names its own version (deploy checks it)
            mlflow.log_artifact(str(paths.model_dir / LINEAGE_FILE), artifact_path="model")
        mlflow.log_dict(record.to_json(), LINEAGE_FILE)
    _describe_run(job_run, prepared, record)

    metrics = {**{k: v for k, v in fitted.history[-1].as_dict().items()}, **final}
    return TrainingResult(
        run_id=run_id,
        model_name=record.model_name,
        model_version=version,
        data_git_commit_id=fetched.commit,
        dvc_tag=params.dvc_tag,
        dataset_md5=fetched.dataset_md5,
        manifest_sha256=fetched.manifest_sha256,
        metrics=metrics,
        pretrained=record.pretrained,
        device=device.type,
        seconds=round(time.monotonic() - started, 2),
        world_size=record.world_size,
        hosts=list(record.hosts),
        attestation=None if provenance is None else provenance.to_json(),
    )


def _describe_run(job_run: JobRun, prepared: _Prepared, record: LineageRecord) -> None:
    """What the catalogue learns on COMPLETE: the verified dataset version in, the model
    version out (its run, digests and metrics)."""
    data_facts = {k: v for k, v in record.facts().items() if k in DATA_FACTS}
    job_run.inputs = [
        ol.dataset_version(prepared.repo_url, record.dataset_md5, data_facts, output=False)
    ]
    job_run.outputs = [
        ol.model_version(
            prepared.tracking_uri,
            record.model_name,
            record.model_version,
            {**record.facts(), "run_id": record.run_id, "metrics": record.metrics},
            output=True,
        )
    ]
    job_run.facts |= {"mlflow_run_id": record.run_id, "world_size": record.world_size}


def _save_and_log_model(
    mlflow: Any,
    paths: contract.TrainingPaths,
    model: torch.nn.Module,
    record: LineageRecord,
    prepared: _Prepared,
    final: dict[str, float],
) -> tuple[LineageRecord, Envelope | None]:
    """The MLflow model, the ONNX export checked against it, and their digests: the model's
    bytes join the record before anything leaves this machine (params, which are immutable,
    then the artifacts; the registry version is created with its tags afterwards)."""
    test, val, train = prepared.test, prepared.val, prepared.train
    _save_model(mlflow, model, paths.model_dir, prepared.params.image_size)
    onnx_path = paths.model_dir / contract.MODEL_ONNX_FILE
    export_onnx(model, onnx_path, prepared.params.image_size)
    parity = check_parity(model, onnx_path, _parity_images(test, val, train))
    mlflow.log_metrics(parity.metrics())
    metrics = {k: v for k, v in {**final, **parity.metrics()}.items() if v == v}  # no NaN
    record = replace(record, metrics=metrics).with_model_bytes(paths.model_dir)
    mlflow.log_params(
        {
            **{k: getattr(record, k) for k in MODEL_FACTS},
            "onnx_sha256": record.onnx_sha256,
            "onnx_opset": ONNX_OPSET,
            "onnx_parity_images": parity.images,
        }
    )
    record.write(paths.model_dir)
    provenance = sign_model(
        paths.model_dir,
        keys=prepared.keys,
        evidence=prepared.evidence,
        record=record,
        params=prepared.params,
        dataset=prepared.dataset_statement,
        started=prepared.started_at,
    )
    if provenance is not None:
        mlflow.log_params(
            {"attestation_sha256": provenance.digest, "signer_key_id": prepared.keys.key.key_id}
            if prepared.keys.key is not None
            else {}
        )
    mlflow.log_artifact(str(prepared.fetched.manifest_path))
    mlflow.log_artifacts(str(paths.model_dir), artifact_path="model")
    return record, provenance


def _record_pattern_facts(committed: dict[str, Any], fetched: FetchedDataset) -> dict[str, Any]:
    """The record pattern's lineage: the consent snapshot the data was filtered with, the
    consent-log head it was taken at (an anchor of that log outside its database), and how
    many patients it holds (counted from the verified manifest, not taken on trust)."""
    if committed.get("pattern") != "record":
        return {"pattern": "dataset"}
    for key in CONSENT_FACTS:
        if committed.get(key) in (None, ""):
            raise TrainingError(
                f"record-pattern dataset {fetched.tag} lacks {key} in dataset.json",
                "republish it with `lineage process --pattern record`",
            )
    return {
        "pattern": "record",
        **{key: str(committed[key]) for key in CONSENT_FACTS},
        **(
            {"consent_log_id": str(committed["consent_log_id"])}
            if committed.get("consent_log_id")
            else {}
        ),
        "patient_count": len({row.patient_id for row in fetched.rows if row.patient_id}),
    }


def _parity_images(*splits: Any) -> torch.Tensor:
    """The held-out test images (val, then train, when a tiny dataset has none)."""
    for split in splits:
        if len(split):
            images: torch.Tensor = split.images
            return images
    raise TrainingError("no images to check the ONNX export against")


def _erased(channels: dict[str, Path]) -> dict[str, str]:
    """The `erasures` channel: md5 -> request of every object an erasure removed."""
    if "erasures" not in channels:
        return {}
    files = sorted(channels["erasures"].glob("*.json"))
    try:
        data = json.loads(files[0].read_text()) if files else {}
    except ValueError as exc:
        raise TrainingError(f"the erasures channel is not JSON: {exc}") from None
    return {str(md5): str(request) for md5, request in data.items()}


def _erasure_params(fetched: FetchedDataset) -> dict[str, Any]:
    """A version with erased records trains on the remainder, and says so in the run."""
    if not fetched.erased:
        return {}
    return {
        "erased_records": len(fetched.erased),
        "erasure_requests": ",".join(sorted({e.request for e in fetched.erased})),
    }


def _check_published_commit(uri: str, experiment: str, fetched: FetchedDataset) -> None:
    """Never trust the tag alone: when the processing run that published it is known, the
    tag must still name the commit that run recorded (a moved tag would otherwise train on
    other data under the old name)."""
    recorded = tracking.published_commit(uri, experiment, fetched.tag)
    if recorded is not None and recorded != fetched.commit:
        raise TrainingError(
            f"tag {fetched.tag} resolves to commit {fetched.commit[:12]}, but the processing "
            f"run that published it recorded {recorded[:12]}: the tag was moved",
            "do not train on it; restore the tag to the recorded commit "
            f"(`git push origin {recorded}:refs/tags/{fetched.tag}` on the server's repository)",
        )


def _log_dataset_input(mlflow: Any, fetched: FetchedDataset, repo_url: str) -> None:
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    url = f"{redact_url(repo_url)}?rev={fetched.tag}&path=dataset"
    source = HTTPDatasetSource(url=url)  # type: ignore[no-untyped-call]
    name = f"dataset@{fetched.tag}"
    dataset = MetaDataset(source=source, name=name, digest=fetched.dataset_md5)  # type: ignore[abstract]
    mlflow.log_input(dataset, context="training")


def _save_checkpoint(directory: Path, model: torch.nn.Module, epoch: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "checkpoint.pt.tmp"
    torch.save({"epoch": epoch, "model_state": model.state_dict()}, tmp)
    tmp.replace(directory / "checkpoint.pt")


def _save_model(mlflow: Any, model: torch.nn.Module, model_dir: Path, image_size: int) -> None:
    import numpy as np
    from mlflow.models import infer_signature

    model.eval()
    # The signature's example is synthetic (zeros of the input's shape and dtype): a model
    # must never carry a record, and MLflow ships the example inside every copy of it.
    example = torch.zeros(1, 3, image_size, image_size)
    with torch.no_grad():
        output = model(example).numpy()
    example_np = example.numpy().astype(np.float32)
    signature = infer_signature(example_np, output)
    model_dir.mkdir(parents=True, exist_ok=True)
    for child in model_dir.iterdir():
        raise TrainingError(f"{model_dir} is not empty ({child.name})")
    # Explicit requirements: inferring them runs the model in a subprocess (15 s on 2 cores)
    # only to find what we already know.
    requirements = [*mlflow.pytorch.get_default_pip_requirements(), f"numpy=={np.__version__}"]
    mlflow.pytorch.save_model(
        model,
        str(model_dir),
        signature=signature,
        input_example=example_np,
        pip_requirements=requirements,
    )
    # A plain state dict beside the MLflow model: the inference server rebuilds the network
    # from lineage.json and loads these with weights_only=True (no pickled code executed).
    torch.save(model.state_dict(), model_dir / WEIGHTS_FILE)


def _register(mlflow: Any, run_id: str, record: LineageRecord) -> str:
    """Register the model with its lineage tags in the same call: a version never exists
    without them (a crash between two calls used to leave one)."""
    from mlflow.exceptions import MlflowException

    try:
        registered = mlflow.register_model(
            f"runs:/{run_id}/model", record.model_name, tags=record.to_tags()
        )
    except MlflowException as exc:
        if tracking.unreachable(exc):
            raise  # the run's context names the server and what to do
        raise TrainingError(
            f"registering {record.model_name} failed: {exc.message}",
            "nothing was registered; the run is marked FAILED. Fix MLflow and train again",
        ) from None
    log.info("registered %s version %s", record.model_name, registered.version)
    return str(registered.version)


def main() -> None:
    paths = contract.TrainingPaths.from_env()
    stop = _StopFlag()  # SIGTERM: the loop stops after its batch and the job fails with why
    # a reason written earlier is kept, as the toolkit does
    result = run_job(
        lambda: run(paths, stop),
        paths.failure_file,
        log=log,
        on_sigterm=stop,
        keep_earlier_reason=True,
    )
    paths.success_file.parent.mkdir(parents=True, exist_ok=True)
    if result is None:  # a follower host: the leader wrote the model and the result
        paths.success_file.write_text("")
        return
    paths.output_data_dir.mkdir(parents=True, exist_ok=True)
    write_result(paths.output_data_dir / RESULT_FILE, result)
    paths.success_file.write_text("")
    log.info(
        "training complete: %s version %s (%.1fs)",
        result.model_name,
        result.model_version,
        result.seconds,
    )
