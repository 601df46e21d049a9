"""The result files our jobs leave, described once for the job that writes them and the
runtimes that read them back (the local runner's `lineage process` / `lineage train`).

Processing: ``result.json`` in its ``lineage`` output (/opt/ml/processing/output/lineage);
training: ``result.json`` in /opt/ml/output/data (tarred to output.tar.gz). The file is the
dataclass's fields in order, as JSON, so what a job wrote reads back to the same value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from lineage.errors import LineageError


@dataclass(frozen=True)
class ProcessingResult:
    """The dataset version a processing job published."""

    tag: str
    commit: str
    dataset_md5: str
    manifest_sha256: str
    counts: dict[str, int]
    classes: list[str]
    nfiles: int
    size_bytes: int
    dvc_repo_url: str
    reused_commit: bool
    data_version: str
    source: str
    mlflow_run_id: str | None
    seconds: float
    pattern: str = "dataset"
    consent: dict[str, object] | None = None  # record pattern: the snapshot used
    patients: dict[str, int] | None = None  # record pattern: distinct patients per split
    attestation: dict[str, Any] | None = None  # the signed dataset statement (DSSE envelope)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, path: Path) -> ProcessingResult:
        return _read(cls, path)

    @classmethod
    def from_json(cls, data: object, source: str) -> ProcessingResult:
        """The result as read from `source` (a runtime that fetched the file itself)."""
        return _from_json(cls, data, source)


@dataclass(frozen=True)
class TrainingResult:
    """The run a training job made and the registry version it created (if it registered)."""

    run_id: str
    model_name: str
    model_version: str | None
    data_git_commit_id: str
    dvc_tag: str
    dataset_md5: str
    manifest_sha256: str
    metrics: dict[str, float]
    pretrained: bool
    device: str
    seconds: float
    world_size: int = 1
    hosts: list[str] = field(default_factory=list)
    attestation: dict[str, Any] | None = None  # the model's signed provenance (DSSE envelope)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, path: Path) -> TrainingResult:
        return _read(cls, path)

    @classmethod
    def from_json(cls, data: object, source: str) -> TrainingResult:
        """The result as read from `source` (a runtime that fetched the file itself)."""
        return _from_json(cls, data, source)


JobResult = TypeVar("JobResult", ProcessingResult, TrainingResult)


def write_result(path: Path, result: ProcessingResult | TrainingResult) -> None:
    """The job's result file (indented JSON, a final newline)."""
    path.write_text(json.dumps(result.to_json(), indent=2) + "\n")


def _read(cls: type[JobResult], path: Path) -> JobResult:
    return _from_json(cls, json.loads(path.read_text()), str(path))


def _from_json(cls: type[JobResult], data: object, path: str) -> JobResult:
    if not isinstance(data, Mapping):
        raise LineageError(f"{path} does not hold a JSON object")
    names = {f.name for f in fields(cls)}
    try:
        return cls(**{key: value for key, value in data.items() if key in names})
    except TypeError as exc:  # a field the job did not write
        raise LineageError(
            f"{path} is not a complete job result ({exc})",
            "the job's image may be older than this lineage: rebuild the images (`make images`)",
        ) from None
