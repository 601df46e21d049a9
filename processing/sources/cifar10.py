"""CIFAR-10 from the official python tarball (``cifar-10-python.tar.gz``), local or on S3,
or downloaded by torchvision where the network allows.

The official format is pickle. Unpickling runs code, so we read it with an unpickler that
only builds the plain types and numpy arrays the format contains: a tampered tarball fails
with a clear error instead of executing anything.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from processing.sources.base import SourceError, SourceRecord

TARBALL_NAME = "cifar-10-python.tar.gz"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden object {module}.{name} in CIFAR-10 batch")


def _unpickle(data: bytes) -> dict[bytes, Any]:
    loaded = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    if not isinstance(loaded, dict):
        raise pickle.UnpicklingError("batch is not a dict")
    return loaded


def download(target_dir: Path) -> Path:
    """Fetch the official tarball with torchvision (checks its md5). Fails without network."""
    from torchvision.datasets.utils import download_url

    try:
        download_url(CIFAR10_URL, str(target_dir), TARBALL_NAME, CIFAR10_MD5)
    except Exception as exc:  # noqa: BLE001 - any download failure gets the offline instructions
        raise SourceError(
            f"cannot download CIFAR-10 ({exc.__class__.__name__}: {exc}); on a machine without "
            "internet pass the official tarball with --source cifar10:PATH (local or s3://)"
        ) from None
    return target_dir / TARBALL_NAME


def load(tarball: Path) -> list[SourceRecord]:
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
            needed = [*_TRAIN_BATCHES, "test_batch", "batches.meta"]
            missing = [name for name in needed if name not in members]
            if missing:
                raise SourceError(
                    f"{tarball} is not the official CIFAR-10 python tarball: missing {missing}"
                )

            def read(name: str) -> dict[bytes, Any]:
                handle = archive.extractfile(members[name])
                assert handle is not None
                return _unpickle(handle.read())

            meta = read("batches.meta")
            label_names = [n.decode() for n in meta[b"label_names"]]
            records: list[SourceRecord] = []
            for split, batches in (("train", _TRAIN_BATCHES), ("test", ["test_batch"])):
                for batch_name in batches:
                    batch = read(batch_name)
                    records.extend(_batch_records(batch, label_names, split, batch_name))
    except SourceError:
        raise
    except (
        tarfile.TarError,
        EOFError,
        OSError,
        pickle.UnpicklingError,
        KeyError,
        ValueError,
        IndexError,
    ) as exc:
        raise SourceError(
            f"{tarball} is corrupt or not the official CIFAR-10 python tarball "
            f"({exc.__class__.__name__}: {exc}); download it again from {CIFAR10_URL}"
        ) from None
    return records


def _batch_records(
    batch: dict[bytes, Any], label_names: list[str], split: str, batch_name: str
) -> list[SourceRecord]:
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = [int(x) for x in batch[b"labels"]]
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != data.shape[0]:
        raise ValueError(f"{batch_name}: expected N x 3072 pixels and N labels")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    out = []
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):

        def loader(img: np.ndarray = image) -> Image.Image:
            return Image.fromarray(np.ascontiguousarray(img), mode="RGB")

        record_id = f"cifar10-{batch_name.replace('_', '')}-{index:05d}"
        out.append(SourceRecord(record_id, label_names[label], loader, split))
    return out
