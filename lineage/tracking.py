"""The MLflow side of the lineage: where runs are logged and what they are tagged with."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from lineage.errors import LineageError
from lineage.redact import redact_url

log = logging.getLogger("lineage.tracking")

STAGE_TAG = "lineage.stage"
_SEARCHABLE_TAG = re.compile(r"[A-Za-z0-9._/+-]+")
DEFAULT_EXPERIMENT = "model-lineage"


class TrackingError(LineageError):
    """The MLflow tracking server cannot be used."""


def quiet_arn_plugin(uri: str) -> None:
    """The sagemaker-mlflow plugin (in the images, for MLflow App ARNs) adds its request
    headers to *every* MLflow call and logs a warning per call when the tracking URI is not an
    ARN. Its headers only matter for ARNs: elsewhere, silence that logger."""
    if not uri.startswith("arn:"):
        logging.getLogger("mlflow.tracking.request_header.registry").setLevel(logging.ERROR)


@functools.cache
def _http() -> httpx.Client:
    """One client per process: building one loads the CA bundle (~40 ms), per call."""
    return httpx.Client()


def check_reachable(uri: str, timeout: float = 10.0) -> None:
    """Fail early (before anything is published) when an HTTP tracking server is down."""
    quiet_arn_plugin(uri)
    if not uri.startswith(("http://", "https://")):
        return  # file stores, databricks, SageMaker ARNs: the client checks those itself
    try:
        response = _http().get(uri.rstrip("/") + "/health", timeout=timeout)
    except httpx.HTTPError as exc:
        raise TrackingError(
            f"MLflow tracking server {redact_url(uri)} is unreachable ({exc.__class__.__name__})",
            "start it (`lineage stack up`) or fix MLFLOW_TRACKING_URI",
        ) from None
    if not response.is_success:
        raise TrackingError(
            f"MLflow tracking server {redact_url(uri)} answered {response.status_code} on /health",
            "check the server's log",
        )


def log_run(
    *,
    uri: str,
    experiment: str,
    run_name: str,
    stage: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
    artifacts: list[Path] | None = None,
) -> str:
    """Log one finished run; return its id. Param values are redacted if they are URLs."""
    import mlflow

    quiet_arn_plugin(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.set_tags({STAGE_TAG: stage, **(tags or {})})
        mlflow.log_params({k: redact_url(str(v)) for k, v in params.items()})
        if metrics:
            mlflow.log_metrics(dict(metrics))
        for artifact in artifacts or []:
            mlflow.log_artifact(str(artifact))
    return str(run.info.run_id)


def published_commit(uri: str, experiment: str, tag: str) -> str | None:
    """The commit the processing run that published `tag` recorded, when that run is in
    `experiment` (None when no such run is known: data published elsewhere)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    if not _SEARCHABLE_TAG.fullmatch(tag):
        return None  # a name the filter language cannot quote: the git server's tag decides
    client = mlflow.MlflowClient(uri)
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return None
        runs = client.search_runs(
            [found.experiment_id],
            filter_string=f"tags.`{STAGE_TAG}` = 'processing' and tags.dvc_tag = '{tag}'",
            max_results=10,
        )
    except MlflowException as exc:
        raise TrackingError(
            f"cannot look up the processing run of {tag}: {exc.message}", "check MLflow"
        ) from None
    commits = {str(run.data.params.get("data_git_commit_id", "")) for run in runs} - {""}
    if len(commits) > 1:
        raise TrackingError(
            f"processing runs of {tag} recorded different commits: {sorted(commits)}",
            "the tracking server's record of this dataset is inconsistent: investigate",
        )
    return commits.pop() if commits else None
