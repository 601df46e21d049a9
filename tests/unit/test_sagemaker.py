"""The SageMaker runtime's handling of AWS, with botocore's Stubber standing in for AWS.

What a user depends on: a permission or credentials problem fails at once and says what to
do (never minutes of retries, never "no job named X"); a throttle is waited out; endpoints
are found by their lineage tags across every page; the JSON the CLI prints keeps its keys.
The Stubber answers before botocore's own retry layer, so the retries seen here are ours.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.response import StreamingBody
from botocore.stub import Stubber
from typer.testing import CliRunner

from lineage.audit.queries import (
    Context,
    EndpointLister,
    Impact,
    SageMakerCheck,
    SageMakerLister,
)
from lineage.config import Settings
from lineage.errors import LineageError
from lineage.index.source import ModelData
from lineage.sagemaker.endpoints import Answer, DeployResult, find_endpoints, lineage_endpoints
from lineage.sagemaker.errors import AwsError, Kind
from lineage.sagemaker.inspection import describe_job
from lineage.sagemaker.jobs import PipelineResult
from lineage.sagemaker.polling import Pacing, read_object, retry_call, wait_job
from lineage.serving import EndpointListing, SageMakerEndpoint

REGION = "us-east-1"
ACCOUNT = "123456789012"
NOW = datetime(2026, 11, 28, tzinfo=UTC)


def aws_client(service: str) -> Any:
    session: Any = boto3.session.Session(  # Any: `service` is any name, not one Literal
        region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    return session.client(service)


@pytest.fixture
def sagemaker() -> Iterator[tuple[Any, Stubber]]:
    client = aws_client("sagemaker")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()  # every answer queued was asked for, no more


class FakeTime:
    """A clock that moves only when slept on: a five-minute wait runs in microseconds."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now

    def pacing(self, **kwargs: Any) -> Pacing:
        return Pacing(sleep=self.sleep, clock=self.clock, **{"poll_s": 5.0, **kwargs})


def training_job(status: str, secondary: str = "Training", **extra: Any) -> dict[str, Any]:
    """A DescribeTrainingJob answer with the members botocore requires."""
    return {
        "TrainingJobName": "train-x",
        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/train-x",
        "ModelArtifacts": {"S3ModelArtifacts": "s3://b/training/train-x/output/model.tar.gz"},
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "AlgorithmSpecification": {"TrainingInputMode": "File", "TrainingImage": "img"},
        "ResourceConfig": {
            "InstanceType": "ml.m5.xlarge",
            "InstanceCount": 1,
            "VolumeSizeInGB": 30,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "CreationTime": NOW,
        **extra,
    }


def processing_job(status: str) -> dict[str, Any]:
    return {
        "ProcessingJobName": "process-x",
        "ProcessingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:processing-job/process-x",
        "ProcessingJobStatus": status,
        "ProcessingResources": {
            "ClusterConfig": {
                "InstanceCount": 1,
                "InstanceType": "ml.m5.xlarge",
                "VolumeSizeInGB": 30,
            }
        },
        "AppSpecification": {"ImageUri": "img"},
        "CreationTime": NOW,
    }


# -- permanent errors: at once, with the code, AWS's words and what to do ----------------------
@pytest.mark.parametrize(
    ("code", "hint"),
    [
        ("AccessDeniedException", "lacks the IAM permission"),
        ("AccessDenied", "lacks the IAM permission"),
        ("UnrecognizedClientException", "credentials are not valid"),
        ("InvalidClientTokenId", "credentials are not valid"),
        ("ExpiredTokenException", "session expired"),
        ("ResourceLimitExceeded", "quota"),
        ("ValidationException", "refused the request as invalid"),
    ],
)
def test_a_permanent_error_fails_at_once_with_its_code_and_hint(
    sagemaker: tuple[Any, Stubber], code: str, hint: str
) -> None:
    client, stub = sagemaker
    stub.add_client_error(
        "describe_training_job",
        code,
        f"User: arn:aws:iam::{ACCOUNT}:user/ana is not authorized (see "
        "https://ana:hunter2@example.com/help)",
        expected_params={"TrainingJobName": "train-x"},
    )
    time = FakeTime()
    with pytest.raises(AwsError) as raised:
        wait_job(client, "training", "train-x", pacing=time.pacing())
    error = raised.value
    assert time.sleeps == []  # no retry, no wait
    assert error.code == code and error.kind is Kind.PERMANENT
    assert f"DescribeTrainingJob train-x failed: {code}: User: arn:aws:iam::" in error.message
    assert error.hint is not None and hint in error.hint
    assert "hunter2" not in str(error)  # AWS's message is redacted like every other


def test_the_callers_hint_is_kept_after_the_codes_own() -> None:
    def denied(**_: Any) -> None:
        error: Any = {"Error": {"Code": "AccessDeniedException", "Message": "no"}}
        raise ClientError(error, "ListEndpoints")

    with pytest.raises(AwsError) as raised:
        retry_call(
            "ListEndpoints", "check sagemaker:ListEndpoints", denied, pacing=FakeTime().pacing()
        )
    assert raised.value.hint is not None
    assert raised.value.hint.endswith("; check sagemaker:ListEndpoints")


# -- transient errors: retried with backoff, up to the deadline --------------------------------
def test_a_throttle_is_retried_then_the_wait_goes_on(sagemaker: tuple[Any, Stubber]) -> None:
    client, stub = sagemaker
    stub.add_client_error("describe_training_job", "ThrottlingException", "Rate exceeded")
    stub.add_client_error(
        "describe_training_job", "ServiceUnavailable", "try later", http_status_code=503
    )
    stub.add_response("describe_training_job", training_job("InProgress"))
    stub.add_response("describe_training_job", training_job("Completed", "Completed"))
    time = FakeTime()
    reports: list[str] = []
    job = wait_job(client, "training", "train-x", pacing=time.pacing(), report=reports.append)
    assert job["TrainingJobStatus"] == "Completed"
    assert time.sleeps == [1.0, 2.0, 5.0]  # backoff 1 s, 2 s; then one poll interval
    assert reports == ["train-x: InProgress (Training)", "train-x: Completed (Completed)"]


def test_transient_failures_give_up_at_the_deadline_naming_the_code(
    sagemaker: tuple[Any, Stubber],
) -> None:
    client, stub = sagemaker
    for _ in range(5):
        stub.add_client_error("describe_training_job", "ThrottlingException", "Rate exceeded")
    time = FakeTime()
    with pytest.raises(AwsError) as raised:
        wait_job(
            client, "training", "train-x", pacing=time.pacing(transient_s=10.0, max_retry_s=4.0)
        )
    assert time.sleeps == [1.0, 2.0, 4.0, 3.0]  # the last pause ends at the deadline
    assert "ThrottlingException: Rate exceeded (still failing after 5 tries)" in str(raised.value)
    assert raised.value.hint is not None and "try again later" in raised.value.hint


@pytest.mark.parametrize(
    "broken",
    [
        EndpointConnectionError(endpoint_url="https://api.sagemaker.us-east-1.amazonaws.com"),
        ConnectionClosedError(endpoint_url="https://api.sagemaker.us-east-1.amazonaws.com"),
        ReadTimeoutError(endpoint_url="https://api.sagemaker.us-east-1.amazonaws.com"),
    ],
)
def test_a_broken_connection_is_retried(broken: Exception) -> None:
    answers: list[Any] = [broken, {"ok": True}]

    def flaky(**_: Any) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    time = FakeTime()
    assert retry_call("ListEndpoints", "", flaky, pacing=time.pacing()) == {"ok": True}
    assert time.sleeps == [1.0]


def test_missing_credentials_are_not_retried() -> None:
    def no_credentials(**_: Any) -> None:
        raise NoCredentialsError()

    time = FakeTime()
    with pytest.raises(AwsError) as raised:
        retry_call(
            "ListEndpoints", "check sagemaker:ListEndpoints", no_credentials, pacing=time.pacing()
        )
    assert time.sleeps == [] and raised.value.hint is not None
    assert raised.value.hint.startswith("configure AWS credentials")
    assert "ListEndpoints" not in raised.value.hint


def test_a_failed_job_reports_its_reason_and_log_stream(sagemaker: tuple[Any, Stubber]) -> None:
    client, stub = sagemaker
    stub.add_response(
        "describe_training_job", training_job("Failed", "Failed", FailureReason="OOM in epoch 2")
    )
    logs = aws_client("logs")
    with Stubber(logs) as logs_stub:
        logs_stub.add_response(
            "describe_log_streams",
            {"logStreams": [{"logStreamName": "train-x/algo-1-1764300000"}]},
            {"logGroupName": "/aws/sagemaker/TrainingJobs", "logStreamNamePrefix": "train-x/"},
        )
        with pytest.raises(LineageError) as raised:
            wait_job(client, "training", "train-x", pacing=FakeTime().pacing(), logs=logs)
    assert "training job train-x failed: OOM in epoch 2" in raised.value.message
    assert "/aws/sagemaker/TrainingJobs/train-x/algo-1-1764300000" in raised.value.message


# -- reading a job's output: a missing object is waited for, a refusal is not ------------------
def _body(data: bytes) -> StreamingBody:
    return StreamingBody(io.BytesIO(data), len(data))


def test_an_output_not_yet_written_is_waited_for() -> None:
    s3 = aws_client("s3")
    with Stubber(s3) as stub:
        for _ in range(2):
            stub.add_client_error("get_object", "NoSuchKey", "The key does not exist", 404)
        stub.add_response(
            "get_object", {"Body": _body(b'{"tag": "v1"}')}, {"Bucket": "b", "Key": "p/result.json"}
        )
        time = FakeTime()
        data = read_object(
            s3, "s3://b/p/result.json", "the result", pacing=time.pacing(poll_s=2.0), timeout_s=300
        )
    assert json.loads(data) == {"tag": "v1"} and time.sleeps == [2.0, 2.0]


def test_an_output_never_written_fails_at_the_deadline() -> None:
    s3 = aws_client("s3")
    with Stubber(s3) as stub:
        for _ in range(4):
            stub.add_client_error("get_object", "NoSuchKey", "The key does not exist", 404)
        with pytest.raises(LineageError) as raised:
            read_object(
                s3, "s3://b/p/result.json", "the result", pacing=FakeTime().pacing(), timeout_s=15
            )
    assert "the result (s3://b/p/result.json) was not written within 15s: NoSuchKey" in str(
        raised.value
    )
    assert raised.value.hint == "the job completed without writing it: read its log"


def test_an_output_that_may_not_be_read_fails_at_once() -> None:
    s3 = aws_client("s3")
    with Stubber(s3) as stub:
        stub.add_client_error("get_object", "AccessDenied", "Access Denied", 403)
        time = FakeTime()
        with pytest.raises(AwsError) as raised:
            read_object(s3, "s3://b/p/r.json", "the result", pacing=time.pacing(), timeout_s=300)
    assert time.sleeps == [] and raised.value.code == "AccessDenied"
    assert "not written" not in str(raised.value)


# -- status: "no job named X" only when both kinds are not found -------------------------------
def test_status_says_no_job_only_when_neither_kind_exists(sagemaker: tuple[Any, Stubber]) -> None:
    client, stub = sagemaker
    stub.add_client_error(
        "describe_training_job", "ValidationException", "Could not find training job 'nope'"
    )
    stub.add_client_error("describe_processing_job", "ResourceNotFound", "Requested resource")
    with pytest.raises(LineageError) as raised:
        describe_job(client, aws_client("logs"), "nope")
    assert not isinstance(raised.value, AwsError)
    assert raised.value.message == "no processing or training job named nope"


def test_status_reports_access_denied_as_itself(sagemaker: tuple[Any, Stubber]) -> None:
    client, stub = sagemaker
    stub.add_client_error(
        "describe_training_job", "AccessDeniedException", "not authorized to DescribeTrainingJob"
    )
    with pytest.raises(AwsError) as raised:
        describe_job(client, aws_client("logs"), "train-x")
    assert "AccessDeniedException" in raised.value.message
    assert "no processing or training job" not in str(raised.value)


def test_status_of_a_processing_job_has_its_tags_and_streams(
    sagemaker: tuple[Any, Stubber],
) -> None:
    client, stub = sagemaker
    stub.add_client_error("describe_training_job", "ValidationException", "Could not find job")
    stub.add_response("describe_processing_job", processing_job("Completed"))
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:processing-job/process-x"
    stub.add_response(
        "list_tags",
        {"Tags": [{"Key": "lineage:pipeline-run-id", "Value": "v1-run"}]},
        {"ResourceArn": arn},
    )
    logs = aws_client("logs")
    with Stubber(logs) as logs_stub:
        logs_stub.add_client_error(
            "describe_log_streams", "ResourceNotFoundException", "The log group does not exist"
        )
        found = describe_job(client, logs, "process-x")
    out = found.to_json()
    assert list(out) == [  # what `lineage sagemaker status --json` prints
        "name",
        "kind",
        "status",
        "secondary",
        "failure_reason",
        "log_group",
        "log_streams",
        "tags",
        "details",
    ]
    assert (out["kind"], out["status"], out["log_streams"]) == ("processing", "Completed", [])
    assert out["tags"] == {"lineage:pipeline-run-id": "v1-run"}
    assert out["log_group"] == "/aws/sagemaker/ProcessingJobs"
    json.dumps(out)  # details (datetimes included) are plain JSON


# -- finding endpoints by their lineage tags ---------------------------------------------------
def _summary(name: str, status: str = "InService") -> dict[str, Any]:
    return {
        "EndpointName": name,
        "EndpointArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{name}",
        "CreationTime": NOW,
        "LastModifiedTime": NOW,
        "EndpointStatus": status,
    }


def _tags(stub: Stubber, name: str, tags: dict[str, str], token: str | None = None) -> None:
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{name}"
    answer: dict[str, Any] = {"Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
    if token:
        answer["NextToken"] = token
    stub.add_response("list_tags", answer, {"ResourceArn": arn})


def test_endpoints_are_found_by_lineage_tag_across_pages(sagemaker: tuple[Any, Stubber]) -> None:
    client, stub = sagemaker
    stub.add_response(
        "list_endpoints",
        {"Endpoints": [_summary("prod"), _summary("broken", "Failed")], "NextToken": "page-2"},
        {"MaxResults": 100},
    )
    _tags(stub, "prod", {"lineage:model": "digits/3", "team": "ml"})  # "broken": not asked
    stub.add_response(
        "list_endpoints",
        {"Endpoints": [_summary("canary", "Updating"), _summary("other"), _summary("gone")]},
        {"MaxResults": 100, "NextToken": "page-2"},
    )
    _tags(stub, "canary", {"lineage:model": "digits/4"}, token="tags-2")
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/canary"
    stub.add_response(
        "list_tags",
        {"Tags": [{"Key": "lineage:run-id", "Value": "r" * 32}]},
        {"ResourceArn": arn, "NextToken": "tags-2"},
    )
    _tags(stub, "other", {"lineage:model": "xray/1"})  # tagged, another model
    stub.add_client_error(  # deleted between the listing and the tags
        "list_tags", "ValidationException", "Could not find resource", expected_params=None
    )
    found = lineage_endpoints(client, {"digits/3", "digits/4"}, pacing=FakeTime().pacing())
    assert [(e.name, e.status, e.model) for e in found] == [
        ("canary", "Updating", "digits/4"),
        ("prod", "InService", "digits/3"),
    ]
    assert found[0].tags == {"lineage:model": "digits/4", "lineage:run-id": "r" * 32}
    assert found[1].tags == {"lineage:model": "digits/3"}  # only the lineage tags
    assert found[1].url == f"https://runtime.sagemaker.{REGION}.amazonaws.com/endpoints/prod"


def test_an_endpoint_whose_tags_cannot_be_read_fails_the_listing(
    sagemaker: tuple[Any, Stubber],
) -> None:
    """An audit that skipped it could miss a deployed model: it fails closed."""
    client, stub = sagemaker
    stub.add_response("list_endpoints", {"Endpoints": [_summary("prod")]})
    stub.add_client_error("list_tags", "AccessDeniedException", "not authorized to ListTags")
    with pytest.raises(AwsError) as raised:
        lineage_endpoints(client, None, pacing=FakeTime().pacing())
    assert "ListTags failed: AccessDeniedException" in raised.value.message


# -- the typed results print the JSON the CLI always printed -----------------------------------
def test_pipeline_result_json_before_and_after_waiting() -> None:
    started = PipelineResult(
        "v1-run",
        {"img": "sha256:" + "0" * 64},
        "process-x",
        {"tag": "v1-run", "commit": "c" * 40},
        "train-x",
    )
    assert started.to_json() == {
        "pipeline_run_id": "v1-run",
        "images": {"img": "sha256:" + "0" * 64},
        "processing": {"job_name": "process-x", "tag": "v1-run", "commit": "c" * 40},
        "training": {"job_name": "train-x", "status": "InProgress"},
    }
    trained = {"model_name": "digits", "model_version": "7", "run_id": "r", "model_data": "s3://m"}
    done = PipelineResult(
        "v1-run", {}, "process-x", {}, "train-x", "Completed", trained, indexed=True
    )
    assert done.to_json()["training"] == {
        "job_name": "train-x",
        "status": "Completed",
        **trained,
        "indexed": True,
    }


def test_deploy_and_invoke_results_keep_their_keys() -> None:
    deployed = DeployResult(
        "prod", "arn:e", "digits/3", "digits-v3-123456", "s3://b/m.tar.gz", "img", "", {}, False
    )
    assert list(deployed.to_json()) == [
        "endpoint_name",
        "endpoint_arn",
        "model",
        "sagemaker_model",
        "model_data",
        "image",
        "image_digest",
        "lineage",
        "updated",
    ]
    assert Answer("a.png", {"label": "7"}, None).to_json() == {
        "file": "a.png",
        "answer": {"label": "7"},
        "custom_attributes": None,
    }


# -- the audits: SageMaker endpoints listed when asked, "not asked" otherwise -------------------
def _endpoint(name: str, model: str) -> SageMakerEndpoint:
    return SageMakerEndpoint(
        name, f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{name}", "InService", model, REGION
    )


def _model(version: str) -> ModelData:
    return ModelData(
        "digits", version, "r" * 32, 0, "v1", "c" * 40, "d" * 32, "e" * 64, "record", None, None
    )


def test_audit_endpoints_join_local_and_sagemaker_ones(tmp_path: Path) -> None:
    listing = EndpointListing(REGION, (_endpoint("prod", "digits/3"), _endpoint("old", "digits/2")))
    local = {"url": "http://127.0.0.1:8080", "model_name": "digits", "model_version": "3"}
    unused: Any = None  # the registry, the record source, the consent log: not read here
    context = Context(
        Settings(home=tmp_path),
        client=unused,
        source=unused,
        consent=unused,
        endpoint_lister=lambda _: [local],  # the runtime's lister, as the CLI passes it
    )
    assert context.endpoints(_model("3")) == ["http://127.0.0.1:8080"]  # not asked: local only
    context.sagemaker = SageMakerCheck(listing)
    assert context.endpoints(_model("3")) == [
        "http://127.0.0.1:8080",
        f"https://runtime.sagemaker.{REGION}.amazonaws.com/endpoints/prod",
    ]
    kept = context.sagemaker.only(["digits/3"])
    assert kept.line() == "SageMaker endpoints in us-east-1: prod (InService, digits/3)"
    assert kept.to_json()["asked"] is True
    assert [e["name"] for e in kept.to_json()["endpoints"]] == ["prod"]
    assert SageMakerCheck(EndpointListing(REGION, ())).line() == (
        "SageMaker endpoints in us-east-1: none"
    )


def _impact(check: SageMakerCheck) -> Impact:
    from lineage.audit.queries import ModelHit

    hit = ModelHit(
        "digits/3", [], [], "r", "2026-01-01T00:00:00Z", "v1", "c", None, None, None, ["train"], []
    )
    return Impact("PAT-1", "withdrawn", [hit], [], [], ["v1"], 1, "index", check)


def test_impact_says_when_sagemaker_was_not_asked(capsys: pytest.CaptureFixture[str]) -> None:
    from lineage.cli.audit import print_impact

    print_impact(_impact(SageMakerCheck()))
    assert "SageMaker endpoints: not asked (pass --sagemaker)" in capsys.readouterr().out
    assert _impact(SageMakerCheck()).to_json()["sagemaker"] == {
        "asked": False,
        "region": None,
        "endpoints": [],
    }


def test_impact_command_asks_sagemaker_only_with_the_switch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import lineage.cli.audit as audit_cli
    from lineage.cli.app import app

    asked: list[SageMakerLister | None] = []

    def fake_impact(
        _: Settings,
        patient_id: str,
        *,
        endpoints: EndpointLister,
        sagemaker: SageMakerLister | None,
        scan: bool,
    ) -> Impact:
        asked.append(sagemaker)
        listing = EndpointListing(REGION, (_endpoint("prod", "digits/3"),))
        return _impact(SageMakerCheck(listing) if sagemaker else SageMakerCheck())

    monkeypatch.setattr(audit_cli, "impact", fake_impact)
    runner = CliRunner()
    plain = runner.invoke(app, ["impact", "PAT-1"])
    switched = runner.invoke(app, ["impact", "PAT-1", "--sagemaker"])
    assert plain.exit_code == 0 and switched.exit_code == 0, plain.output + switched.output
    assert asked == [None, find_endpoints]  # the SageMaker runtime's lister, only when asked
    assert "not asked (pass --sagemaker)" in plain.output
    assert "SageMaker endpoints in us-east-1: prod (InService, digits/3)" in switched.output
