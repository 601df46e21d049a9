"""Is this registered model what its run made? The checks every consumer of a model runs.

`deploy` and `promote` refuse a version that fails any of them; `trace` reports each one.
A version is whole when its run finished, the run recorded the complete lineage record,
the version's tags repeat that record exactly (they are written in the call that creates
the version, so a version without them was not made by our training job, or was tampered
with), and the model files hash to the digests the run recorded when it trained them, not
to whatever the artifact store holds now.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lineage import contract
from lineage.check import Check, agree
from lineage.errors import LineageError
from lineage.hashing import file_sha256
from lineage.record import Disagreement, LineageRecord, model_digest
from lineage.registry import RegisteredVersion, RunRecord, get_run

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

FINISHED = "FINISHED"
__all__ = ["Check", "ModelIntegrityError", "agree", "checked_run", "model_dir_checks", "require"]


class ModelIntegrityError(LineageError):
    """A model version's record is incomplete or does not match its bytes: not served."""


def run_state_checks(run: RunRecord) -> list[Check]:
    """The run finished, and was not deleted (a deleted run's artifacts go at the next
    `mlflow gc`: whatever is built on it is about to lose its evidence)."""
    return [
        Check(
            "run status",
            run.status == FINISHED,
            f"run {run.run_id} is {run.status}"
            + ("" if run.status == FINISHED else ": training did not complete"),
        ),
        Check(
            "run lifecycle",
            run.lifecycle == "active",
            f"run {run.run_id} is {run.lifecycle}"
            + (
                ""
                if run.lifecycle == "active"
                else ": its artifacts are removed at the next `mlflow gc`; restore it "
                "(`mlflow runs restore`) or retire the versions made from it"
            ),
        ),
    ]


def version_checks(version: RegisteredVersion, run: RunRecord) -> list[Check]:
    """The version's run finished and recorded everything; its tags repeat the run."""
    record = LineageRecord.from_run(run)
    checks = run_state_checks(run)
    missing = record.missing()
    checks.append(
        Check(
            "run record",
            not missing,
            f"run {run.run_id} lacks {', '.join(missing)} (trained before digests were "
            "recorded, or not by `lineage train`)"
            if missing
            else f"run {run.run_id} recorded {len(record.required)} lineage facts",
        )
    )
    differences = record.disagreements(LineageRecord.from_version(version))
    checks.append(
        Check(
            "registry tags",
            not differences,
            f"{version.ref}: " + "; ".join(str(d) for d in differences)
            if differences
            else f"{version.ref} tags repeat the run's {len(record.facts())} facts",
        )
    )
    return checks


def model_dir_checks(run: RunRecord, model_dir: Path, what: str) -> list[Check]:
    """The model files (`what`: where they came from) against the digests the run recorded,
    and their `lineage.json` against the run."""
    record = LineageRecord.from_run(run)
    weights = model_dir / contract.MODEL_WEIGHTS_FILE
    actual_weights = file_sha256(weights) if weights.is_file() else "missing"
    checks = [
        agree(
            "model weights",
            f"sha256 of {what} {contract.MODEL_WEIGHTS_FILE} vs the run's record",
            record.weights_sha256 or "not recorded",
            actual_weights,
        ),
        agree(
            "model files",
            f"digest of {what} model files vs the run's record",
            record.model_sha256 or "not recorded",
            model_digest(model_dir),
        ),
    ]
    if record.onnx_sha256:
        onnx = model_dir / contract.MODEL_ONNX_FILE
        checks.append(
            agree(
                "model onnx",
                f"sha256 of {what} {contract.MODEL_ONNX_FILE} vs the run's record",
                record.onnx_sha256,
                file_sha256(onnx) if onnx.is_file() else "missing",
            )
        )
    try:
        stored = LineageRecord.read(model_dir)
    except (OSError, ValueError) as exc:
        checks.append(Check("model lineage.json", False, f"{what} lineage.json: {exc}"))
        return checks
    differences = record.disagreements(stored)
    if stored.run_id != run.run_id:
        differences.append(Disagreement("run_id", run.run_id, stored.run_id or None))
    checks.append(
        Check(
            "model lineage.json",
            not differences,
            f"{what} lineage.json: " + "; ".join(str(d) for d in differences)
            if differences
            else f"{what} lineage.json repeats the run's record",
        )
    )
    return checks


def require(checks: list[Check], subject: str, action: str) -> None:
    """Raise naming every failed check (deploy and promote use this)."""
    failed = [c for c in checks if not c.ok]
    if failed:
        raise ModelIntegrityError(
            f"{subject} is not {action}: " + "; ".join(f"{c.name}: {c.detail}" for c in failed),
            "its lineage cannot be proven: retrain it with `lineage train`, or investigate "
            "with `lineage trace --model`",
        )


def checked_run(client: MlflowClient, registered: RegisteredVersion) -> RunRecord:
    """The version's run, after refusing a version whose run did not finish, whose record
    is incomplete, or whose tags disagree with the run (deploy and promote both ask)."""
    if not registered.run_id:
        raise ModelIntegrityError(
            f"{registered.ref} has no source run: its lineage is unknown",
            "register models from `lineage train` runs only",
        )
    run = get_run(client, registered.run_id)
    require(version_checks(registered, run), registered.ref, "deployable")
    return run
