"""`verify`: is every object of a dataset version still in the remote, byte for byte?

Reads the `.dvc` pointer at the tag, the `.dir` listing it names, then downloads and
re-hashes every object (object names are content hashes). Answers without a DVC checkout and
names each missing or changed file, so a broken backup or a deleted prefix is found before
an audit needs the data, not during it.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lineage import contract, datarepo, manifest
from lineage.attest.checks import dataset_statement_checks
from lineage.attest.envelopes import Envelope
from lineage.attest.host import Evidence
from lineage.config import Settings
from lineage.dvcremote import DvcRemote, ObjectProblem
from lineage.erasure import ErasedObject, separate_erased
from lineage.errors import LineageError
from lineage.hashing import bytes_sha256
from lineage.query.chain import Check, agree, locate, recorded_data
from lineage.redact import redact_url
from lineage.registry import mlflow_client
from lineage.storage import s3_client
from lineage.tracking import DEFAULT_EXPERIMENT, processing_artifact


@dataclass(frozen=True)
class Verification:
    repo_url: str  # credentials redacted
    tag: str
    commit: str
    dataset_md5: str
    remote_url: str
    nfiles: int
    checked: int
    problems: list[ObjectProblem] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    model: str | None = None
    erased: list[ErasedObject] = field(default_factory=list)  # missing, with a tombstone

    @property
    def ok(self) -> bool:
        return not self.problems and all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "model": self.model,
            "repo_url": self.repo_url,
            "tag": self.tag,
            "commit": self.commit,
            "dataset_md5": self.dataset_md5,
            "remote_url": self.remote_url,
            "nfiles": self.nfiles,
            "checked": self.checked,
            "problems": [p.__dict__ for p in self.problems],
            "erased": [e.__dict__ for e in self.erased],
            "checks": [c.to_json() for c in self.checks],
        }


def verify(
    settings: Settings,
    *,
    tag: str | None = None,
    model: str | None = None,
    repo: str = "datasets",
    repo_url: str | None = None,
    jobs: int = 16,
) -> Verification:
    """Check every object of the dataset `tag` (in `repo`), or of the data `model` trained on."""
    if (tag is None) == (model is None):
        raise LineageError("verify takes exactly one of --tag and --model")
    checks: list[Check] = []
    expected_md5: str | None = None
    if model is not None:
        version, run = locate(mlflow_client(settings.mlflow_uri), model=model)
        data = recorded_data(run, version, repo_url)
        url, tag, expected_md5 = data.repo_url, data.tag, data.dataset_md5
        commit = datarepo.require_tag(url, tag, data.commit)
        checks.append(agree("tag", f"tag {tag} on the git server vs run", data.commit, commit))
        statement = _model_dataset_statement(settings, run.run_id)
    else:
        assert tag is not None
        url = repo_url or settings.repo_url(repo)
        commit = datarepo.require_tag(url, tag)
        statement = _published_statement(settings, tag)
    with tempfile.TemporaryDirectory(prefix="lineage-verify-") as tmp:
        repo_dir = Path(tmp) / "repo"
        datarepo.clone(url, repo_dir, tag=tag)
        pointer = datarepo.read_pointer(repo_dir)
        remote_location = datarepo.remote_url(repo_dir)
    if expected_md5 is not None:
        checks.append(agree("dvc pointer", "`.dvc` md5 vs run", expected_md5, pointer.md5))
    remote = DvcRemote(s3_client(settings), remote_location)
    entries = remote.listing(pointer.md5)
    checks.append(
        Check(
            "dvc listing",
            len(entries) == pointer.nfiles,
            f"{len(entries)} files listed, {pointer.nfiles} recorded in the `.dvc` file",
        )
    )
    checks += _signed_data_checks(settings, remote, statement, tag, commit, pointer.md5, entries)
    erased, problems = separate_erased(settings, remote.check_all(entries, jobs=jobs), entries)
    return Verification(
        repo_url=redact_url(url),
        tag=tag,
        commit=commit,
        dataset_md5=pointer.md5,
        remote_url=remote.url,
        nfiles=pointer.nfiles,
        checked=len(entries),
        problems=problems,
        checks=checks,
        model=model,
        erased=erased,
    )


def _signed_data_checks(
    settings: Settings,
    remote: DvcRemote,
    statement: Envelope | None,
    tag: str,
    commit: str,
    dataset_md5: str,
    entries: list[Any],
) -> list[Check]:
    """The version against its signed statement: tag, commit, md5, and the sha256 of the
    listing's and the manifest's bytes as the remote holds them."""
    listing = remote.read(dataset_md5)
    manifest_md5 = next((e.md5 for e in entries if e.relpath == manifest.MANIFEST_NAME), None)
    manifest_bytes = remote.read(manifest_md5) if manifest_md5 else None
    return dataset_statement_checks(
        statement,
        Evidence(settings).trust,
        tag=tag,
        commit=commit,
        dataset_md5=dataset_md5,
        listing_sha256=None if listing is None else bytes_sha256(listing),
        manifest_sha256=None if manifest_bytes is None else bytes_sha256(manifest_bytes),
    )


def _published_statement(settings: Settings, tag: str) -> Envelope | None:
    """The statement the processing run of `tag` logged."""
    text = processing_artifact(
        settings.mlflow_uri, DEFAULT_EXPERIMENT, tag, contract.MODEL_DATASET_STATEMENT_FILE
    )
    return None if text is None else Envelope.from_json(json.loads(text), f"statement of {tag}")


def _model_dataset_statement(settings: Settings, run_id: str) -> Envelope | None:
    """The dataset statement a model carries (its training job verified it)."""
    client = mlflow_client(settings.mlflow_uri)
    name = f"model/{contract.MODEL_DATASET_STATEMENT_FILE}"
    listed = {a.path for a in client.list_artifacts(run_id, "model")}
    if name not in listed:
        return None
    with tempfile.TemporaryDirectory(prefix="lineage-verify-") as tmp:
        return Envelope.read(Path(client.download_artifacts(run_id, name, tmp)))
