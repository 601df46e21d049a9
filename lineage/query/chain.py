"""The links every lineage question walks: model reference -> registry version -> run ->
the data the run recorded (repository, tag, commit, DVC md5, manifest hash).

Each query module (trace, reproduce, verify, compare, audit) starts here, so "which data did
this model see" has one answer in the code base.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lineage.errors import LineageError
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
class Check:
    """One comparison a query made: two records of the same fact, and whether they agree."""

    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def agree(name: str, what: str, expected: object, actual: object) -> Check:
    """A check that two records hold the same value."""
    if expected == actual:
        return Check(name, True, f"{what}: {actual}")
    return Check(name, False, f"{what}: expected {expected}, found {actual}")


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
    return RecordedData(
        run=run,
        version=version,
        repo_url=usable,
        shown_repo=shown,
        tag=run.param("dvc_tag"),
        commit=run.param("data_git_commit_id"),
        dataset_md5=run.param("dataset_md5"),
        manifest_sha256=run.param("manifest_sha256"),
        data_version=run.params.get("data_version", ""),
    )


def registry_checks(data: RecordedData) -> list[Check]:
    """The registry version's tags repeat the run's data params: they must agree."""
    if data.version is None:
        return []
    tags = data.version.tags
    checks = []
    for key, value in (
        ("data_git_commit_id", data.commit),
        ("dvc_tag", data.tag),
        ("dataset_md5", data.dataset_md5),
    ):
        if key in tags:
            checks.append(
                agree(f"registry {key}", f"{data.version.ref} tag vs run", value, tags[key])
            )
        else:
            checks.append(Check(f"registry {key}", False, f"{data.version.ref} lacks tag {key}"))
    return checks
