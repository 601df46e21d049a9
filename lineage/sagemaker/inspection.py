"""What a SageMaker job is doing: `lineage sagemaker status` and `lineage sagemaker logs`.

Read-only questions, answered from DescribeTrainingJob / DescribeProcessingJob, the job's
lineage tags (ListTags) and its CloudWatch streams. "No job named X" is said only when both
Describe calls answer not-found: an access or credentials problem is reported as itself, with
its code and hint, never as a missing job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from lineage.errors import LineageError
from lineage.sagemaker import aws
from lineage.sagemaker.errors import AwsError, Kind

PROCESSING_LOG_GROUP = "/aws/sagemaker/ProcessingJobs"
TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
ENDPOINT_LOG_GROUP = "/aws/sagemaker/Endpoints"


def log_group(kind: str) -> str:
    """The CloudWatch group SageMaker writes a job's container output to."""
    return PROCESSING_LOG_GROUP if kind == "processing" else TRAINING_LOG_GROUP


def resource_tags(sagemaker: Any, arn: str) -> dict[str, str]:
    """Every tag of a SageMaker resource (ListTags pages at 50)."""
    tags: dict[str, str] = {}
    token = None
    while True:
        kwargs: dict[str, Any] = {"ResourceArn": arn, **({"NextToken": token} if token else {})}
        page = aws.call("ListTags", "check sagemaker:ListTags", sagemaker.list_tags, **kwargs)
        tags.update({t["Key"]: t["Value"] for t in page.get("Tags", [])})
        token = page.get("NextToken")
        if not token:
            return tags


def log_streams(logs: Any, kind: str, name: str) -> list[str]:
    """The job's stream names in its log group (one per instance); none before it starts,
    when the group itself may not exist yet."""
    group, token = log_group(kind), None
    streams: list[str] = []
    while True:
        kwargs: dict[str, Any] = {"logGroupName": group, "logStreamNamePrefix": f"{name}/"}
        if token:
            kwargs["nextToken"] = token
        try:
            page = aws.call(
                f"DescribeLogStreams {group}",
                "check logs:DescribeLogStreams on /aws/sagemaker/*",
                logs.describe_log_streams,
                **kwargs,
            )
        except AwsError as exc:
            if exc.kind is Kind.NOT_FOUND:
                return []
            raise
        streams.extend(s["logStreamName"] for s in page.get("logStreams", []))
        token = page.get("nextToken")
        if not token:
            return streams


@dataclass(frozen=True)
class JobStatus:
    """`lineage sagemaker status`: the job, its state, lineage tags and where its log is."""

    name: str
    kind: str
    status: str
    secondary: str = ""
    failure_reason: str = ""
    log_group: str = ""
    log_streams: list[str] = field(default_factory=list)  # stream names in log_group
    tags: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON `status --json` prints (its keys are what scripts read)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "secondary": self.secondary,
            "failure_reason": self.failure_reason,
            "log_group": self.log_group,
            "log_streams": list(self.log_streams),
            "tags": dict(self.tags),
            "details": self.details,
        }


def _describe(sagemaker: Any, name: str) -> tuple[str, dict[str, Any]] | None:
    """(kind, description) of the job named `name`; None when neither kind has one."""
    for kind, call, key in (
        ("training", sagemaker.describe_training_job, "TrainingJobName"),
        ("processing", sagemaker.describe_processing_job, "ProcessingJobName"),
    ):
        operation = "DescribeTrainingJob" if kind == "training" else "DescribeProcessingJob"
        try:
            return kind, dict(
                aws.call(f"{operation} {name}", f"check sagemaker:{operation}", call, **{key: name})
            )
        except AwsError as exc:
            if exc.kind is not Kind.NOT_FOUND:
                raise
    return None


def describe_job(sagemaker: Any, logs: Any, name: str) -> JobStatus:
    """A job's status from its own clients (the testable core of `status`)."""
    found = _describe(sagemaker, name)
    if found is None:
        raise LineageError(
            f"no processing or training job named {name}",
            "check the name and the region (--region / AWS_DEFAULT_REGION)",
        )
    kind, job = found
    arn = job.get("TrainingJobArn") or job.get("ProcessingJobArn")
    return JobStatus(
        name=name,
        kind=kind,
        status=str(job.get("TrainingJobStatus") or job.get("ProcessingJobStatus")),
        secondary=str(job.get("SecondaryStatus", "")),
        failure_reason=str(job.get("FailureReason") or job.get("ExitMessage") or ""),
        log_group=log_group(kind),
        log_streams=log_streams(logs, kind, name),
        tags=resource_tags(sagemaker, str(arn)) if arn else {},
        details=json.loads(json.dumps(job, default=str)),
    )


def status(region: str | None, name: str) -> JobStatus:
    session = aws.session(region)
    return describe_job(aws.client(session, "sagemaker"), aws.client(session, "logs"), name)


def read_streams(logs: Any, group: str, streams: list[str]) -> list[str]:
    """Every line of `streams`, in order, following GetLogEvents' forward tokens to the end."""
    lines: list[str] = []
    for stream in streams:
        token = None
        while True:
            kwargs: dict[str, Any] = {
                "logGroupName": group,
                "logStreamName": stream,
                "startFromHead": True,
                **({"nextToken": token} if token else {}),
            }
            page = aws.call(
                f"GetLogEvents {group}/{stream}",
                "check logs:GetLogEvents on /aws/sagemaker/*",
                logs.get_log_events,
                **kwargs,
            )
            lines.extend(str(e["message"]) for e in page.get("events", []))
            if not page.get("events") or page.get("nextForwardToken") == token:
                break
            token = page.get("nextForwardToken")
    return lines


def job_logs(region: str | None, name: str) -> list[str]:
    """Every line the job logged to CloudWatch, stream by stream."""
    found = status(region, name)
    if not found.log_streams:
        raise LineageError(
            f"job {name} has no CloudWatch log streams yet", "a job that has not started has no log"
        )
    logs = aws.client(aws.session(region), "logs")
    return read_streams(logs, found.log_group, found.log_streams)
