"""``cxr:PATH``: a real chest X-ray set with a consent registry, as the reference sample lays
it out (e.g. the Montgomery County set): ``PATH/registry.csv`` with
``patient_id,scan_id,file_path,label,consent_status`` (or ``s3_key`` instead of
``file_path``), and each image at ``PATH/<file_path>``.

The registry's consent column is not used to filter here: consent comes from the consent
registry database (`lineage consent import` of this same CSV), whose snapshot the job gets.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from lineage.consent import registry_csv
from lineage.errors import LineageError
from lineage.paths import PathContainmentError, contained
from processing.sources.base import SourceError, SourceRecord

REGISTRY_NAME = "registry.csv"


def load(root: Path) -> list[SourceRecord]:
    registry = root / REGISTRY_NAME
    if not registry.is_file():
        raise SourceError(
            f"{registry} is missing: a cxr source is a directory with registry.csv and images"
        )
    try:
        rows = registry_csv.read(registry)
    except LineageError as exc:
        raise SourceError(str(exc)) from None
    records = []
    for row in rows:
        relative = (
            row.file_path.split("://", 1)[-1].split("/", 1)[-1]
            if "://" in row.file_path
            else row.file_path
        )
        try:
            path = contained(root, relative, f"{registry} line {row.line}")
        except PathContainmentError as exc:
            raise SourceError(f"{exc.message}; {exc.hint}") from None
        if not path.is_file():
            raise SourceError(f"{registry} line {row.line}: image {path} does not exist")
        records.append(
            SourceRecord(
                row.scan_id,
                row.label,
                _loader(path),
                patient_id=row.patient_id,
                scan_id=row.scan_id,
            )
        )
    return records


def _loader(path: Path) -> Callable[[], Image.Image]:
    def load_image() -> Image.Image:
        try:
            with Image.open(path) as image:
                image.load()
                return image.copy()
        except (UnidentifiedImageError, OSError) as exc:
            raise SourceError(f"corrupt image {path} ({exc}); replace it and run again") from None

    return load_image
