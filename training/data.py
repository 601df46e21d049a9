"""Dataset splits as tensors, read through the manifest (the manifest is the source of truth:
what is not in it is not trained on)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from lineage.manifest import ManifestRow
from lineage.transforms import build_transform


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # N x 3 x S x S, normalized
    labels: torch.Tensor  # N, class indices

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def class_names(rows: Sequence[ManifestRow]) -> list[str]:
    """Classes in a fixed order (sorted, as ImageFolder does), from every split."""
    return sorted({row.label for row in rows})


def load_split(
    dataset_dir: Path, rows: Sequence[ManifestRow], split: str, classes: list[str], image_size: int
) -> Split:
    """Decode and transform one split once; epochs then only index tensors (fast, and the
    transform is deterministic, so every epoch sees the same pixels)."""
    transform = build_transform(image_size)
    index = {name: i for i, name in enumerate(classes)}
    chosen = sorted((r for r in rows if r.split == split), key=lambda r: r.file_path)
    if not chosen:
        return Split(torch.empty(0, 3, image_size, image_size), torch.empty(0, dtype=torch.long))
    tensors = []
    for row in chosen:
        with Image.open(dataset_dir / row.file_path) as image:
            tensors.append(transform(image.convert("RGB")))
    labels = torch.tensor([index[r.label] for r in chosen], dtype=torch.long)
    return Split(torch.stack(tensors), labels)
