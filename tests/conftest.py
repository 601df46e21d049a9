"""Fixtures shared by every test layer, including the one real local stack per test session
(starting MLflow alone takes ~30 s on 2 cores), used by the integration and container tiers."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from lineage.config import Settings
from local.stack import LocalStack
from local.stack.process import port_free

REPO_ROOT = Path(__file__).resolve().parent.parent


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    return port_free(host, port)


def free_port_block(count: int) -> int:
    """First of `count` consecutive free ports, below the ephemeral range."""
    for _ in range(200):
        base = random.randrange(20000, 32000 - count)
        if all(port_is_free(p) for p in range(base, base + count)):
            return base
    raise RuntimeError("no block of free ports found")


def stack_env(home: Path) -> dict[str, str]:
    """LINEAGE_* settings for a private stack: its own home and its own ports, so tests never
    touch a user's running stack or each other's."""
    base = free_port_block(10)
    return {
        "LINEAGE_HOME": str(home),
        "LINEAGE_GIT_PORT": str(base),
        "LINEAGE_S3_PORT": str(base + 1),
        "LINEAGE_MLFLOW_PORT": str(base + 2),
        "LINEAGE_SEAWEED_PORT_BASE": str(base + 3),
    }


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `lineage` command line in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "lineage", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or REPO_ROOT,
    )


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment of a private, not-started stack under a temp home."""
    return stack_env(tmp_path / "lineage-home")


@dataclass
class RunningStack:
    env: dict[str, str]
    settings: Settings
    stack: LocalStack


@pytest.fixture(scope="session")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    home = tmp_path_factory.mktemp("stack") / "lineage-home"
    env = stack_env(home)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    settings = Settings.from_env()
    stack = LocalStack(settings)
    try:
        stack.up()
        yield RunningStack(env=env, settings=settings, stack=stack)
    finally:
        stack.down()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server for the session (see tests.helpers.postgres_server)."""
    from tests.helpers import POSTGRES_URL_ENV, postgres_available, postgres_server

    if not postgres_available() and not os.environ.get("LINEAGE_REQUIRE_POSTGRES"):
        pytest.skip(
            f"no PostgreSQL here: install Debian's `postgresql` or set {POSTGRES_URL_ENV} "
            "(CI sets LINEAGE_REQUIRE_POSTGRES, so there this is a failure, not a skip)"
        )
    root = Path(tempfile.mkdtemp(prefix="lineage-pg-"))  # not under pytest's 0700 tmp root
    try:
        with postgres_server(root) as url:
            yield url
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database for a store under test: SQLite in the test's directory, and the
    same tests again on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    from tests.helpers import fresh_database

    server: str = request.getfixturevalue("postgres_url")
    return fresh_database(server, f"test_{random.getrandbits(48):012x}")
