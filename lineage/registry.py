"""The MLflow side of every question: model references, registry versions and their runs.

A user names a model as ``NAME/VERSION`` (exact) or ``NAME@ALIAS`` (what production points
at), or names a run. Every query resolves that to one registry version and one run here, and
fails closed with the reason when the tracking server or the record is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lineage.errors import LineageError
from lineage.tracking import TrackingError, check_reachable

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str | None = None
    alias: str | None = None

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias else f"{self.name}/{self.version}"


def parse_model_ref(ref: str) -> ModelRef:
    """``NAME/VERSION`` or ``NAME@ALIAS``."""
    if "@" in ref:
        name, alias = ref.rsplit("@", 1)
        if name and alias:
            return ModelRef(name, alias=alias)
    elif "/" in ref:
        name, version = ref.rsplit("/", 1)
        if name and version.isdigit():
            return ModelRef(name, version=version)
    raise LineageError(f"bad model reference {ref!r}", "use NAME/VERSION or NAME@ALIAS")


@dataclass(frozen=True)
class RegisteredVersion:
    """One registry version, with every alias that points at it now."""

    name: str
    version: str
    run_id: str | None
    tags: dict[str, str]
    aliases: list[str]
    source: str
    created_ms: int

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"


@dataclass(frozen=True)
class RunRecord:
    """What a training run recorded: the params, tags and metrics lineage questions read."""

    run_id: str
    experiment_id: str
    run_name: str
    status: str
    start_ms: int
    end_ms: int | None
    params: dict[str, str]
    tags: dict[str, str] = field(repr=False)
    metrics: dict[str, float]
    lifecycle: str = "active"  # MLflow's lifecycle_stage: a "deleted" run loses its artifacts

    def param(self, name: str) -> str:
        """A param the chain needs; missing means the run was not made by our training job."""
        value = self.params.get(name)
        if value in (None, ""):
            raise LineageError(
                f"run {self.run_id} has no {name!r} param: its lineage is incomplete",
                "only runs of `lineage train` carry the full chain; retrain the model",
            )
        return str(value)


def mlflow_client(uri: str) -> MlflowClient:
    """A client for `uri`, after checking the server answers (fail fast, not after retries)."""
    import os

    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stdout is ours
    check_reachable(uri)
    return MlflowClient(uri)


@contextmanager
def _registry_errors(what: str, hint: str) -> Iterator[None]:
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise LineageError(f"{what}: {exc.message}", hint) from None


def _version_record(client: MlflowClient, name: str, version: str) -> RegisteredVersion:
    with _registry_errors(
        f"{name}/{version} is not in the model registry",
        "list versions in the MLflow UI, or check the name with `lineage trace --model`",
    ):
        registered = client.get_model_version(name, version)
        model = client.get_registered_model(name)
    aliases = sorted(alias for alias, v in (model.aliases or {}).items() if str(v) == version)
    return RegisteredVersion(
        name=name,
        version=str(registered.version),
        run_id=registered.run_id or None,
        tags=dict(registered.tags or {}),
        aliases=aliases,
        source=str(registered.source or ""),
        created_ms=int(registered.creation_timestamp or 0),
    )


def resolve(client: MlflowClient, ref: str | ModelRef) -> RegisteredVersion:
    """The registry version `ref` names (an alias is resolved to the version it points at)."""
    parsed = parse_model_ref(ref) if isinstance(ref, str) else ref
    version = parsed.version
    if parsed.alias is not None:
        with _registry_errors(
            f"{parsed} is not in the model registry",
            "set the alias with `lineage promote --model NAME/VERSION --alias ALIAS`",
        ):
            version = str(client.get_model_version_by_alias(parsed.name, parsed.alias).version)
    assert version is not None
    return _version_record(client, parsed.name, version)


def versions_of_run(client: MlflowClient, run_id: str) -> list[RegisteredVersion]:
    """Every registry version made from `run_id` (usually one; none for unregistered runs)."""
    with _registry_errors(f"cannot search the registry for run {run_id}", "check MLflow"):
        found = client.search_model_versions(f"run_id = '{run_id}'")
    return [_version_record(client, str(v.name), str(v.version)) for v in found]


def get_run(client: MlflowClient, run_id: str) -> RunRecord:
    with _registry_errors(
        f"run {run_id} is not on the tracking server",
        "check the run id (MLflow UI) and MLFLOW_TRACKING_URI / LINEAGE_MLFLOW_URI",
    ):
        run = client.get_run(run_id)
    return RunRecord(
        run_id=run.info.run_id,
        experiment_id=str(run.info.experiment_id),
        run_name=str(run.info.run_name or ""),
        status=str(run.info.status),
        start_ms=int(run.info.start_time or 0),
        end_ms=int(run.info.end_time) if run.info.end_time else None,
        params=dict(run.data.params),
        tags=dict(run.data.tags),
        metrics={k: float(v) for k, v in run.data.metrics.items()},
        lifecycle=str(run.info.lifecycle_stage or "active"),
    )


def metric_history(client: MlflowClient, run_id: str, key: str) -> list[float]:
    """A per-epoch metric, in step order."""
    with _registry_errors(f"cannot read metric {key} of run {run_id}", "check MLflow"):
        history = client.get_metric_history(run_id, key)
    return [float(m.value) for m in sorted(history, key=lambda m: (m.step, m.timestamp))]


def download_artifact(client: MlflowClient, run_id: str, path: str, dst: str) -> str:
    """A run artifact on local disk; a missing one is an error naming it (never skipped)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.download_artifacts(run_id, path, dst))
    except (MlflowException, OSError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        raise LineageError(
            f"artifact {path} of run {run_id} cannot be read ({message[:200]})",
            "the run's record is incomplete or the artifact store is unreachable; "
            "the lineage cannot be confirmed without it",
        ) from None


__all__ = [
    "ModelRef",
    "RegisteredVersion",
    "RunRecord",
    "TrackingError",
    "download_artifact",
    "get_run",
    "metric_history",
    "mlflow_client",
    "parse_model_ref",
    "resolve",
    "versions_of_run",
]
