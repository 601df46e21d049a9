"""Load `/opt/ml/model` (the extracted model.tar.gz) once per worker, or refuse clearly.

The directory holds what the training job wrote: an MLflow pytorch model, `lineage.json`
(architecture, classes, image size, data lineage) and `weights.pt`, a plain state dict that
is loaded with ``weights_only=True``: serving never unpickles code from a model artifact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lineage import contract
from lineage.architecture import ARCHITECTURE, build_network
from lineage.hashing import file_sha256
from lineage.record import SERVED_KEYS

LINEAGE_FILE = contract.MODEL_LINEAGE_FILE
WEIGHTS_FILE = contract.MODEL_WEIGHTS_FILE
LINEAGE_KEYS = SERVED_KEYS


class ModelDirError(Exception):
    """The model directory cannot be served; the message says what is wrong."""


@dataclass(frozen=True)
class LoadedModel:
    network: nn.Module
    classes: list[str]
    image_size: int
    lineage: dict[str, Any]
    weights_sha256: str = ""

    @property
    def served_lineage(self) -> dict[str, Any]:
        """`GET /lineage`: lineage.json plus the hash of the weights actually loaded, so a
        swapped model.tar.gz is told apart from the registered one (`lineage trace`)."""
        return {**self.lineage, "weights_sha256": self.weights_sha256}

    @property
    def summary(self) -> dict[str, Any]:
        """The lineage every prediction carries."""
        return {key: self.lineage.get(key) for key in LINEAGE_KEYS}


def load_model_dir(model_dir: Path) -> LoadedModel:
    if not model_dir.is_dir():
        raise ModelDirError(f"model directory {model_dir} does not exist")
    lineage_path = model_dir / LINEAGE_FILE
    try:
        lineage = json.loads(lineage_path.read_text())
    except FileNotFoundError:
        raise ModelDirError(
            f"{lineage_path} is missing: not a model written by the lineage training job"
        ) from None
    except json.JSONDecodeError as exc:
        raise ModelDirError(f"{lineage_path} is not valid JSON ({exc})") from None
    classes = lineage.get("classes")
    image_size = lineage.get("image_size")
    if not isinstance(classes, list) or not classes or not isinstance(image_size, int):
        raise ModelDirError(f"{lineage_path} lacks 'classes' or 'image_size'")
    if lineage.get("model_architecture", ARCHITECTURE) != ARCHITECTURE:
        raise ModelDirError(f"unsupported architecture {lineage.get('model_architecture')!r}")
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelDirError(f"{weights} is missing: the model directory has no weights")
    weights_sha256 = file_sha256(weights)
    recorded = lineage.get("weights_sha256")
    if not recorded:
        raise ModelDirError(
            f"{lineage_path} records no weights_sha256, so the weights cannot be proven to be "
            "the trained ones: retrain the model with this version of `lineage train`"
        )
    if weights_sha256 != recorded:
        raise ModelDirError(
            f"{weights} hashes to {weights_sha256}, but {lineage_path} records {recorded}: "
            "the weights were swapped after training; refusing to serve them"
        )
    network = build_network(len(classes))
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except Exception as exc:
        raise ModelDirError(f"cannot load {weights}: {str(exc)[:300]}") from None
    network.eval()
    return LoadedModel(network, [str(c) for c in classes], image_size, lineage, weights_sha256)
