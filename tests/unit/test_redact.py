from __future__ import annotations

import pytest

from lineage.redact import redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://alice:s3cr3t@git.example.com/repo.git",
            "https://alice:***@git.example.com/repo.git",
        ),
        ("https://ghp_token123@github.com/org/repo.git", "https://***@github.com/org/repo.git"),
        ("http://127.0.0.1:28180/datasets.git", "http://127.0.0.1:28180/datasets.git"),
        ("https://h/x?token=abc&ref=main", "https://h/x?token=***&ref=main"),
        ("s3://bucket/key", "s3://bucket/key"),
        ("not a url", "not a url"),
        (
            "arn:aws:sagemaker:eu-west-1:123:mlflow-app/app-1",
            "arn:aws:sagemaker:eu-west-1:123:mlflow-app/app-1",
        ),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redacted_url_never_contains_the_secret() -> None:
    secret = "AKIA-very-secret"
    assert secret not in redact_url(f"https://user:{secret}@codecommit.example/v1/repos/r")
