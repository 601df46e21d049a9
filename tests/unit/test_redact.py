from __future__ import annotations

from pathlib import Path

import pytest

from lineage.redact import redact_text, redact_url


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


def test_free_text_from_tools_loses_every_credential() -> None:
    """DVC and git quote the URLs they were given in their errors; every message we show,
    log or write as a failure reason goes through redact_text."""
    text = (
        "ERROR: failed to push data to the cloud - Unable to locate credentials for "
        "'http://AKIAEXAMPLE:wJalrXUtnFEMI@127.0.0.1:9000/lineage-dvc' (tried "
        "https://x-access-token:ghp_secret123@github.com/org/data.git); "
        "see https://h/x?token=abc."
    )
    shown = redact_text(text)
    for secret in ("wJalrXUtnFEMI", "ghp_secret123", "token=abc"):
        assert secret not in shown
    assert "http://AKIAEXAMPLE:***@127.0.0.1:9000/lineage-dvc" in shown
    assert redact_text("nothing to hide here") == "nothing to hide here"


def test_errors_failure_reasons_and_job_logs_are_redacted(tmp_path: Path) -> None:
    import logging

    from lineage.contract import RedactingFormatter, write_reason
    from lineage.errors import LineageError

    leak = "https://u:hunter2@git.example.com/r.git"
    assert "hunter2" not in str(LineageError(f"clone of {leak} failed", f"retry {leak}"))
    write_reason(tmp_path / "failure", f"cannot clone {leak}")
    assert "hunter2" not in (tmp_path / "failure").read_text()
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "cloning %s", (leak,), None)
    assert "hunter2" not in RedactingFormatter("%(message)s").format(record)
