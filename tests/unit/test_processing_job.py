"""The Processing job honours the SageMaker contract on failure, and writes data reproducibly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lineage import manifest
from lineage.errors import ConfigError
from lineage.jobspec import ProcessingJobSpec, ProcessingOutput
from processing.dataset import write_dataset
from processing.sampling import assign
from processing.sources import load_source, parse_source


def run_job(
    base: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "processing", *args],
        env={**os.environ, "SAGEMAKER_BASE_DIR": str(base), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--data-version", "v1", "--data-fraction", "abc"], "bad container arguments"),
        (["--data-version", "v1", "--data-fraction", "0"], "--data-fraction must be in (0, 1]"),
        (["--data-version", "v1", "--data-fraction", "1.5"], "--data-fraction must be in (0, 1]"),
        (["--data-version", "v1", "--data-fraction", "0.1", "--source", "mnist"], "unknown source"),
        (
            ["--data-version", "v1", "--data-fraction", "0.1", "--source", "synthetic-cxr"],
            "holds patients' records: it is published only with --pattern record",
        ),
    ],
)
def test_failure_writes_the_exit_message_and_exits_non_zero(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    result = run_job(tmp_path, *args, env={"DVC_REPO_URL": "http://127.0.0.1:9/none.git"})
    assert result.returncode != 0
    message = (tmp_path / "output" / "message").read_text()
    assert expected in message
    assert len(message.encode()) <= 1024
    assert not (tmp_path / "processing" / "work").exists(), "nothing cloned or written"


def test_missing_repo_url_is_explained(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DVC_REPO_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "processing", "--data-version", "v1", "--data-fraction", "0.1"],
        env={**env, "SAGEMAKER_BASE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "DVC_REPO_URL" in (tmp_path / "output" / "message").read_text()


def test_same_inputs_give_byte_identical_files(tmp_path: Path) -> None:
    records = load_source(parse_source("digits"), tmp_path)
    plan = assign(records, fraction=0.05, val_split=0.1, test_split=0.1, seed=42)
    first = write_dataset(plan, tmp_path / "a")
    second = write_dataset(plan, tmp_path / "b")
    assert first.manifest_sha256 == second.manifest_sha256
    assert first.rows == second.rows
    rows = manifest.read(tmp_path / "a" / manifest.MANIFEST_NAME)
    assert manifest.verify_files(tmp_path / "b", rows) == []
    (tmp_path / "b" / rows[0].file_path).write_bytes(b"tampered")
    problems = manifest.verify_files(tmp_path / "b", rows)
    assert len(problems) == 1
    assert problems[0].startswith(f"{rows[0].file_path}: sha256 ")
    assert problems[0].endswith(f"!= manifest {rows[0].sha256}")


def test_job_spec_enforces_processing_limits() -> None:
    spec = ProcessingJobSpec(
        name="process-v1-20260101-000000-abcd",
        image_uri="img",
        arguments=[],
        environment={"DVC_REPO_URL": "https://example.com/" + "x" * 300},
    )
    with pytest.raises(ConfigError, match="256"):
        spec.validate()
    bad_output = ProcessingJobSpec(
        name="ok-name",
        image_uri="img",
        arguments=[],
        environment={},
        outputs=[ProcessingOutput("o", "/tmp/out", "s3://b/o")],
    )
    with pytest.raises(ConfigError, match="/opt/ml/processing/"):
        bad_output.validate()


def test_job_config_has_the_sagemaker_key_set() -> None:
    spec = ProcessingJobSpec(
        name="process-v1",
        image_uri="img:1",
        arguments=["--data-fraction", "0.1"],
        environment={"A": "1"},
        outputs=[ProcessingOutput("lineage", "/opt/ml/processing/output/lineage", "s3://b/x")],
    )
    config = spec.job_config()
    assert set(config) == {
        "ProcessingJobArn",
        "ProcessingJobName",
        "AppSpecification",
        "Environment",
        "ProcessingInputs",
        "ProcessingOutputConfig",
        "ProcessingResources",
        "StoppingCondition",
        "RoleArn",
    }
    assert config["AppSpecification"]["ContainerArguments"] == ["--data-fraction", "0.1"]
    assert json.loads(json.dumps(spec.resource_config())) == {
        "current_host": "algo-1",
        "hosts": ["algo-1"],
    }
