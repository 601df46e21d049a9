"""The container tier: the real images, run as SageMaker runs them, against the real stack.

Needs a Docker engine. Without one the whole tier is deselected before anything starts and
the run ends with one line saying why; `.ci/run` provisions an engine, so CI always runs it.
The images are built (or found up to date in Docker's cache) once per session with
`make images`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local.images.docker import engine_error
from tests.conftest import REPO_ROOT

LOCAL_BASE = "model-lineage/base:bookworm"
HERE = Path(__file__).resolve().parent
SKIPPED = pytest.StashKey[str]()
SKIPPED_OUTPUT = "container_tier_skipped"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tier = [item for item in items if HERE in item.path.parents]
    if not tier:
        return
    problem = engine_error()
    if problem:
        config.hook.pytest_deselected(items=tier)
        items[:] = [item for item in items if item not in tier]
        config.stash[SKIPPED] = (
            f"container tier skipped ({len(tier)} tests): {problem}; start dockerd to run it"
        )


# Under pytest-xdist the workers collect (and deselect) and the controller writes the summary:
# a worker hands its reason back in `workeroutput`, which the controller reads as it goes down.
def pytest_sessionfinish(session: pytest.Session) -> None:
    reason = session.config.stash.get(SKIPPED, None)
    workeroutput = getattr(session.config, "workeroutput", None)  # set only on an xdist worker
    if reason and workeroutput is not None:
        workeroutput[SKIPPED_OUTPUT] = reason


@pytest.hookimpl(optionalhook=True)  # an xdist hook: absent when xdist is not loaded
def pytest_testnodedown(node: Any, error: object) -> None:
    reason = getattr(node, "workeroutput", {}).get(SKIPPED_OUTPUT)
    if reason:
        node.config.stash[SKIPPED] = reason


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    reason = config.stash.get(SKIPPED, None)
    if reason:
        terminalreporter.write_line(reason, yellow=True, bold=True)


def _image_exists(reference: str) -> bool:
    return (
        subprocess.run(
            ["docker", "image", "inspect", reference], capture_output=True, check=False
        ).returncode
        == 0
    )


def _base_image() -> str:
    return os.environ.get("LINEAGE_TEST_BASE_IMAGE") or (
        LOCAL_BASE if _image_exists(LOCAL_BASE) else "python:3.11-slim-bookworm"
    )


def _make_images(target: str) -> None:
    """`make TARGET` on the test base image, tagged `test` (cached by Docker between runs)."""
    built = subprocess.run(
        ["make", target, f"BASE_IMAGE={_base_image()}", "TAG=test"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    assert built.returncode == 0, (built.stdout + built.stderr)[-4000:]


@pytest.fixture(scope="session")
def stack_image() -> str:
    """The local stack's services image (local/compose.yaml), built once per session."""
    _make_images("stack-image")
    return "model-lineage/stack:test"


@pytest.fixture(scope="session")
def images() -> Iterator[dict[str, str]]:
    _make_images("images")
    yield {name: f"model-lineage/{name}:test" for name in ("processing", "training", "inference")}
