"""How the real-server tiers are split across pytest-xdist workers (tests/conftest.py): every
test in exactly one work unit, an integration module never split, every Docker test in the
one `docker` unit and that unit queued first; each worker on ports no other worker uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import (
    DOCKER_UNIT,
    REPO_ROOT,
    TEST_PORTS,
    free_port_block,
    pytest_xdist_make_scheduler,
    work_unit_of,
    worker_ports,
)

# Collects the real-server tiers as xdist worker gw0 of 2 does and prints each test's node id
# and whether it carries the `container` marker, in collection order. Its hook is tryfirst
# like tests/conftest.py's but registered before it, so it runs right after it (pluggy calls
# the later-registered first): after the reorder, before the container tier deselects itself
# where no engine answers.
PROBE = """
import json, sys
import pytest

class Probe:
    items = []

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, items):
        self.items = [(i.nodeid, i.get_closest_marker("container") is not None) for i in items]

probe = Probe()
code = pytest.main(sys.argv[1:], plugins=[probe])
print("PROBE " + json.dumps({"code": int(code), "items": probe.items}))
"""

SLOW_TIERS = ["tests/integration", "tests/container"]


def _collect_as_a_worker() -> list[tuple[str, bool]]:
    """(node id, has the `container` marker) of every real-server test, in the order an
    xdist worker collects them."""
    env = {**os.environ, "PYTEST_XDIST_WORKER": "gw0", "PYTEST_XDIST_WORKER_COUNT": "2"}
    options = ["--collect-only", "-q", "-W", "default", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *options, *SLOW_TIERS],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("PROBE ")]
    assert lines, (done.stdout + done.stderr)[-3000:]
    found = json.loads(lines[-1].removeprefix("PROBE "))
    assert found["code"] == 0, (done.stdout + done.stderr)[-3000:]
    return [(nodeid, bool(container)) for nodeid, container in found["items"]]


def test_every_slow_tier_test_is_in_one_unit_docker_ones_together_and_first() -> None:
    collected = _collect_as_a_worker()
    assert len(collected) > 100  # both tiers were collected
    units: dict[str, set[str]] = {}  # unit -> the modules in it
    for nodeid, container in collected:
        module = nodeid.split("::", 1)[0]
        unit = work_unit_of(REPO_ROOT, nodeid)
        assert unit is not None, nodeid
        units.setdefault(unit, set()).add(module)
        if module.startswith("tests/container/") or container:
            assert unit == DOCKER_UNIT, nodeid  # the container marker: it needs an engine
        else:
            assert module.startswith("tests/integration/"), nodeid
    # an integration module is a unit of its own, the docker unit holds the container tier
    assert all(len(modules) == 1 for unit, modules in units.items() if unit != DOCKER_UNIT)
    assert len(units[DOCKER_UNIT]) >= 3
    # the controller queues units in the order their first test comes: docker's first
    docker = [work_unit_of(REPO_ROOT, nodeid) == DOCKER_UNIT for nodeid, _ in collected]
    assert docker == sorted(docker, reverse=True)


def test_the_loadgroup_scheduler_uses_the_work_units(
    pytestconfig: pytest.Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    option = pytestconfig.option
    monkeypatch.setattr(option, "dist", "loadgroup")
    monkeypatch.setattr(option, "tx", ["popen", "popen"])
    monkeypatch.setattr(option, "loadscopereorder", True, raising=False)
    scheduler: Any = pytest_xdist_make_scheduler(pytestconfig, None)
    assert option.loadscopereorder is False  # queued in collection order, not by test count
    scope = scheduler._split_scope
    assert scope("tests/container/test_images.py::test_a") == DOCKER_UNIT
    assert scope("tests/container/test_compose.py::test_b[x]") == DOCKER_UNIT
    assert scope("tests/integration/test_stack.py::test_a") == "integration/test_stack"
    assert scope("tests/integration/test_stack.py::test_b[1-2]") == "integration/test_stack"
    # elsewhere xdist's own rule: a test is its own unit unless it names a group
    assert scope("tests/unit/test_config.py::test_a") == "tests/unit/test_config.py::test_a"

    monkeypatch.setattr(option, "dist", "load")
    assert pytest_xdist_make_scheduler(pytestconfig, None) is None  # xdist's own scheduler


class FakeWorker:
    """What xdist's scheduler uses of a worker: its id, the indices of the tests it is to
    run, its shutdown."""

    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.sent: list[int] = []
        self.shutting_down = False

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent += indices

    def shutdown(self) -> None:
        self.shutting_down = True


def test_the_docker_unit_starts_at_once_and_no_module_is_split(
    pytestconfig: pytest.Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers, collected as tests/conftest.py orders them on a worker: the first worker
    gets the whole docker unit, though two modules have more tests (xdist's default would
    queue those first), the second gets whole modules."""
    monkeypatch.setattr(pytestconfig.option, "dist", "loadgroup")
    monkeypatch.setattr(pytestconfig.option, "tx", ["popen", "popen"])
    monkeypatch.setattr(pytestconfig.option, "loadscopereorder", True, raising=False)
    collection = [
        *(f"tests/container/test_images.py::test_{i}" for i in range(2)),
        "tests/container/test_compose.py::test_up",
        *(f"tests/integration/test_processing.py::test_{i}" for i in range(6)),
        *(f"tests/integration/test_training.py::test_{i}[x]" for i in range(5)),
    ]
    scheduler: Any = pytest_xdist_make_scheduler(pytestconfig, None)
    first, second = FakeWorker("gw0"), FakeWorker("gw1")
    for worker in (first, second):
        scheduler.add_node(worker)
        scheduler.add_node_collection(worker, collection)
    scheduler.schedule()
    assert [collection[i] for i in first.sent] == collection[:3]  # docker: all of it, first
    assert [collection[i] for i in second.sent] == collection[3:9]  # test_processing, whole


@pytest.mark.parametrize("workers", [2, 3, 8])
def test_each_worker_draws_ports_from_its_own_slice(
    monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(workers))
    slices = []
    for index in range(workers):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{index}")
        ports = worker_ports()
        assert ports.start >= TEST_PORTS.start and ports.stop <= TEST_PORTS.stop
        base = free_port_block(10)
        assert ports.start <= base and base + 10 <= ports.stop
        slices.append(set(ports))
    assert all(not (a & b) for i, a in enumerate(slices) for b in slices[i + 1 :])


def test_a_serial_run_draws_from_the_whole_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    assert worker_ports() == TEST_PORTS
