"""Data sources, chosen by ``--source``: ``digits``, ``cifar10[:PATH]``, ``imagefolder:PATH``,
and, with patients for the record pattern, ``synthetic-cxr`` and ``cxr:PATH``.

PATH may be local or ``s3://bucket/prefix``; S3 inputs are downloaded into the job's input
directory first (``/opt/ml/processing/input/source``), as a ProcessingInput would place them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import boto3

from lineage.paths import PathContainmentError, contained
from processing.sources import cifar10, cxr, digits, imagefolder, synthetic_cxr
from processing.sources.base import SourceError, SourceRecord

__all__ = ["SourceError", "SourceRecord", "SourceSpec", "load_source", "parse_source"]

KINDS = ("digits", "cifar10", "imagefolder", "synthetic-cxr", "cxr")
PATIENT_KINDS = ("synthetic-cxr", "cxr")  # sources whose records belong to patients


@dataclass(frozen=True)
class SourceSpec:
    kind: str
    location: str | None = None

    @property
    def name(self) -> str:
        """Short name used in model names and MLflow params (never a full path)."""
        return self.kind

    def __str__(self) -> str:
        return f"{self.kind}:{self.location}" if self.location else self.kind


def parse_source(text: str) -> SourceSpec:
    kind, _, location = text.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise SourceError(
            f"unknown source {text!r}: use digits, cifar10[:PATH], imagefolder:PATH, "
            "synthetic-cxr or cxr:PATH"
        )
    if kind in ("digits", "synthetic-cxr") and location:
        raise SourceError(f"the {kind} source takes no path: use --source {kind}")
    if kind in ("imagefolder", "cxr") and not location:
        raise SourceError(f"{kind} needs a path: --source {kind}:/data/images")
    return SourceSpec(kind, location or None)


def load_source(spec: SourceSpec, input_dir: Path) -> list[SourceRecord]:
    if spec.kind == "digits":
        return digits.load()
    if spec.kind == "synthetic-cxr":
        return synthetic_cxr.load()
    if spec.kind == "cifar10":
        if spec.location is None:
            return cifar10.load(cifar10.download(input_dir))
        return cifar10.load(_materialize(spec.location, input_dir, single_file=True))
    assert spec.location is not None
    if spec.kind == "cxr":
        return cxr.load(_materialize(spec.location, input_dir, single_file=False))
    return imagefolder.load(_materialize(spec.location, input_dir, single_file=False))


def _materialize(location: str, input_dir: Path, *, single_file: bool) -> Path:
    if not location.startswith("s3://"):
        path = Path(location).expanduser()
        if not path.exists():
            raise SourceError(f"source path {path} does not exist")
        return path
    bucket, _, prefix = location[len("s3://") :].partition("/")
    client = boto3.client("s3")
    target = input_dir / "source"
    target.mkdir(parents=True, exist_ok=True)
    try:
        if single_file:
            local = contained(target, PurePosixPath(prefix).name, f"the source object {location}")
            client.download_file(bucket, prefix, str(local))
            return local
        paginator = client.get_paginator("list_objects_v2")
        count = 0
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
            for obj in page.get("Contents", []):
                relative = obj["Key"][len(prefix.rstrip("/")) + 1 :]
                if not relative or relative.endswith("/"):
                    continue
                # checked before anything is written: a key like `p/../../x` must not land
                # outside the job's input directory
                local = contained(target, relative, f"S3 key {obj['Key']!r} under {location}")
                local.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(bucket, obj["Key"], str(local))
                count += 1
    except PathContainmentError as exc:
        raise SourceError(f"{exc.message}; {exc.hint}") from None
    except Exception as exc:  # noqa: BLE001 - any S3 read error is a SourceError
        raise SourceError(f"cannot read {location}: {exc}") from None
    if count == 0:
        raise SourceError(f"no objects under {location}")
    return target
