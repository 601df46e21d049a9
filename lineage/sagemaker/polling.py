"""Waiting on SageMaker: jobs until they end, outputs until they appear.

A training job runs for hours and is polled hundreds of times; one throttled Describe (AWS
throttles the control plane per account) must not fail the wait, and an AccessDenied must not
be retried for minutes. `retry_call` does the one thing right for both: it retries only the
kinds it is told to (transient by default, see `lineage.sagemaker.errors`) with exponential
backoff until a deadline, and fails at once, naming the code and the hint, on anything else.

The clock and the sleep are part of `Pacing`, so tests run a whole wait in microseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from lineage.errors import LineageError
from lineage.sagemaker.errors import AWS_FAILURES, AwsError, Kind, classify, failure
from lineage.sagemaker.inspection import log_group, log_streams

T = TypeVar("T")
TERMINAL = {"Completed", "Failed", "Stopped"}
Report = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class Pacing:
    """How a wait spends its time.

    `poll_s` separates two polls of something still running. After a transient failure the
    pause starts at `first_retry_s` and doubles up to `max_retry_s` (no jitter: one CLI
    process, not a fleet, is backing off). A wait without a deadline of its own (a job may
    run for days) bears a run of transient failures for `transient_s`, then gives up.
    """

    poll_s: float = 30.0
    first_retry_s: float = 1.0
    max_retry_s: float = 30.0
    transient_s: float = 300.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def backoff(self, retry: int) -> float:
        return float(min(self.max_retry_s, self.first_retry_s * 2**retry))


def retry_call(
    what: str,
    hint: str,
    function: Callable[..., T],
    *,
    pacing: Pacing,
    deadline: float | None = None,
    retry: Collection[Kind] = (Kind.TRANSIENT,),
    **kwargs: Any,
) -> T:
    """`function(**kwargs)`, retried on the `retry` kinds of failure until `deadline` (a
    `pacing.clock()` time; None: `pacing.transient_s` from now). Only for calls that are safe
    to repeat (Describe, List, Get). Any other failure, or the last one, raises `AwsError`."""
    limit = pacing.clock() + pacing.transient_s if deadline is None else deadline
    tries = 0
    while True:
        tries += 1
        try:
            return function(**kwargs)
        except AWS_FAILURES as exc:
            kind, now = classify(exc), pacing.clock()
            if kind not in retry or now >= limit:
                raise failure(what, exc, hint, tries=tries) from None
            pause = pacing.poll_s if kind is Kind.NOT_FOUND else pacing.backoff(tries - 1)
            pacing.sleep(max(0.0, min(pause, limit - now)))


def failure_message(kind: str, name: str, job: dict[str, Any], streams: list[str]) -> str:
    """One line for a job that ended badly: its status, SageMaker's reason, and where its log
    is (`streams` as `<group>/<stream>`; the group's pattern for the job when none)."""
    status = job.get("ProcessingJobStatus") or job.get("TrainingJobStatus")
    reason = job.get("FailureReason") or job.get("ExitMessage") or "no reason given"
    where = ", ".join(streams) if streams else f"{log_group(kind)}/{name}/*"
    return f"{kind} job {name} {str(status).lower()}: {reason} (log: {where})"


def _streams_for_failure(logs: Any, kind: str, name: str) -> list[str]:
    """The failed job's streams, if they can be listed: the job's own failure is the error to
    report, so a logs problem here only makes the message name the group instead."""
    if logs is None:
        return []
    try:
        return [f"{log_group(kind)}/{s}" for s in log_streams(logs, kind, name)]
    except AwsError:
        return []


def wait_job(
    sagemaker: Any,
    kind: str,
    name: str,
    *,
    pacing: Pacing,
    report: Report = _quiet,
    logs: Any = None,
) -> dict[str, Any]:
    """Poll until the job ends; report each status change; fail with the job's reason."""
    operation = "DescribeProcessingJob" if kind == "processing" else "DescribeTrainingJob"
    describe = (
        sagemaker.describe_processing_job
        if kind == "processing"
        else sagemaker.describe_training_job
    )
    key = "ProcessingJobName" if kind == "processing" else "TrainingJobName"
    status_key = "ProcessingJobStatus" if kind == "processing" else "TrainingJobStatus"
    last = None
    request: dict[str, Any] = {key: name}
    while True:
        job: dict[str, Any] = retry_call(
            f"{operation} {name}",
            f"check sagemaker:{operation} permission",
            describe,
            pacing=pacing,
            **request,
        )
        status, detail = job[status_key], job.get("SecondaryStatus", "")
        if (status, detail) != last:
            report(f"{name}: {status}" + (f" ({detail})" if detail else ""))
            last = (status, detail)
        if status in TERMINAL:
            break
        pacing.sleep(pacing.poll_s)
    if status != "Completed":
        raise LineageError(
            failure_message(kind, name, job, _streams_for_failure(logs, kind, name)),
            f"`lineage sagemaker logs {name}` prints the job's log",
        )
    return dict(job)


def read_object(s3: Any, uri: str, what: str, *, pacing: Pacing, timeout_s: float) -> bytes:
    """An output a job wrote. S3 outputs are uploaded as the job ends, so a missing object is
    waited for (up to `timeout_s`), as is a transient failure; a permission problem is not."""
    parts = urlsplit(uri)

    def fetch() -> bytes:
        response = s3.get_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"))
        return bytes(response["Body"].read())

    try:
        return retry_call(
            f"GetObject {uri} ({what})",
            "check s3:GetObject on the bucket",
            fetch,
            pacing=pacing,
            deadline=pacing.clock() + timeout_s,
            retry=(Kind.TRANSIENT, Kind.NOT_FOUND),
        )
    except AwsError as exc:
        if exc.kind is Kind.NOT_FOUND:
            raise LineageError(
                f"{what} ({uri}) was not written within {timeout_s:.0f}s: {exc.code}",
                "the job completed without writing it: read its log",
            ) from None
        raise
