"""Any ImageFolder tree: ``ROOT/<class>/<image>``, or ``ROOT/{train,test}/<class>/<image>``
when the tree has its own held-out test split."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from processing.sources.base import SourceError, SourceRecord

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def load(root: Path) -> list[SourceRecord]:
    if not root.is_dir():
        raise SourceError(f"imagefolder source {root} is not a directory")
    split_dirs = {"train": root / "train", "test": root / "test"}
    if all(d.is_dir() for d in split_dirs.values()):
        records = []
        for split, directory in split_dirs.items():
            records.extend(_scan(directory, split, prefix=f"{split}/"))
    else:
        records = _scan(root, None, prefix="")
    if not records:
        raise SourceError(
            f"no images under {root}: expected {root}/<class>/<image> "
            f"({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return records


def _scan(directory: Path, split: str | None, prefix: str) -> list[SourceRecord]:
    records = []
    real_root = directory.resolve()
    for class_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
        for path in sorted(class_dir.rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                continue
            if not path.resolve().is_relative_to(real_root):
                raise SourceError(
                    f"{path} is a symbolic link to {path.resolve()}, outside the source "
                    f"{directory}: copy the image into the tree, or remove the link"
                )
            _check_image(path)
            stem = path.relative_to(class_dir).with_suffix("").as_posix()
            records.append(
                SourceRecord(
                    f"{prefix}{class_dir.name}/{stem}", class_dir.name, _loader(path), split
                )
            )
    return records


def _check_image(path: Path) -> None:
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise SourceError(
            f"corrupt image {path} ({exc.__class__.__name__}: {exc}); remove or replace it "
            "and run again"
        ) from None


def _loader(path: Path) -> Callable[[], Image.Image]:
    def load_image() -> Image.Image:
        with Image.open(path) as image:
            image.load()
            return image.copy()

    return load_image
