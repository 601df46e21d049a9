"""`manifest.csv`: one row per record of a dataset, the link from a dataset version to each
record (and, in the record pattern, to each patient).

Columns: ``record_id,file_path,split,label,sha256`` (+ ``patient_id,scan_id`` in the record
pattern). Rows are sorted by ``file_path`` and written with ``\\n`` line endings so the same
dataset always gives the same bytes, hence the same ``manifest_sha256``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lineage.errors import LineageError
from lineage.hashing import bytes_sha256, file_sha256
from lineage.paths import contained, safe_relpath

MANIFEST_NAME = "manifest.csv"
DATASET_DIR = "dataset"  # the tracked directory in a dataset repository
DVC_FILE = f"{DATASET_DIR}.dvc"  # its pointer file, committed and tagged
DATASET_METADATA = "dataset.json"  # committed beside it: pattern, consent snapshot, counts
BASE_COLUMNS = ("record_id", "file_path", "split", "label", "sha256")
RECORD_COLUMNS = ("patient_id", "scan_id", *BASE_COLUMNS)  # the record (patient) pattern
SPLITS = ("train", "val", "test")


@dataclass(frozen=True, order=True)
class ManifestRow:
    file_path: str  # relative to the dataset directory, POSIX separators
    record_id: str
    split: str
    label: str
    sha256: str
    patient_id: str = ""  # record pattern only
    scan_id: str = ""  # record pattern only

    def as_dict(self) -> dict[str, str]:
        return {
            "patient_id": self.patient_id,
            "scan_id": self.scan_id,
            "record_id": self.record_id,
            "file_path": self.file_path,
            "split": self.split,
            "label": self.label,
            "sha256": self.sha256,
        }


def render(rows: Iterable[ManifestRow], columns: Sequence[str] = BASE_COLUMNS) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in sorted(rows):
        writer.writerow({key: value for key, value in row.as_dict().items() if key in columns})
    return buffer.getvalue().encode()


def write(path: Path, rows: Iterable[ManifestRow], columns: Sequence[str] = BASE_COLUMNS) -> str:
    """Write the manifest; return its sha256."""
    data = render(rows, columns)
    path.write_bytes(data)
    return bytes_sha256(data)


def read(path: Path) -> list[ManifestRow]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LineageError(
            f"no manifest at {path}", "the dataset was not written by `lineage process`"
        ) from None
    return parse(text, str(path))


def parse(text: str, where: str = "manifest") -> list[ManifestRow]:
    """Rows of a manifest's text; the record pattern's patient columns when present. Every
    `file_path` must stay inside the dataset directory (a crafted row is refused here, so no
    reader ever opens a path it names outside)."""
    reader = csv.DictReader(io.StringIO(text))
    missing = set(BASE_COLUMNS) - set(reader.fieldnames or ())
    if missing:
        raise LineageError(
            f"{where} lacks columns {sorted(missing)}",
            "regenerate the dataset with `lineage process`",
        )
    return [
        ManifestRow(
            file_path=safe_relpath(r["file_path"] or "", f"{where} line {reader.line_num}"),
            record_id=r["record_id"],
            split=r["split"],
            label=r["label"],
            sha256=r["sha256"],
            patient_id=r.get("patient_id") or "",
            scan_id=r.get("scan_id") or "",
        )
        for r in reader
    ]


def verify_files(dataset_dir: Path, rows: Iterable[ManifestRow]) -> list[str]:
    """Problems found when re-hashing every file against the manifest (empty list: intact)."""
    problems = []
    for row in rows:
        path = contained(dataset_dir, row.file_path, f"manifest row {row.record_id}")
        if not path.is_file():
            problems.append(f"{row.file_path}: missing")
            continue
        actual = file_sha256(path)
        if actual != row.sha256:
            problems.append(f"{row.file_path}: sha256 {actual} != manifest {row.sha256}")
    return problems
