from __future__ import annotations

from pathlib import Path

import pytest

from lineage.config import DEFAULT_GIT_PORT, Settings
from lineage.errors import ConfigError


def test_defaults_describe_the_embedded_stack(tmp_path: Path) -> None:
    settings = Settings.from_env({"LINEAGE_HOME": str(tmp_path)})
    assert settings.home == tmp_path
    assert settings.git_url == f"http://127.0.0.1:{DEFAULT_GIT_PORT}"
    assert settings.embedded_s3 and settings.embedded_mlflow
    assert settings.repo_url("datasets") == f"http://127.0.0.1:{DEFAULT_GIT_PORT}/datasets.git"
    assert settings.client_env()["AWS_ENDPOINT_URL_S3"] == settings.s3_endpoint


def test_external_services_replace_embedded_ones_and_are_redacted(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "LINEAGE_HOME": str(tmp_path),
            "LINEAGE_S3_ENDPOINT": "http://minio:9000/",
            "LINEAGE_MLFLOW_URI": "https://bob:hunter2@mlflow.example.com",
            "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "secret-value",
        }
    )
    assert not settings.embedded_s3 and not settings.embedded_mlflow
    assert settings.s3_endpoint == "http://minio:9000"
    assert settings.aws_access_key_id == "AKIAEXAMPLE"
    described = str(settings.describe())
    assert "hunter2" not in described and "secret-value" not in described
    assert "secret-value" not in repr(settings)


def test_embedded_store_ignores_machine_aws_keys(tmp_path: Path) -> None:
    settings = Settings.from_env({"LINEAGE_HOME": str(tmp_path), "AWS_SECRET_ACCESS_KEY": "real"})
    assert settings.aws_secret_access_key != "real"


@pytest.mark.parametrize(
    ("name", "value"),
    [("LINEAGE_GIT_PORT", "abc"), ("LINEAGE_S3_PORT", "70000"), ("LINEAGE_STARTUP_TIMEOUT", "-1")],
)
def test_bad_values_are_clear_errors(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"LINEAGE_HOME": str(tmp_path), name: value})
    assert name in str(info.value)
