"""The job descriptions (lineage.jobspec): one description per job, which the local runner
writes as SageMaker's config files and the SageMaker runner sends as the Create*Job request.

What users depend on: a request that SageMaker would refuse is refused here first, with the
limit named; the requests are valid against SageMaker's own API model (botocore's); every
host of a multi-host job sees the same host list with itself as `current_host`.
(The Processing environment limit and the config key set: tests/unit/test_processing_job.py.)
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from botocore.exceptions import ParamValidationError
from botocore.session import get_session
from botocore.validate import validate_parameters

from lineage.errors import ConfigError
from lineage.jobspec import (
    Channel,
    ProcessingInput,
    ProcessingJobSpec,
    ProcessingOutput,
    TrainingJobSpec,
    check_job_name,
    dataset_tag,
    job_name,
)

ROLE = "arn:aws:iam::123456789012:role/sagemaker"


@pytest.fixture(scope="module")
def sagemaker_api() -> Any:
    return get_session().get_service_model("sagemaker")


def assert_valid(api: Any, operation: str, request: dict[str, Any]) -> None:
    """`request` is what SageMaker's API model accepts for `operation` (botocore's check)."""
    validate_parameters(request, api.operation_model(operation).input_shape)


def training(**kwargs: Any) -> TrainingJobSpec:
    base: dict[str, Any] = {
        "name": "train-v1-20260101-000000-abcd",
        "image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/model-lineage/training:1",
        "hyperparameters": {"epochs": "3", "learning_rate": "0.001"},
        "environment": {"LINEAGE_IMAGE_URI": "img"},
        "role_arn": ROLE,
    }
    return TrainingJobSpec(**{**base, **kwargs})


@pytest.mark.parametrize("name", ["a", "process-v1-20260101-000000-ab12", "A" * 63, "a--b"])
def test_sagemaker_job_names_are_accepted(name: str) -> None:
    check_job_name(name)


@pytest.mark.parametrize("name", ["", "-lead", "trail-", "under_score", "dot.ted", "a" * 64])
def test_names_sagemaker_would_refuse_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(
        ConfigError, match=r"invalid job name .*; use letters, digits and -, 63 at most"
    ):
        check_job_name(name)


@pytest.mark.parametrize("prefix", ["train", "my model/v1 (cxr)", "x" * 200, "___"])
def test_generated_job_names_are_always_valid_and_unique(prefix: str) -> None:
    names = {job_name(prefix) for _ in range(20)}
    assert len(names) > 1  # a random part: two pipelines started in the same second differ
    for name in names:
        check_job_name(name)
    if prefix == "___":
        assert next(iter(names)).startswith("job-")


def test_dataset_tags_are_the_pipeline_run_id_or_new_each_time() -> None:
    assert dataset_tag("v1", "run-42") == "run-42"
    tags = {dataset_tag("v1.0") for _ in range(10)}
    assert len(tags) == 10
    assert all(re.fullmatch(r"v1\.0-\d{8}T\d{6}Z-[0-9a-f]{6}", tag) for tag in tags)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"instance_count": 0}, "instance count 0: SageMaker takes 1 to 100"),
        ({"instance_count": 101}, "instance count 101: SageMaker takes 1 to 100"),
        ({"hyperparameters": {"epochs": 3}}, "hyperparameter epochs must be a string"),
        ({"hyperparameters": {"h": "x" * 2501}}, "hyperparameter h exceeds 2500"),
        ({"environment": {"DVC_REPO_URL": "x" * 513}}, "DVC_REPO_URL is 513 characters; Sage"),
        ({"environment": {f"K{i}": "v" for i in range(101)}}, "101 environment variables"),
        ({"name": "bad_name"}, "invalid job name 'bad_name'"),
    ],
)
def test_a_training_job_sagemaker_would_refuse_is_refused_first(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        training(**kwargs).validate()


def test_a_processing_input_outside_the_processing_tree_is_refused() -> None:
    spec = ProcessingJobSpec(
        "process-v1", "img", [], {}, inputs=[ProcessingInput("consent", "s3://b/c", "/tmp/c")]
    )
    with pytest.raises(ConfigError, match="consent: LocalPath must begin with /opt/ml/processing/"):
        spec.validate()


def test_training_requests_are_valid_for_sagemaker_with_and_without_channels(
    sagemaker_api: Any,
) -> None:
    bare = training()
    bare.validate()
    request = bare.create_request()
    assert "InputDataConfig" not in request and "CheckpointConfig" not in request  # no []
    assert_valid(sagemaker_api, "CreateTrainingJob", request)
    full = training(
        channels=[Channel("dataset", "s3://b/dataset/"), Channel("pretrained", "s3://b/w/")],
        checkpoint_s3_uri="s3://b/checkpoints/",
        instance_count=4,
        instance_type="ml.g5.xlarge",
    )
    full.validate()
    request = full.create_request()
    assert_valid(sagemaker_api, "CreateTrainingJob", request)
    assert [c["ChannelName"] for c in request["InputDataConfig"]] == ["dataset", "pretrained"]
    assert request["ResourceConfig"] == {
        "InstanceType": "ml.g5.xlarge",
        "InstanceCount": 4,
        "VolumeSizeInGB": 30,
    }
    assert request["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    assert set(full.input_data_config()) == {"dataset", "pretrained"}
    assert full.arn == f"arn:aws:sagemaker:us-east-1:000000000000:training-job/{full.name}"


def test_the_api_model_check_catches_a_bad_request(sagemaker_api: Any) -> None:
    """The check above can fail: SageMaker's model refuses what our builder must never send."""
    request = training().create_request()
    request["ResourceConfig"]["InstanceCount"] = "4"
    with pytest.raises(ParamValidationError, match="InstanceCount"):
        assert_valid(sagemaker_api, "CreateTrainingJob", request)


def test_processing_requests_are_valid_for_sagemaker(sagemaker_api: Any) -> None:
    spec = ProcessingJobSpec(
        name="process-v1-20260101-000000-abcd",
        image_uri="img:1",
        arguments=[],
        entrypoint=["python", "-m", "processing"],
        environment={"A": "1"},
        inputs=[ProcessingInput("consent", "s3://b/consent/", "/opt/ml/processing/consent")],
        outputs=[ProcessingOutput("lineage", "/opt/ml/processing/output", "s3://b/out/")],
        role_arn=ROLE,
    )
    spec.validate()
    request = spec.create_request()
    assert_valid(sagemaker_api, "CreateProcessingJob", request)
    assert request["AppSpecification"] == {
        "ImageUri": "img:1",
        "ContainerEntrypoint": ["python", "-m", "processing"],
    }  # no arguments: no ContainerArguments key
    assert request["ProcessingInputs"][0]["S3Input"]["LocalPath"] == "/opt/ml/processing/consent"


def test_every_host_sees_the_same_hosts_and_itself_as_current() -> None:
    spec = training(instance_count=3, instance_type="ml.g5.2xlarge")
    assert spec.hosts == ["algo-1", "algo-2", "algo-3"]
    configs = {host: spec.resource_config(host, "lo") for host in spec.hosts}
    assert [c["current_host"] for c in configs.values()] == spec.hosts
    for config in configs.values():
        assert config["hosts"] == spec.hosts
        assert config["current_instance_type"] == "ml.g5.2xlarge"
        assert config["network_interface_name"] == "lo"
        (group,) = config["instance_groups"]
        assert group["hosts"] == spec.hosts and group["instance_group_name"] == "homogeneousCluster"
    assert spec.resource_config()["current_host"] == "algo-1"  # the leader by default
