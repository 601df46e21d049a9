"""Write a sampled dataset as ImageFolder PNGs plus `manifest.csv`, byte for byte reproducibly.

Same inputs and seed give identical files, hence the same DVC md5 and an unchanged-data run
that reuses the previous commit instead of making an empty one.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lineage import manifest
from lineage.hashing import file_sha256
from lineage.manifest import ManifestRow
from processing.sampling import Assignment

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class WrittenDataset:
    root: Path
    rows: list[ManifestRow]
    manifest_sha256: str

    @property
    def counts(self) -> dict[str, int]:
        counted = Counter(row.split for row in self.rows)
        return {split: counted.get(split, 0) for split in manifest.SPLITS}

    @property
    def patients(self) -> dict[str, int]:
        """Distinct patients per split (record pattern; zeros otherwise)."""
        return {
            split: len({r.patient_id for r in self.rows if r.split == split and r.patient_id})
            for split in manifest.SPLITS
        }

    @property
    def classes(self) -> list[str]:
        return sorted({row.label for row in self.rows})


def safe_name(text: str) -> str:
    return _UNSAFE.sub("_", text.replace("/", "__")).strip("._") or "record"


def write_dataset(
    assignments: Sequence[Assignment],
    root: Path,
    on_progress: Callable[[int], None] = lambda _: None,
    columns: Sequence[str] = manifest.BASE_COLUMNS,
) -> WrittenDataset:
    """Write `assignments` under `root` (replacing what is there) and its manifest (with the
    patient columns in the record pattern)."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    rows = []
    for assignment in assignments:
        record = assignment.record
        relative = f"{assignment.split}/{safe_name(record.label)}/{safe_name(record.record_id)}.png"
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        image = record.load()
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        # PNG written by Pillow carries no timestamp; fixed compression keeps bytes stable.
        image.save(path, format="PNG", compress_level=6, optimize=False)
        rows.append(
            ManifestRow(
                file_path=relative,
                record_id=record.record_id,
                split=assignment.split,
                label=record.label,
                sha256=file_sha256(path),
                patient_id=record.patient_id or "",
                scan_id=record.scan_id or "",
            )
        )
        on_progress(1)
    digest = manifest.write(root / manifest.MANIFEST_NAME, rows, columns)
    return WrittenDataset(root, sorted(rows), digest)
