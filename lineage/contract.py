"""The SageMaker container contracts, kept in one place (paths, config files, exit reasons).

Jobs run under `/opt/ml` in a container and under a temp directory with the local runner;
``SAGEMAKER_BASE_DIR`` (the inference toolkit's name for the same idea) selects the base, so
the job code is identical in both worlds.
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lineage.redact import redact_text

BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
DEFAULT_BASE_DIR = "/opt/ml"
MESSAGE_LIMIT = 1024  # SageMaker keeps the first 1 KiB of the exit message / failure reason

# Container paths a job description names (the platform creates them in the container).
PROCESSING_DIR = f"{DEFAULT_BASE_DIR}/processing/"  # every Processing LocalPath lies under it
PROCESSING_INPUT_DIR = f"{PROCESSING_DIR}input"  # ProcessingInput i: PROCESSING_INPUT_DIR/<i>
PROCESSING_OUTPUT_DIR = f"{PROCESSING_DIR}output"
CHECKPOINT_DIR = f"{DEFAULT_BASE_DIR}/checkpoints"  # CheckpointConfig's LocalPath
MODEL_ARCHIVE = "model.tar.gz"  # /opt/ml/model tarred (a training job's model, a deploy's)
OUTPUT_ARCHIVE = "output.tar.gz"  # /opt/ml/output/data tarred

# What our jobs leave for the runner and the server (names shared by writer and reader).
PROCESSING_RESULT_OUTPUT = "lineage"  # the ProcessingOutput that carries the job's result
PROCESSING_RESULT_DIR = "lineage"  # under /opt/ml/processing/output: result.json, manifest
PROCESSING_RESULT_FILE = "result.json"  # in PROCESSING_RESULT_DIR
TRAINING_RESULT_FILE = "result.json"  # under /opt/ml/output/data (tarred to output.tar.gz)
MODEL_LINEAGE_FILE = "lineage.json"  # in /opt/ml/model: the model knows its own lineage
MODEL_WEIGHTS_FILE = "weights.pt"  # in /opt/ml/model: plain state dict for the server
MODEL_ONNX_FILE = "model.onnx"  # in /opt/ml/model: the same weights for ONNX Runtime
CONSENT_INPUT_NAME = "consent"  # ProcessingInput: /opt/ml/processing/input/consent/snapshot.json
OPENLINEAGE_KEEP_DIR = "openlineage"  # under a job's result dir: the events it emitted, for replay
# Signing (lineage/attest): a job gets the *path* of its signing key (read-only bind mount in a
# container) or a KMS key id, never the key; the public keys it trusts; and an `evidence`
# input (the transparency log's signed head, the dataset statement it trains on).
SIGNING_KEY_FILE_ENV = "LINEAGE_SIGNING_KEY_FILE"
SIGNING_KMS_ENV = "LINEAGE_SIGNING_KMS_KEY_ID"
TRUSTED_KEYS_ENV = "LINEAGE_TRUSTED_KEYS"
SIGNING_KEY_MOUNT = "/run/lineage/signing-key.pem"  # where a container sees the key file
MODEL_SIGNATURE_FILE = "model.sig"  # in /opt/ml/model: OpenSSF model signing
MODEL_PROVENANCE_FILE = "provenance.dsse.json"  # in /opt/ml/model: SLSA provenance, signed
MODEL_DATASET_STATEMENT_FILE = "dataset.dsse.json"  # in /opt/ml/model: the dataset's statement
# written after training, so never signed bytes: exactly what `--ignore-paths` names for the
# stock `python -m model_signing verify` (lineage.json carries this list: model_signing_ignore)
MODEL_SIGNING_IGNORE = (MODEL_LINEAGE_FILE, "registered_model_meta")
ERASURES_INPUT_NAME = "erasures"  # ProcessingInput: erased.json (what must never come back)
ERASURES_FILE = "erased.json"
EVIDENCE_INPUT_NAME = "evidence"  # ProcessingInput / training channel: evidence.json
EVIDENCE_FILE = "evidence.json"


def image_identity() -> dict[str, str]:
    """The image a job runs in, when the runtime told it (`image_uri`, `image_digest`)."""
    identity = {
        "image_uri": os.environ.get("LINEAGE_IMAGE_URI", ""),
        "image_digest": os.environ.get("LINEAGE_IMAGE_DIGEST", ""),
        "image_revision": os.environ.get("LINEAGE_IMAGE_REVISION", ""),
    }
    return {key: value for key, value in identity.items() if value}


def base_dir() -> Path:
    return Path(os.environ.get(BASE_DIR_ENV) or DEFAULT_BASE_DIR)


@dataclass(frozen=True)
class ProcessingPaths:
    """`/opt/ml` as a Processing job sees it (note: config under /opt/ml/config)."""

    base: Path

    @classmethod
    def from_env(cls) -> ProcessingPaths:
        return cls(base_dir())

    @property
    def config_dir(self) -> Path:
        return self.base / "config"

    @property
    def job_config_file(self) -> Path:
        return self.config_dir / "processingjobconfig.json"

    @property
    def resource_config_file(self) -> Path:
        return self.config_dir / "resourceconfig.json"

    @property
    def input_dir(self) -> Path:
        return self.base / "processing" / "input"

    @property
    def output_dir(self) -> Path:
        return self.base / "processing" / "output"

    @property
    def work_dir(self) -> Path:
        """Scratch space on the job's volume (not an output: never uploaded)."""
        return self.base / "processing" / "work"

    @property
    def message_file(self) -> Path:
        return self.base / "output" / "message"


def read_json(path: Path) -> dict[str, Any] | None:
    """A SageMaker config file, or None when not running under SageMaker (or the runner)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


def tar_directory(source: Path, target: Path) -> Path:
    """Tar the *contents* of `source` (no leading dir), following symlinks, like SageMaker
    (model.tar.gz, output.tar.gz: the local runner's outputs and a deploy's model data)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w:gz", dereference=True) as archive:
        for child in sorted(source.iterdir()):
            archive.add(child, arcname=child.name)
    return target


def write_reason(path: Path, reason: str) -> None:
    """Write an exit message / failure reason: UTF-8 (non-UTF-8 fails the job), 1 KiB, with
    the credentials of any URL in it removed (SageMaker shows it to everyone who can
    describe the job)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = redact_text(reason).encode("utf-8")[:MESSAGE_LIMIT]
    path.write_text(encoded.decode("utf-8", errors="ignore"), encoding="utf-8")


@dataclass(frozen=True)
class TrainingPaths:
    """`/opt/ml` as a Training job sees it."""

    base: Path

    @classmethod
    def from_env(cls) -> TrainingPaths:
        return cls(base_dir())

    @property
    def config_dir(self) -> Path:
        return self.base / "input" / "config"

    @property
    def hyperparameters_file(self) -> Path:
        return self.config_dir / "hyperparameters.json"

    @property
    def input_data_config_file(self) -> Path:
        return self.config_dir / "inputdataconfig.json"

    @property
    def resource_config_file(self) -> Path:
        return self.config_dir / "resourceconfig.json"

    def channel_dir(self, channel: str) -> Path:
        return self.base / "input" / "data" / channel

    @property
    def model_dir(self) -> Path:
        return self.base / "model"

    @property
    def checkpoint_dir(self) -> Path:
        return self.base / "checkpoints"

    @property
    def output_data_dir(self) -> Path:
        return self.base / "output" / "data"

    @property
    def failure_file(self) -> Path:
        return self.base / "output" / "failure"

    @property
    def success_file(self) -> Path:
        return self.base / "output" / "success"

    @property
    def work_dir(self) -> Path:
        return self.base / "input" / "work"


class RedactingFormatter(logging.Formatter):
    """A job's log lines with the credentials of every URL removed (a job's log is kept,
    shipped to CloudWatch, read by people who must not see tokens)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def configure_job_logging(stream: Any) -> None:
    """The log setup every job shares: INFO lines, one format, redacted."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per health probe is noise


# -- multi-host training: how the hosts of one job meet (training.distributed) -------------
DEFAULT_RENDEZVOUS_PORT = 29500
RENDEZVOUS_PORT_ENV = "LINEAGE_RENDEZVOUS_PORT"
# the leader's address, where its host name does not resolve (the local process runtime)
RENDEZVOUS_ADDRESS_ENV = "LINEAGE_RENDEZVOUS_ADDRESS"
RENDEZVOUS_TIMEOUT_ENV = "LINEAGE_RENDEZVOUS_TIMEOUT"  # seconds every host has to join
COLLECTIVE_TIMEOUT_ENV = "LINEAGE_COLLECTIVE_TIMEOUT"  # seconds a collective waits for a peer
DIST_BACKEND_ENV = "LINEAGE_DIST_BACKEND"  # gloo | nccl (default: nccl on GPU, gloo on CPU)
