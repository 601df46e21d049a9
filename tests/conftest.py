"""Fixtures shared by every test layer, including the one real local stack per test session
(starting MLflow alone takes ~30 s on 2 cores), used by the integration and container tiers.

The real-server tiers run on pytest-xdist workers (`make test`: `-n SLOW_WORKERS --dist
loadgroup`). Each worker is a session of its own: its own stack, its own temp root, its own
slice of the test port range; `work_unit` below decides which tests must share a worker."""

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
from typing import Any

import pytest

from lineage.config import Settings
from local.stack import LocalStack
from local.stack.process import port_free

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent

# Ports the tests hand out: below Linux's ephemeral range (32768-60999), so the kernel never
# gives one of them to an outgoing connection or a bind to port 0.
TEST_PORTS = range(20000, 32000)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    return port_free(host, port)


def worker_ports() -> range:
    """This process's share of TEST_PORTS. A port is checked free, then bound later by a
    server the test starts; two xdist workers drawing from the same range could both pick
    and check a port before either binds it. Each worker (PYTEST_XDIST_WORKER gw0, gw1, ...)
    therefore draws from its own slice; a serial run has the whole range."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if not worker.startswith("gw") or count < 2:
        return TEST_PORTS
    index = int(worker.removeprefix("gw")) % count
    size = len(TEST_PORTS) // count
    start = TEST_PORTS.start + index * size
    return range(start, start + size)


def free_port_block(count: int) -> int:
    """First of `count` consecutive free ports from this worker's share of TEST_PORTS."""
    ports = worker_ports()
    for _ in range(200):
        base = random.randrange(ports.start, ports.stop - count)
        if all(port_is_free(p) for p in range(base, base + count)):
            return base
    raise RuntimeError(f"no block of {count} free ports found in {ports}")


# -- work units of the real-server tiers under pytest-xdist ---------------------------------
#
# `make test` runs tests/integration and tests/container with `-n SLOW_WORKERS --dist
# loadgroup`. xdist's own loadgroup reads `xdist_group` marks by appending `@group` to each
# node id on the worker, which pytest 9.2's structured node ids silently ignore (every test
# becomes its own unit: pytest-dev/pytest-xdist#1386, unfixed in 3.8.0). So the controller
# gets its units from `pytest_xdist_make_scheduler` below, computed from the node id's path,
# which needs no marks and no mutated ids.

SLOW_TIERS = ("integration", "container")
# Every test that drives the Docker engine: they build the images with `make` (one wheelhouse
# and build/ in the work tree), tag them :test, and use the SDK's `sagemaker-local` network;
# two workers doing that at once would rebuild, retag and remove each other's.
DOCKER_UNIT = "docker"
# Integration modules that drive Docker (the docker runtime, a compose stack): none today. One
# that starts to is listed here; tests/unit/test_xdist_groups.py fails until it is (a test
# with the `container` marker, which says it needs an engine, must be in the docker unit).
DOCKER_MODULES: frozenset[str] = frozenset()


def work_unit(path: Path) -> str | None:
    """The work unit of the tests in the file at `path`; None outside the real-server tiers.

    An integration module is one unit: its module-scoped fixtures publish datasets and train
    once for all its tests, so splitting it across workers would do that work twice. Every
    test of tests/container, and of DOCKER_MODULES, is in the one DOCKER_UNIT."""
    try:
        relative = path.resolve().relative_to(TESTS_DIR)
    except ValueError:
        return None
    tier = relative.parts[0]
    if tier not in SLOW_TIERS:
        return None
    if tier == "container" or relative.stem in DOCKER_MODULES:
        return DOCKER_UNIT
    return relative.with_suffix("").as_posix()  # e.g. integration/test_stack


def work_unit_of(rootpath: Path, nodeid: str) -> str | None:
    """work_unit of a test given its node id (`tests/integration/test_x.py::test_y`)."""
    return work_unit(rootpath / nodeid.split("::", 1)[0])


@pytest.hookimpl(optionalhook=True)  # xdist's hook: absent where xdist is not loaded
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup`: xdist's group scheduler with this suite's work units (other tests:
    xdist's own rule). Units are queued in the order their first test is collected, where
    xdist would sort them by test count: the docker unit has fewer tests than some modules but
    runs ~12 min, so it must start first (the workers collect it first, see below)."""
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class WorkUnitScheduling(LoadGroupScheduling):  # type: ignore[misc]  # xdist is untyped
        def _split_scope(self, nodeid: str) -> str:
            return work_unit_of(config.rootpath, nodeid) or str(super()._split_scope(nodeid))

    config.option.loadscopereorder = False
    return WorkUnitScheduling(config, log)


# tryfirst: the order is set on the whole collection, before the container tier's conftest
# deselects itself where no engine answers (tests/unit/test_xdist_groups.py reads it there)
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker, the docker unit's tests first: the controller queues units in the
    order of the workers' collection, and the longest should start at once on one worker
    while the other works through the integration modules. A serial run keeps its order."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: work_unit(item.path) != DOCKER_UNIT)  # stable


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
