"""Fixtures of the integration tier (the session's stack itself is in tests/conftest.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lineage.gitops import git_auth_env
from lineage.storage import ensure_bucket, s3_client
from tests.conftest import RunningStack, free_port_block, run_cli

pytestmark = pytest.mark.integration


@pytest.fixture
def git_identity(tmp_path: Path) -> dict[str, str]:
    """A throwaway git identity so tests never depend on the machine's git config."""
    return {
        "GIT_AUTHOR_NAME": "lineage-test",
        "GIT_AUTHOR_EMAIL": "test@lineage.invalid",
        "GIT_COMMITTER_NAME": "lineage-test",
        "GIT_COMMITTER_EMAIL": "test@lineage.invalid",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(tmp_path),
    }


@pytest.fixture
def git_env(running_stack: RunningStack, git_identity: dict[str, str]) -> dict[str, str]:
    """A plain git of someone who ran `eval "$(lineage stack env)"`: it may push."""
    settings = running_stack.settings
    token = ("lineage", settings.credentials.git_token)
    return {**git_identity, **git_auth_env([(settings.git_url, token)]), "GIT_TERMINAL_PROMPT": "0"}


def run_pipeline(
    stack: RunningStack,
    repo: str,
    model_name: str,
    *,
    epochs: int,
    fraction: float = 0.1,
    runtime: str = "process",
    env: dict[str, str] | None = None,
    hosts: int = 1,
) -> dict[str, Any]:
    """`lineage pipeline --json` on digits into its own repo and model name; the result."""
    out = run_cli(
        "pipeline",
        "--instance-count",
        str(hosts),
        "--runtime",
        runtime,
        "--version",
        "v1.0",
        "--fraction",
        str(fraction),
        "--epochs",
        str(epochs),
        "--repo",
        repo,
        "--model-name",
        model_name,
        "--json",
        env=env or stack.env,
        timeout=1200,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@dataclass
class Champion:
    name: str
    version: str
    tag: str
    result: dict[str, Any]


@pytest.fixture(scope="session")
def champion(running_stack: RunningStack) -> Champion:
    """A 1-epoch digits model, registered and promoted to `champion` (for serving tests)."""
    repo = f"serve-{uuid.uuid4().hex[:6]}"
    name = f"digits-{repo}"
    result = run_pipeline(running_stack, repo, name, epochs=1)
    version = str(result["training"]["model_version"])
    promoted = run_cli(
        "promote", "--model", f"{name}/{version}", "--alias", "champion", env=running_stack.env
    )
    assert promoted.returncode == 0, promoted.stderr
    return Champion(name, version, str(result["processing"]["tag"]), result)


def private_registry_env(running_stack: RunningStack, home: Path) -> dict[str, str]:
    """The stack's settings with a consent registry, lineage index and DVC bucket of their own.

    Modules that publish the synthetic cohort on the session's stack each get one: the cohort
    is deterministic, so two registries would otherwise push the same patients' scans to the
    same remote objects, and one module's erasure would delete (or keep, as another
    registry's record) the bytes another module's datasets point at."""
    bucket = f"dvc-{uuid.uuid4().hex[:12]}"
    ensure_bucket(s3_client(running_stack.settings), bucket)
    return {
        **running_stack.env,
        "LINEAGE_CONSENT_DB": f"sqlite:///{home / 'consent.db'}",
        "LINEAGE_INDEX_DB": f"sqlite:///{home / 'index.db'}",
        "LINEAGE_DVC_BUCKET": bucket,
    }


@dataclass
class DemoRun:
    """A `lineage demo --json` result: its versions by label (v1.0, v2.0)."""

    env: dict[str, str]
    repo: str
    name: str
    port: int
    result: dict[str, Any]

    def ref(self, version: str) -> str:
        training = self.result["versions"][version]["training"]
        return f"{training['model_name']}/{training['model_version']}"

    def tag(self, version: str) -> str:
        return str(self.result["versions"][version]["processing"]["tag"])


@contextmanager
def demo_run(
    env: dict[str, str], repo: str, name: str, *options: str, timeout: float = 1500
) -> Iterator[tuple[int, dict[str, Any]]]:
    """`lineage demo --json` into its own repo, model name and port: (port, result); the
    endpoint it deployed is stopped afterwards."""
    port = free_port_block(1)
    out = run_cli(
        "demo",
        *options,
        "--epochs",
        "1",
        "--repo",
        repo,
        "--model-name",
        name,
        "--port",
        str(port),
        "--json",
        env=env,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    yield port, json.loads(out.stdout)
    assert run_cli("deploy", "--stop", "--port", str(port), env=env).returncode == 0
