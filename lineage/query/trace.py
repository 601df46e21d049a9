"""`trace`: which data trained this model? The whole chain, every link checked.

endpoint -> registry version (+ aliases) -> training run -> dataset tag -> commit -> `.dvc`
md5 -> `.dir` listing in the remote -> manifest (its sha256 recomputed from the remote's
bytes and from the run's artifact). Each record of a fact is compared with every other record
of it: the run's params, the registry tags, the git server, the DVC remote, the server's own
`/lineage`. Anything that cannot be read is an error naming it; a disagreement is a failed
check. A partial chain is never reported as complete.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from lineage import datarepo, manifest
from lineage.attest.checks import VerifiedModel, model_checks
from lineage.attest.host import Evidence
from lineage.config import Settings
from lineage.dvcremote import DvcRemote, ErasedObject
from lineage.erasure import erased_objects, summarize_erased
from lineage.errors import LineageError
from lineage.hashing import bytes_sha256, file_sha256
from lineage.integrity import model_dir_checks
from lineage.query.chain import Check, RecordedData, agree, locate, recorded_data, registry_checks
from lineage.record import LineageRecord
from lineage.redact import redact_url
from lineage.registry import RunRecord, download_artifact, mlflow_client
from lineage.storage import s3_client

MODEL_ARTIFACT = "model"  # the run's copy of the MLflow model (what the registry serves)


@dataclass(frozen=True)
class ModelLink:
    name: str
    version: str
    aliases: list[str]


@dataclass(frozen=True)
class RunLink:
    run_id: str
    run_name: str
    experiment_id: str
    started_ms: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class DataLink:
    repo_url: str  # credentials redacted
    tag: str
    commit: str
    data_version: str
    dataset_md5: str
    nfiles: int
    size_bytes: int
    remote_url: str
    listing_url: str
    manifest_sha256: str
    records: dict[str, int]
    labels: int


@dataclass(frozen=True)
class Trace:
    """The chain from a model (or endpoint) to its data, and every check made on the way."""

    model: ModelLink | None
    run: RunLink
    data: DataLink
    endpoint: str | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "endpoint": self.endpoint,
            "model": None if self.model is None else self.model.__dict__,
            "run": self.run.__dict__,
            "data": self.data.__dict__,
            "checks": [c.to_json() for c in self.checks],
        }


def endpoint_lineage(endpoint: str) -> dict[str, Any]:
    """What a running server says it serves (`GET /lineage`)."""
    url = endpoint.rstrip("/") + "/lineage"
    try:
        response = httpx.get(url, timeout=10)
    except httpx.HTTPError as exc:
        raise LineageError(
            f"no endpoint answers at {endpoint} ({exc.__class__.__name__})",
            "check the URL, or start one with `lineage deploy`",
        ) from None
    if response.status_code != 200:
        raise LineageError(
            f"{url} answered {response.status_code}",
            "the server is not a model-lineage inference server",
        )
    served: dict[str, Any] = response.json()
    for key in ("model_name", "model_version", "run_id"):
        if not served.get(key):
            raise LineageError(
                f"the endpoint's lineage has no {key}: it serves a model that is not in the "
                "registry",
                "deploy registered versions with `lineage deploy --model NAME@ALIAS`",
            )
    return served


def trace(
    settings: Settings,
    *,
    model: str | None = None,
    run_id: str | None = None,
    endpoint: str | None = None,
    repo_url: str | None = None,
) -> Trace:
    """The chain of `model` (NAME/VERSION, NAME@ALIAS), `run_id`, or the model `endpoint` serves."""
    if sum(x is not None for x in (model, run_id, endpoint)) != 1:
        raise LineageError("trace takes exactly one of --model, --run, --endpoint")
    served = endpoint_lineage(endpoint) if endpoint else None
    if served is not None:
        model = f"{served['model_name']}/{served['model_version']}"
    client = mlflow_client(settings.mlflow_uri)
    version, run = locate(client, model=model, run_id=run_id)
    data = recorded_data(run, version, repo_url)
    checks = registry_checks(data)

    with tempfile.TemporaryDirectory(prefix="lineage-trace-") as tmp:
        if served is not None:
            checks += _endpoint_checks(served, data)
        model_dir = Path(
            download_artifact(client, run.run_id, MODEL_ARTIFACT, str(Path(tmp) / "m"))
        )
        checks += model_dir_checks(run, model_dir, "the artifact store's")
        signed, verified = signed_model_checks(settings, run, model_dir, served)
        checks += signed
        link, data_checks = _data_link(settings, client, data, Path(tmp))
    checks += data_checks
    return Trace(
        model=None
        if version is None
        else ModelLink(version.name, version.version, version.aliases),
        run=RunLink(
            run_id=run.run_id,
            run_name=run.run_name,
            experiment_id=run.experiment_id,
            started_ms=run.start_ms,
            metrics={  # as the training job signed them (the run's own may have been changed)
                k: shown[k]
                for k in ("best_val_accuracy", "test_accuracy", "best_epoch")
                if k in (shown := verified.record.metrics if verified else run.metrics)
            },
        ),
        data=link,
        endpoint=endpoint,
        checks=checks,
    )


def signature_checks(
    settings: Settings, run: RunRecord, model_dir: Path, served: dict[str, Any] | None = None
) -> list[Check]:
    """The model's signatures, its signed facts against the run, the provenance in the
    transparency log, and (for an endpoint) the server's own signature check."""
    return signed_model_checks(settings, run, model_dir, served)[0]


def signed_model_checks(
    settings: Settings, run: RunRecord, model_dir: Path, served: dict[str, Any] | None = None
) -> tuple[list[Check], VerifiedModel | None]:
    """`signature_checks`, and the verified model (None when its signatures fail)."""
    evidence = Evidence(settings)
    checks, verified = model_checks(
        model_dir,
        evidence.trust,
        LineageRecord.from_run(run),
        "the artifact store's",
        run_metrics=run.metrics,
    )
    if verified is None:
        return checks, None
    checks.append(logged_check(evidence, verified.provenance_digest, "model provenance"))
    if served is not None:
        checks.append(
            agree(
                "endpoint signature",
                "provenance the server verified at load vs the registered model's",
                verified.provenance_digest,
                served.get("attestation_sha256")
                or "none (the server did not check signatures: start it with "
                "LINEAGE_TRUSTED_KEYS, as `lineage deploy` does)",
            )
        )
    return checks, verified


def logged_check(evidence: Evidence, digest: str, what: str) -> Check:
    """Is a signed statement in the transparency log (did an operator record it)?"""
    with evidence.log.engine.begin() as connection:
        evidence.log.verify(connection)
        leaf = evidence.log.find(connection, "attestation", digest=digest)
    if leaf is None:
        return Check(
            "transparency log",
            False,
            f"the {what} {digest[:16]} is not in the transparency log: no operator recorded it",
        )
    return Check("transparency log", True, f"the {what} {digest[:16]} is leaf {leaf.index}")


def _endpoint_checks(served: dict[str, Any], data: RecordedData) -> list[Check]:
    """The running model must be the registered one: same run, data and weights. The
    weights are compared with the digest the run recorded when it trained them, never with
    the artifact store's current bytes (which an attacker could have swapped too)."""
    checks = [
        agree("endpoint run", "served run_id vs registry", data.run.run_id, served.get("run_id")),
        agree(
            "endpoint data commit", "served vs run", data.commit, served.get("data_git_commit_id")
        ),
        agree("endpoint dvc tag", "served vs run", data.tag, served.get("dvc_tag")),
    ]
    if "dataset_md5" in served:
        checks.append(
            agree("endpoint dataset md5", "served vs run", data.dataset_md5, served["dataset_md5"])
        )
    recorded = LineageRecord.from_run(data.run).weights_sha256 or "not recorded by the run"
    if served.get("weights_sha256"):
        checks.append(
            agree(
                "endpoint weights",
                "sha256 of the served weights vs the run's record",
                recorded,
                served["weights_sha256"],
            )
        )
    else:
        checks.append(
            Check("endpoint weights", False, "the server does not report the hash of its weights")
        )
    recorded_onnx = LineageRecord.from_run(data.run).onnx_sha256
    if recorded_onnx or served.get("onnx_sha256"):
        checks.append(
            agree(
                "endpoint onnx",
                "sha256 of the served model.onnx vs the run's record",
                recorded_onnx or "not recorded by the run",
                served.get("onnx_sha256") or "none served",
            )
        )
    return checks


def _data_link(  # long: the data checks in chain order, each made in place
    settings: Settings, client: Any, data: RecordedData, tmp: Path
) -> tuple[DataLink, list[Check]]:
    checks: list[Check] = []
    tag_commit = datarepo.require_tag(data.repo_url, data.tag, data.commit)
    checks.append(agree("tag", f"tag {data.tag} on the git server", data.commit, tag_commit))
    repo_dir = tmp / "repo"
    datarepo.clone(data.repo_url, repo_dir, tag=data.tag)
    pointer = datarepo.read_pointer(repo_dir)
    checks.append(
        agree(
            "dvc pointer",
            f"{manifest.DVC_FILE} at {data.commit[:12]} vs run",
            data.dataset_md5,
            pointer.md5,
        )
    )
    remote = DvcRemote(s3_client(settings), datarepo.remote_url(repo_dir))
    entries = {e.relpath: e.md5 for e in remote.listing(pointer.md5)}
    tombstoned = erased_objects(settings)
    erased = [
        ErasedObject(path, md5, tombstoned[md5])
        for path, md5 in entries.items()
        if md5 in tombstoned
    ]
    if erased:  # reported, not a failure: the tombstones keep the version verifiable
        checks.append(Check("erasures", True, summarize_erased(erased)))
    checks.append(
        Check(
            "dvc listing",
            len(entries) == pointer.nfiles,
            f"{len(entries)} files listed in the remote, {pointer.nfiles} in {manifest.DVC_FILE}",
        )
    )
    manifest_md5 = entries.get(manifest.MANIFEST_NAME)
    if manifest_md5 is None:
        raise LineageError(
            f"dataset {data.tag} has no {manifest.MANIFEST_NAME}: its records are unknown",
            "publish datasets with `lineage process`",
        )
    manifest_bytes = remote.read(manifest_md5)
    if manifest_bytes is None:
        raise LineageError(
            f"the manifest of {data.tag} ({remote.object_url(manifest_md5)}) is missing from "
            "the remote",
            "restore it from a backup; the records of this dataset cannot be listed without it",
        )
    checks.append(
        agree(
            "manifest in remote",
            "sha256 of the remote's manifest vs run",
            data.manifest_sha256,
            bytes_sha256(manifest_bytes),
        )
    )
    logged = Path(
        download_artifact(client, data.run.run_id, manifest.MANIFEST_NAME, str(tmp / "artifact"))
    )
    checks.append(
        agree(
            "manifest artifact",
            "sha256 of the run's manifest artifact vs run",
            data.manifest_sha256,
            file_sha256(logged),
        )
    )
    rows = manifest.parse(manifest_bytes.decode("utf-8"))
    records = Counter(row.split for row in rows)
    counts = {split: records.get(split, 0) for split in manifest.SPLITS}
    if data.counts:
        checks.append(
            agree("record counts", "records by split: run params vs manifest", data.counts, counts)
        )
    return (
        DataLink(
            repo_url=redact_url(data.shown_repo),
            tag=data.tag,
            commit=data.commit,
            data_version=data.data_version,
            dataset_md5=pointer.md5,
            nfiles=pointer.nfiles,
            size_bytes=pointer.size,
            remote_url=remote.url,
            listing_url=remote.object_url(pointer.md5),
            manifest_sha256=data.manifest_sha256,
            records=counts,
            labels=len({row.label for row in rows}),
        ),
        checks,
    )
