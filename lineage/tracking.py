"""The MLflow side of the lineage: where runs are logged and what they are tagged with."""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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


# MLflow's client retries a dead server 7 times with exponential backoff (over 8 minutes,
# seen here) and waits 120 s per request: a job would hang long after its server is gone.
# These bounds make a dead server fail a call in about 30 s and a hung one in a few minutes.
CLIENT_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    # MLflow's usage telemetry: a background thread that phones home (unreachable here) and
    # whose race at start-up was seen failing a job as "the tracking server stopped answering"
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def bound_client_waits() -> None:
    """Apply `CLIENT_LIMITS` to this process (a value the user set wins)."""
    for key, value in CLIENT_LIMITS.items():
        os.environ.setdefault(key, value)


def unreachable(exc: BaseException, uri: str | None = None) -> bool:
    """Did an MLflow call fail because the server did not answer (as opposed to refusing)?

    The client's own failures look alike ("API request to ... failed"); with `uri`, the
    server is asked once more (`/health`): one that answers did not stop answering, and the
    error is the client's, reported as itself."""
    import requests
    from mlflow.exceptions import MlflowException

    looks_down = isinstance(exc, requests.RequestException) or (
        isinstance(exc, MlflowException)
        and "API request to" in (text := str(getattr(exc, "message", exc)))
        and "failed" in text
    )
    if not looks_down or uri is None:
        return looks_down
    try:
        check_reachable(uri, timeout=5)
    except TrackingError:
        return True
    return False


@contextmanager
def tracked_run(uri: str, run_name: str) -> Iterator[Any]:
    """An MLflow run that ends FINISHED only when its block completes: on any failure it is
    ended FAILED (best effort, bounded), and a server that stopped answering is named in
    the error with what to do next, instead of a bare connection traceback."""
    import mlflow

    run = mlflow.start_run(run_name=run_name)
    try:
        yield run
    except BaseException as exc:
        ended = _end_failed(mlflow)
        if unreachable(exc, uri):
            state = "was marked FAILED" if ended else "stays RUNNING until MLflow is back"
            raise TrackingError(
                f"the MLflow tracking server at {redact_url(uri)} stopped answering "
                f"({str(getattr(exc, 'message', exc))[:200]})",
                f"run {run.info.run_id} {state}; deploy and promote refuse anything an "
                "unfinished run registered. Start MLflow (`lineage stack up`) and run the job "
                "again",
            ) from None
        raise
    mlflow.end_run()


def _end_failed(mlflow: Any) -> bool:
    try:
        mlflow.end_run(status="FAILED")
    except Exception as exc:  # noqa: BLE001 - best effort: the job's own error is reported
        log.warning("could not mark the run FAILED: %s", str(exc)[:200])
        return False
    return True


def fail_unfinished_runs(uri: str, job_name: str) -> list[str]:
    """Runs of `job_name` still RUNNING after its job ended (a crash, a dead server) are
    marked FAILED, so nothing reads them as in progress. Best effort: returns their ids."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    try:
        check_reachable(uri, timeout=5)
        client = MlflowClient(uri)
        experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
        runs = client.search_runs(
            experiments,
            filter_string=(
                f"tags.training_job_name = '{job_name}' and attributes.status = 'RUNNING'"
            ),
            max_results=10,
        )
        for run in runs:
            client.set_terminated(run.info.run_id, status="FAILED")
    except Exception as exc:  # noqa: BLE001 - best effort: the job's own error is reported
        log.warning("could not mark the runs of %s FAILED: %s", job_name, str(exc)[:200])
        return []
    return [run.info.run_id for run in runs]


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
    with logged_run(
        uri=uri,
        experiment=experiment,
        run_name=run_name,
        stage=stage,
        params=params,
        metrics=metrics,
        tags=tags,
        artifacts=artifacts,
    ) as run_id:
        return run_id


@contextmanager
def logged_run(
    *,
    uri: str,
    experiment: str,
    run_name: str,
    stage: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
    artifacts: list[Path] | None = None,
) -> Iterator[str]:
    """A run with everything logged, open while the block runs: FINISHED only when the
    block completes, FAILED otherwise (`tracked_run`). Param values are redacted if URLs."""
    import mlflow

    quiet_arn_plugin(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    with tracked_run(uri, run_name) as run:
        mlflow.set_tags({STAGE_TAG: stage, **(tags or {})})
        mlflow.log_params({k: redact_url(str(v)) for k, v in params.items()})
        if metrics:
            mlflow.log_metrics(dict(metrics))
        for artifact in artifacts or []:
            mlflow.log_artifact(str(artifact))
        yield str(run.info.run_id)


def _processing_runs(uri: str, experiment: str, tag: str) -> list[Any]:
    """The processing runs in `experiment` that published `tag` (none when the experiment
    does not exist); MLflow's errors pass through for the caller to word."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return list(
        client.search_runs(
            [found.experiment_id],
            filter_string=f"tags.`{STAGE_TAG}` = 'processing' and tags.dvc_tag = '{tag}'",
            max_results=10,
        )
    )


def published_commit(uri: str, experiment: str, tag: str) -> str | None:
    """The commit the processing run that published `tag` recorded, when that run is in
    `experiment` (None when no such run is known: data published elsewhere)."""
    from mlflow.exceptions import MlflowException

    if not _SEARCHABLE_TAG.fullmatch(tag):
        return None  # a name the filter language cannot quote: the git server's tag decides
    try:
        runs = _processing_runs(uri, experiment, tag)
    except MlflowException as exc:
        raise TrackingError(
            f"cannot look up the processing run of {tag}: {exc.message}", "check MLflow"
        ) from None
    unfinished = [r.info.run_id for r in runs if r.info.status != "FINISHED"]
    if unfinished and not any(r.info.status == "FINISHED" for r in runs):
        raise TrackingError(
            f"the processing run that published {tag} ({unfinished[0]}) did not finish: the "
            "version was not completed",
            "do not train on it; publish the version again with `lineage process`",
        )
    commits = {str(run.data.params.get("data_git_commit_id", "")) for run in runs} - {""}
    if len(commits) > 1:
        raise TrackingError(
            f"processing runs of {tag} recorded different commits: {sorted(commits)}",
            "the tracking server's record of this dataset is inconsistent: investigate",
        )
    return commits.pop() if commits else None


def processing_artifact(uri: str, experiment: str, tag: str, name: str) -> str | None:
    """The text of artifact `name` that the processing run of `tag` logged (None when no
    such run or artifact is known: data published elsewhere, or before it was logged)."""
    import tempfile

    import mlflow
    from mlflow.exceptions import MlflowException

    if not _SEARCHABLE_TAG.fullmatch(tag):
        return None
    client = mlflow.MlflowClient(uri)
    try:
        for run in _processing_runs(uri, experiment, tag):
            listed = {a.path for a in client.list_artifacts(run.info.run_id)}
            if name not in listed:
                continue
            with tempfile.TemporaryDirectory(prefix="lineage-artifact-") as tmp:
                path = client.download_artifacts(run.info.run_id, name, tmp)
                return Path(path).read_text()
    except MlflowException as exc:
        raise TrackingError(
            f"cannot read {name} of the processing run of {tag}: {exc.message}", "check MLflow"
        ) from None
    return None
