"""Data sources: digits offline, CIFAR-10 from a tarball in the official format, ImageFolder."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from processing.sources import SourceError, load_source, parse_source
from tests.helpers import write_cifar_tarball


def test_cifar10_tarball_in_official_format(tmp_path: Path) -> None:
    tarball = tmp_path / "cifar-10-python.tar.gz"
    batches = write_cifar_tarball(tarball)
    records = load_source(parse_source(f"cifar10:{tarball}"), tmp_path)
    assert len(records) == 24
    assert sum(r.official_split == "test" for r in records) == 4
    first = next(r for r in records if r.record_id == "cifar10-databatch1-00000")
    image = first.load()
    assert image.size == (32, 32) and image.mode == "RGB"
    raw = np.asarray(batches["data_batch_1"][b"data"])[0]
    expected = raw.reshape(3, 32, 32).transpose(1, 2, 0)
    assert np.array_equal(np.asarray(image), expected)
    labels = np.asarray(batches["data_batch_1"][b"labels"])
    assert first.label == ["airplane", "automobile", "bird"][int(labels[0])]


def test_corrupt_cifar_tarball_is_a_clear_error(tmp_path: Path) -> None:
    tarball = tmp_path / "cifar-10-python.tar.gz"
    tarball.write_bytes(b"\x1f\x8b garbage that is not a tarball")
    with pytest.raises(SourceError, match="corrupt"):
        load_source(parse_source(f"cifar10:{tarball}"), tmp_path)


def test_cifar_pickle_cannot_run_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    tarball = tmp_path / "evil.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]:
            data = pickle.dumps({b"data": Evil()})
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    with pytest.raises(SourceError, match="forbidden object"):
        load_source(parse_source(f"cifar10:{tarball}"), tmp_path)


def test_digits_are_the_real_bundled_images(tmp_path: Path) -> None:
    records = load_source(parse_source("digits"), tmp_path)
    assert len(records) == 1797
    assert sorted({r.label for r in records}) == [str(i) for i in range(10)]
    assert records[0].load().size == (8, 8)


def test_imagefolder_reads_classes_and_rejects_corrupt_images(tmp_path: Path) -> None:
    root = tmp_path / "images"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (10, 10), (i * 40, 0, 0)).save(root / label / f"{i}.jpg")
    records = load_source(parse_source(f"imagefolder:{root}"), tmp_path)
    assert sorted(r.record_id for r in records)[:2] == ["cat/0", "cat/1"]
    (root / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(SourceError, match=r"corrupt image .*broken\.png"):
        load_source(parse_source(f"imagefolder:{root}"), tmp_path)


@pytest.mark.parametrize("spec", ["mnist", "imagefolder", "digits:/tmp/x"])
def test_bad_source_specs(spec: str) -> None:
    with pytest.raises(SourceError):
        parse_source(spec)
