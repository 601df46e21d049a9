"""`serve`: what SageMaker runs (``docker run IMAGE serve``).

The model directory is checked and loaded *before* the socket opens: a missing or corrupt
model exits non-zero with a clear message (SageMaker reports the failure) instead of a
server that answers 500 forever.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path

import uvicorn

from inference.app import create_app
from inference.backends import cpu_threads
from inference.codec import Limits
from inference.model import ModelDirError, load_model_dir
from inference.protocol import BoundedHttpToolsProtocol
from lineage import contract

log = logging.getLogger("lineage.inference")


# The server's settings are read here rather than through `lineage.config.env_float`: that
# one takes seconds > 0 and raises for a CLI to print, while these are counts and milliseconds
# (0 ms is a valid batching wait) and the server must exit with a message SageMaker reports.
def _int_env(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        sys.exit(f"{name}={raw!r} is not an integer")
    if value < minimum:
        sys.exit(f"{name}={raw!r} must be at least {minimum}")
    return value


def _float_env(name: str, default: float, minimum: float = 0.0) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        sys.exit(f"{name}={raw!r} is not a number")
    if not math.isfinite(value) or value < minimum:  # nan or inf would stall every batch
        sys.exit(f"{name}={raw!r} must be a finite number, at least {minimum:g}")
    return value


def model_threads(workers: int) -> int:
    """Intra-op threads per worker: the container's CPUs per worker less one, left to the
    event loop and image decoding. Letting the model take every core makes its threads fight
    the HTTP side (torch, measured on 2 cores: p50 16.5 ms with 2 threads, 10.5 ms with 1).
    `LINEAGE_MODEL_THREADS` (or the older `LINEAGE_TORCH_THREADS`) overrides it."""
    for name in ("LINEAGE_MODEL_THREADS", "LINEAGE_TORCH_THREADS"):
        configured = os.environ.get(name, "")
        if configured.isdigit() and int(configured) > 0:
            return int(configured)
    per_worker = max(1, cpu_threads() // max(1, workers))
    return max(1, per_worker - 1)


def trusted_keys() -> str:
    """`LINEAGE_TRUSTED_KEYS`: public keys a model must be signed by (empty: not checked)."""
    return os.environ.get(contract.TRUSTED_KEYS_ENV, "")


def model_dir_from_env() -> Path:
    return Path(os.environ.get("SM_MODEL_DIR") or contract.base_dir() / "model")


def main(argv: list[str] | None = None) -> None:
    """`serve [--model-dir DIR]` (SageMaker passes no options: /opt/ml/model)."""
    contract.configure_job_logging(sys.stdout)
    args = list(sys.argv[2:] if argv is None else argv)
    model_dir = model_dir_from_env()
    if args[:1] == ["--model-dir"] and len(args) == 2:
        model_dir = Path(args[1])
        os.environ["SM_MODEL_DIR"] = str(model_dir)  # for multi-worker processes
    elif args:
        sys.exit(f"unknown arguments {args}: usage: serve [--model-dir DIR]")
    port = _int_env("SAGEMAKER_BIND_TO_PORT", 8080)
    workers = _int_env("SAGEMAKER_MODEL_SERVER_WORKERS", 1)
    max_batch = _int_env("LINEAGE_MAX_BATCH", 32)
    max_wait_ms = _float_env("LINEAGE_MAX_BATCH_WAIT_MS", 2.0)
    try:
        limits = Limits.from_env()
    except ValueError as exc:
        sys.exit(f"cannot serve: {exc}")
    host = os.environ.get("LINEAGE_SERVE_HOST", "0.0.0.0")  # noqa: S104 - a container serves all
    try:
        model = load_model_dir(model_dir, model_threads(workers), trusted_keys())
    except ModelDirError as exc:
        log.error("cannot serve: %s", exc)
        sys.exit(f"cannot serve: {exc}")
    if model.signed:
        log.info(
            "signature verified: signed by key %s, provenance %s",
            model.signed["signer_key_id"][:16],
            model.signed["attestation_sha256"][:16],
        )
    log.info(
        "serving %s version %s (run %s, data %s) with %s on port %d, %d worker(s)",
        model.lineage.get("model_name"),
        model.lineage.get("model_version"),
        model.lineage.get("run_id"),
        model.lineage.get("data_git_commit_id"),
        model.backend.name,
        port,
        workers,
    )
    if workers == 1:
        app = create_app(model, max_batch=max_batch, max_wait_ms=max_wait_ms, limits=limits)
        uvicorn.run(
            app,
            host=host,
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=25,
            http=BoundedHttpToolsProtocol,
        )
    else:
        uvicorn.run(
            "inference.serve:app_factory",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            timeout_graceful_shutdown=25,
            http=BoundedHttpToolsProtocol,
        )


def app_factory() -> object:
    """For multi-worker uvicorn: each worker process loads its own model."""
    threads = model_threads(_int_env("SAGEMAKER_MODEL_SERVER_WORKERS", 1))
    return create_app(
        load_model_dir(model_dir_from_env(), threads, trusted_keys()),
        max_batch=_int_env("LINEAGE_MAX_BATCH", 32),
        max_wait_ms=_float_env("LINEAGE_MAX_BATCH_WAIT_MS", 2.0),
    )
