"""Load `/opt/ml/model` (the extracted model.tar.gz) once per worker, or refuse clearly.

The directory holds what the training job wrote: an MLflow pytorch model, `lineage.json`
(architecture, classes, image size, data lineage, the digests of the model's bytes),
`model.onnx` (served by ONNX Runtime) and `weights.pt` (a plain state dict, loaded with
``weights_only=True`` when the torch path serves: no pickled code runs). The bytes that are
served must hash to the digests `lineage.json` records, or the server does not start.

With `LINEAGE_TRUSTED_KEYS` set (PEM text or a file of public keys: no secret), the model
must also be signed by one of those keys (`model.sig` and the SLSA provenance, see
`lineage.attest.checks`) and its `lineage.json` must repeat the signed training-time facts
(so swapped class names are refused too); the signer's key id and the provenance's digest
are then in `/lineage` and every answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.backends import Backend, OnnxBackend, TorchBackend, torch_available
from lineage import contract
from lineage.hashing import file_sha256
from lineage.record import SERVED_KEYS

ARCHITECTURE = "mobilenet_v3_small"
LINEAGE_FILE = contract.MODEL_LINEAGE_FILE
WEIGHTS_FILE = contract.MODEL_WEIGHTS_FILE
ONNX_FILE = contract.MODEL_ONNX_FILE
LINEAGE_KEYS = SERVED_KEYS


class ModelDirError(Exception):
    """The model directory cannot be served; the message says what is wrong."""


@dataclass(frozen=True)
class LoadedModel:
    backend: Backend
    classes: list[str]
    image_size: int
    lineage: dict[str, Any]
    weights_sha256: str = ""  # the digest of what is served (weights.pt or model.onnx's source)
    onnx_sha256: str = ""
    signed: dict[str, str] = field(default_factory=dict)  # signer_key_id, attestation_sha256

    @property
    def served_lineage(self) -> dict[str, Any]:
        """`GET /lineage`: lineage.json plus the digests of the files actually loaded, so a
        swapped model.tar.gz is told apart from the registered one (`lineage trace`)."""
        return {
            **self.lineage,
            "weights_sha256": self.weights_sha256,
            "onnx_sha256": self.onnx_sha256,
            "backend": self.backend.name,
            "signed": bool(self.signed),
            **self.signed,
        }

    @property
    def summary(self) -> dict[str, Any]:
        """The lineage every prediction carries (and who signed the model, when checked)."""
        return {**{key: self.lineage.get(key) for key in LINEAGE_KEYS}, **self.signed}


def load_model_dir(model_dir: Path, threads: int = 1, trusted_keys: str = "") -> LoadedModel:
    """The model, loaded and checked; `trusted_keys` (PEM or a path): its signature too."""
    if not model_dir.is_dir():
        raise ModelDirError(f"model directory {model_dir} does not exist")
    signed = check_signature(model_dir, trusted_keys) if trusted_keys.strip() else {}
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
    weights_sha256 = _checked(weights, lineage.get("weights_sha256"), lineage_path, "weights")
    onnx = model_dir / ONNX_FILE
    if onnx.is_file():
        onnx_sha256 = _checked(onnx, lineage.get("onnx_sha256"), lineage_path, "ONNX model")
        try:
            backend: Backend = OnnxBackend(onnx, threads)
        except Exception as exc:  # noqa: BLE001 - any ORT load error: ModelDirError
            raise ModelDirError(f"cannot load {onnx}: {str(exc)[:300]}") from None
        return LoadedModel(
            backend,
            [str(c) for c in classes],
            image_size,
            lineage,
            weights_sha256,
            onnx_sha256,
            signed,
        )
    if not torch_available():
        raise ModelDirError(
            f"{model_dir} has no {ONNX_FILE} (the model was registered before the training job "
            f"exported ONNX) and this image has no torch to serve {WEIGHTS_FILE}: retrain the "
            "model with this version of `lineage train`, or serve it where torch is installed "
            "(`lineage deploy --runtime process`)"
        )
    try:
        backend = TorchBackend(weights, len(classes), threads)
    except Exception as exc:  # noqa: BLE001 - any torch load error: ModelDirError
        raise ModelDirError(f"cannot load {weights}: {str(exc)[:300]}") from None
    return LoadedModel(
        backend, [str(c) for c in classes], image_size, lineage, weights_sha256, signed=signed
    )


def check_signature(model_dir: Path, trusted_keys: str) -> dict[str, str]:
    """Refuse a model that is unsigned, signed by no trusted key, changed since it was
    signed, or whose lineage.json differs from the signed facts; name the file."""
    from lineage.attest.checks import lineage_disagreements, verify_model
    from lineage.attest.keys import AttestationError, TrustStore
    from lineage.errors import ConfigError

    try:
        trust = TrustStore.from_value(trusted_keys)
    except ConfigError as exc:
        raise ModelDirError(f"LINEAGE_TRUSTED_KEYS: {exc}") from None
    try:
        verified = verify_model(model_dir, trust)
    except AttestationError as exc:
        raise ModelDirError(f"the model's signature does not hold: {exc}") from None
    lineage_path = model_dir / LINEAGE_FILE
    try:
        stored = json.loads(lineage_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelDirError(f"{lineage_path} is unreadable ({exc})") from None
    differences = lineage_disagreements(verified.provenance, stored)
    if differences:
        raise ModelDirError(
            f"{lineage_path} does not repeat what the training job signed: "
            + "; ".join(differences[:4])
        )
    return verified.served()


def _checked(path: Path, recorded: object, lineage_path: Path, what: str) -> str:
    """The file's sha256, after refusing a missing file or one that is not the trained one."""
    if not path.is_file():
        raise ModelDirError(f"{path} is missing: the model directory has no {what}")
    if not recorded:
        raise ModelDirError(
            f"{lineage_path} records no digest of the {what} ({path.name}), so it cannot be "
            "proven to be the trained one: retrain the model with this version of `lineage train`"
        )
    digest = file_sha256(path)
    if digest != recorded:
        swapped = "were swapped after training; refusing to serve them"
        if not what.endswith("s"):
            swapped = "was swapped after training; refusing to serve it"
        raise ModelDirError(
            f"{path} hashes to {digest}, but {lineage_path} records {recorded}: the {what} "
            f"{swapped}"
        )
    return digest
