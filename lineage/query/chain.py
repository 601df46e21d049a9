"""The links every lineage question walks: model reference -> registry version -> run ->
the data the run recorded (repository, tag, commit, DVC md5, manifest hash).

Each query module (trace, reproduce, verify, compare, audit) starts here, so "which data did
this model see" has one answer in the code base.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lineage.errors import LineageError
from lineage.integrity import Check, agree, run_state_checks, version_checks
from lineage.record import LineageRecord
from lineage.redact import REDACTED
from lineage.registry import (
    RegisteredVersion,
    RunRecord,
    get_run,
    resolve,
    versions_of_run,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

TRAINING_STAGE = "training"


@dataclass(frozen=True)
class RecordedData:
    """What a training run says about its data (the run's own params are the record)."""

    run: RunRecord
    version: RegisteredVersion | None
    repo_url: str  # usable for git (may carry credentials: never print it, print shown_repo)
    shown_repo: str  # as recorded (credentials redacted)
    tag: str
    commit: str
    dataset_md5: str
    manifest_sha256: str
    data_version: str

    @property
    def counts(self) -> dict[str, int]:
        return {
            split: int(self.run.params[f"count_{split}"])
            for split in ("train", "val", "test")
            if f"count_{split}" in self.run.params
        }


def locate(
    client: MlflowClient, *, model: str | None = None, run_id: str | None = None
) -> tuple[RegisteredVersion | None, RunRecord]:
    """The registry version (None for an unregistered run) and the training run of a model."""
    if (model is None) == (run_id is None):
        raise LineageError("name exactly one of a model and a run", "pass --model or --run")
    version: RegisteredVersion | None = None
    if model is not None:
        version = resolve(client, model)
        if not version.run_id:
            raise LineageError(
                f"{version.ref} has no source run in the registry: its lineage is unknown",
                "register models from `lineage train` runs only",
            )
        run_id = version.run_id
    assert run_id is not None
    run = get_run(client, run_id)
    stage = run.tags.get("lineage.stage")
    if stage != TRAINING_STAGE:
        raise LineageError(
            f"run {run_id} is not a training run (lineage.stage={stage!r})",
            "trace a model version or a run made by `lineage train`",
        )
    if version is None:
        found = versions_of_run(client, run_id)
        version = min(found, key=lambda v: int(v.version)) if found else None
    return version, run


def recorded_data(
    run: RunRecord,
    version: RegisteredVersion | None,
    repo_url: str | None = None,
    *,
    for_git: bool = True,
) -> RecordedData:
    """The run's data record; `for_git`: the repository URL must be usable for cloning."""
    shown = run.param("dvc_repo_url")
    usable = repo_url or shown
    if for_git and REDACTED in usable:
        raise LineageError(
            f"run {run.run_id} recorded the dataset repository as {shown} (credentials removed)",
            "pass the repository URL with its credentials as --repo-url (or configure a git "
            "credential helper and pass the URL without them)",
        )
    record = LineageRecord.from_run(run)
    for fact in ("dvc_tag", "data_git_commit_id", "dataset_md5", "manifest_sha256"):
        run.param(fact)  # a missing one is an error naming it
    return RecordedData(
        run=run,
        version=version,
        repo_url=usable,
        shown_repo=shown,
        tag=record.dvc_tag,
        commit=record.data_git_commit_id,
        dataset_md5=record.dataset_md5,
        manifest_sha256=record.manifest_sha256,
        data_version=record.data_version,
    )


def registry_checks(data: RecordedData) -> list[Check]:
    """The version's run finished (and is not deleted), recorded everything, and the
    version's tags repeat it; a run traced without a version: its state alone."""
    if data.version is None:
        return run_state_checks(data.run)
    return version_checks(data.version, data.run)


__all__ = ["Check", "RecordedData", "agree", "locate", "recorded_data", "registry_checks"]
