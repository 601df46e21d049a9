"""Models that carry a patient's pixels in their own files.

Models registered before the training job made its input example synthetic logged two real
test scans, transformed, as MLflow's `input_example.json` and `serving_input_example.json`:
a copy of a record inside the model, in every `model.tar.gz` and endpoint made from it, and
covered by its digests. Deleting those files would break the model's signature and digest,
so an erasure does not edit models: it finds the versions whose example holds one of the
patient's images (each array in the example files compared with the image as the network
sees it) and names them, to be re-registered or retired.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lineage.config import Settings
from lineage.errors import LineageError

EXAMPLE_FILES = ("input_example.json", "serving_input_example.json")
CHANNELS = 3
TOLERANCE = 1e-4  # JSON floats round-trip float32 values to well within this


@dataclass(frozen=True)
class CarryingModel:
    """A model version whose example files hold some of the patient's images."""

    model: str  # NAME/VERSION
    files: list[str]
    scans: list[str]  # md5s of the patient's objects found in them

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "files": self.files, "scans": self.scans}


def models_carrying(
    settings: Settings, models: Sequence[str], images: Mapping[str, bytes]
) -> list[CarryingModel]:
    """Which of `models` (NAME/VERSION) carry any of `images` (object md5 -> encoded image
    bytes) in their example files."""
    if not models or not images:
        return []
    found = []
    with tempfile.TemporaryDirectory(prefix="lineage-examples-") as tmp:
        for ref in models:
            examples = _example_arrays(settings, ref, Path(tmp) / ref.replace("/", "_"))
            held = {
                name: {md5 for md5, data in images.items() if _holds(arrays, data)}
                for name, arrays in examples.items()
            }
            scans = sorted(set().union(*held.values())) if held else []
            if scans:
                found.append(CarryingModel(ref, [n for n, md5s in held.items() if md5s], scans))
    return found


def _example_arrays(settings: Settings, ref: str, dst: Path) -> dict[str, list[np.ndarray]]:
    """The example files a version has, each with every image-shaped array in it. A version
    whose files cannot be listed or read stops the erasure: it may carry the patient."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    # the repository resolves `models:/` to the version's source (`runs:/`, a logged model)
    # through the process's tracking and registry URIs
    mlflow.set_tracking_uri(settings.mlflow_uri)
    mlflow.set_registry_uri(settings.mlflow_uri)
    found: dict[str, list[np.ndarray]] = {}
    dst.mkdir(parents=True, exist_ok=True)
    try:
        repository = ModelsArtifactRepository(f"models:/{ref}")
        entries = repository.list_artifacts(None)  # type: ignore[no-untyped-call]
        listed = {Path(entry.path).name for entry in entries}
        for name in EXAMPLE_FILES:
            if name not in listed:
                continue
            local = Path(repository.download_artifacts(name, str(dst)))  # type: ignore[no-untyped-call]
            found[name] = list(_image_arrays(json.loads(local.read_text())))
    except (MlflowException, OSError, ValueError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        raise LineageError(
            f"the files of {ref} cannot be read to see whether they carry the patient's "
            f"pixels ({message[:200]})",
            "an erasure must see every copy: check MLflow and its artifact store, then retry",
        ) from None
    return found


def _image_arrays(document: Any) -> Iterator[np.ndarray]:
    """Every array in a parsed example document that reshapes to images (N x 3 x S x S)."""
    if isinstance(document, dict):
        for value in document.values():
            yield from _image_arrays(value)
        return
    if not isinstance(document, list) or not document:
        return
    try:
        array = np.asarray(document, dtype=np.float32)
    except (ValueError, TypeError):
        for value in document:
            yield from _image_arrays(value)
        return
    if array.ndim >= 3 and array.shape[-3] == CHANNELS and array.shape[-1] == array.shape[-2]:
        yield array.reshape(-1, *array.shape[-3:])


def _holds(arrays: list[np.ndarray], image: bytes) -> bool:
    from PIL import Image, UnidentifiedImageError

    from lineage.transforms import to_array

    try:
        decoded = Image.open(io.BytesIO(image))
        decoded.load()
    except (UnidentifiedImageError, OSError):
        return False
    seen: dict[int, np.ndarray] = {}
    for batch in arrays:
        size = batch.shape[-1]
        if size not in seen:
            seen[size] = to_array(decoded, size)
        if any(np.allclose(item, seen[size], atol=TOLERANCE) for item in batch):
            return True
    return False
