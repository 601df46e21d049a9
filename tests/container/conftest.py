"""The container tier: the real images, run as SageMaker runs them, against the real stack.

Needs a Docker engine. Without one the whole tier is skipped with one line saying why (see
`pytest -ra`); `.ci/run` provisions an engine, so CI always runs it. The images are built (or
found up to date in Docker's cache) once per session with `make images`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from local.images.docker import engine_error
from tests.conftest import REPO_ROOT

LOCAL_BASE = "model-lineage/base:bookworm"


def _image_exists(reference: str) -> bool:
    return (
        subprocess.run(
            ["docker", "image", "inspect", reference], capture_output=True, check=False
        ).returncode
        == 0
    )


@pytest.fixture(scope="session")
def images() -> Iterator[dict[str, str]]:
    problem = engine_error()
    if problem:
        pytest.skip(f"container tier skipped: {problem} (start dockerd to run it)")
    base = os.environ.get("LINEAGE_TEST_BASE_IMAGE") or (
        LOCAL_BASE if _image_exists(LOCAL_BASE) else "python:3.11-slim-bookworm"
    )
    built = subprocess.run(
        ["make", "images", f"BASE_IMAGE={base}", "TAG=test"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    assert built.returncode == 0, (built.stdout + built.stderr)[-4000:]
    yield {name: f"model-lineage/{name}:test" for name in ("processing", "training", "inference")}
