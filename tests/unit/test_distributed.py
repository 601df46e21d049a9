"""Multi-host pieces that need no stack: how an epoch is sharded, who leads, how hosts meet
and how a failed or silent host is named (real TCPStores on loopback, one thread per host)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch.utils.data import DistributedSampler

from local.runner.hosts import HostExit, failure_reason
from training import distributed
from training.distributed import Cluster, ClusterError, Group, joined
from training.loop import shard


@pytest.mark.parametrize(("n", "world"), [(10, 2), (11, 2), (7, 3), (5, 1), (3, 4)])
def test_shards_are_distributed_samplers_padded_split_of_the_same_permutation(
    n: int, world: int
) -> None:
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(7))
    shards = [shard(permutation, rank, world) for rank in range(world)]
    assert len({len(s) for s in shards}) == 1  # every host runs the same number of steps
    assert set(torch.cat(shards).tolist()) == set(range(n))  # every image is seen
    for rank, mine in enumerate(shards):
        indices: Any = range(n)  # the sampler only asks a dataset for its length
        sampler: DistributedSampler[int] = DistributedSampler(
            indices, num_replicas=world, rank=rank, shuffle=False
        )
        assert mine.tolist() == permutation[list(sampler)].tolist()


def _toolkit(hosts: list[str], current: str, interface: str = "eth0") -> SimpleNamespace:
    return SimpleNamespace(hosts=hosts, current_host=current, network_interface_name=interface)


def test_the_leader_is_the_first_sorted_host_and_settings_come_from_the_environment() -> None:
    cluster = Cluster.from_toolkit(
        _toolkit(["algo-2-x", "algo-1-x"], "algo-2-x"),
        {"LINEAGE_RENDEZVOUS_PORT": "31000", "LINEAGE_COLLECTIVE_TIMEOUT": "9"},
    )
    assert cluster.hosts == ("algo-1-x", "algo-2-x")
    assert (cluster.leader, cluster.rank, cluster.world_size) == ("algo-1-x", 1, 2)
    assert not cluster.is_leader and cluster.multi_host
    assert (cluster.port, cluster.collective_timeout_s) == (31000, 9)
    single = Cluster.from_toolkit(_toolkit(["algo-1"], "algo-1"), {})
    assert not single.multi_host and single.port == distributed.DEFAULT_PORT


@pytest.mark.parametrize(
    ("hosts", "current", "environ", "message"),
    [
        (["algo-1"], "algo-9", {}, "is not in hosts"),
        (["algo-1"], "algo-1", {"LINEAGE_RENDEZVOUS_PORT": "http"}, "not a whole number"),
        (["algo-1"], "algo-1", {"LINEAGE_RENDEZVOUS_TIMEOUT": "-1"}, "must be positive"),
    ],
)
def test_a_bad_resource_config_or_setting_is_named(
    hosts: list[str], current: str, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ClusterError, match=message):
        Cluster.from_toolkit(_toolkit(hosts, current), environ)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _clusters(port: int) -> list[Cluster]:
    hosts = ("algo-1", "algo-2")
    return [Cluster(hosts, host, "", port, "127.0.0.1", rendezvous_timeout_s=20) for host in hosts]


def _as_hosts(port: int, follower: object) -> BaseException | None:
    """Run the leader here and `follower(group)` in a thread; the leader's error, if any."""
    leader_cluster, follower_cluster = _clusters(port)
    errors: list[BaseException] = []

    def run_follower() -> None:
        with joined(follower_cluster) as group:
            follower(group)  # type: ignore[operator]

    thread = threading.Thread(target=run_follower, daemon=True)
    thread.start()
    try:
        with joined(leader_cluster) as group:
            group.report("ok")
            group.wait_for_all(deadline_s=60)
    except ClusterError as exc:
        errors.append(exc)
    thread.join(timeout=60)
    return errors[0] if errors else None


def test_hosts_meet_and_go_on_when_every_host_verified_its_data() -> None:
    def follower(group: Group) -> None:
        group.report("ok")
        group.wait_for_all(deadline_s=60)

    assert _as_hosts(_free_port(), follower) is None


def test_a_host_whose_data_failed_is_named_by_the_others() -> None:
    def follower(group: Group) -> None:
        group.report("dataset t1 does not match its DVC listing")

    error = _as_hosts(_free_port(), follower)
    assert error is not None
    assert "host algo-2 failed before training: dataset t1 does not match" in str(error)


def test_a_host_that_goes_silent_is_named_within_the_heartbeat_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(distributed, "HEARTBEAT_LOST_S", 2.0)
    monkeypatch.setattr(distributed, "HEARTBEAT_S", 0.2)

    def follower(group: Group) -> None:
        pass  # joins, then stops beating without a verdict (as a killed container would)

    error = _as_hosts(_free_port(), follower)
    assert error is not None
    assert "host algo-2 stopped answering before training" in str(error)


def test_a_host_that_never_comes_fails_the_rendezvous_in_bounded_time() -> None:
    leader, _ = _clusters(_free_port())
    bounded = Cluster(leader.hosts, "algo-1", "", leader.port, "127.0.0.1", 2)
    with (
        pytest.raises(ClusterError, match="rendezvous failed after 2 s waiting for the other"),
        joined(bounded),
    ):
        pass


def test_the_jobs_failure_reason_puts_the_host_that_died_first() -> None:
    exits = [HostExit("algo-1", 1, False), HostExit("algo-2", -9, False)]
    reasons = {"algo-1": "host algo-2 stopped answering during training (Connection closed)"}
    reason = failure_reason(exits, reasons)
    assert reason.startswith("host algo-2: killed by signal 9 (SIGKILL)")
    assert "host algo-1: host algo-2 stopped answering" in reason
    assert failure_reason([HostExit("algo-1", 0, False), HostExit("algo-2", 0, False)], {}) == ""
    stopped = failure_reason([HostExit("algo-1", 1, False), HostExit("algo-2", -15, True)], {})
    assert (
        stopped == "host algo-1: exited with code 1 without a reason; stopped by the runner: algo-2"
    )


def test_only_the_leader_may_write_the_model(tmp_path: Path) -> None:
    from lineage.jobspec import TrainingJobSpec
    from local.runner.training import _followers_wrote_models, prepare_base_dir

    spec = TrainingJobSpec("two-hosts", "img", {}, {}, instance_count=2)
    bases = {h: prepare_base_dir(spec, tmp_path, h) for h in spec.hosts}
    assert _followers_wrote_models(spec, bases) == ""
    (bases["algo-2"] / "model" / "weights.pt").write_bytes(b"x")
    assert "host algo-2 wrote weights.pt to /opt/ml/model" in _followers_wrote_models(spec, bases)
    config = (bases["algo-2"] / "input" / "config" / "resourceconfig.json").read_text()
    assert '"current_host": "algo-2"' in config and '"network_interface_name": "lo"' in config


def test_after_one_host_fails_the_runner_stops_the_rest_with_their_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import sys
    import time

    from local.runner import hosts

    monkeypatch.setattr(hosts, "GRACE_S", 0.5)
    child_pid = tmp_path / "child.pid"
    stuck = (
        "import subprocess, pathlib, time;"
        "p = subprocess.Popen(['sleep', '120']);"
        f"pathlib.Path({str(child_pid)!r}).write_text(str(p.pid));"
        "time.sleep(120)"
    )
    launches = [
        hosts.HostLaunch("algo-1", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ),
                         tmp_path / "algo-1.log"),
        hosts.HostLaunch("algo-2", [sys.executable, "-c", stuck], dict(os.environ),
                         tmp_path / "algo-2.log"),
    ]  # fmt: skip
    started = time.monotonic()
    exits = hosts.launch_hosts(launches, stream=False)
    assert time.monotonic() - started < 30
    assert [(e.host, e.exit_code != 0, e.killed_by_runner) for e in exits] == [
        ("algo-1", True, False),
        ("algo-2", True, True),
    ]
    assert hosts.failure_reason(exits, {}) == (
        "host algo-1: exited with code 3 without a reason; stopped by the runner: algo-2"
    )
    pid = int(child_pid.read_text())
    time.sleep(0.5)
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z"  # the host's child is gone too


def test_a_follower_stays_until_the_leaders_process_has_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After training the leader exports, signs and registers; a follower that exited then
    would make `docker compose up --abort-on-container-exit` (the SDK's local mode) kill the
    leader mid-registration. The follower leaves only once the leader's store is gone."""
    monkeypatch.setattr(distributed, "LEADER_POLL_S", 0.1)
    leader_cluster, follower_cluster = _clusters(_free_port())
    leader_may_end = threading.Event()
    follower_left = threading.Event()

    def lead() -> None:
        with joined(leader_cluster) as group:
            group.report("ok")
            group.wait_for_all(deadline_s=60)
            leader_may_end.wait(60)  # "registering"
        del group  # the process ends: its store with it

    def follow() -> None:
        with joined(follower_cluster) as group:
            group.report("ok")
            group.wait_for_all(deadline_s=60)
            group.outlive_leader(deadline_s=60)
        follower_left.set()

    leader = threading.Thread(target=lead, daemon=True)
    follower = threading.Thread(target=follow, daemon=True)
    leader.start()
    follower.start()
    assert not follower_left.wait(2), "the follower left while the leader was registering"
    leader_may_end.set()
    leader.join(timeout=30)
    assert follower_left.wait(30), "the follower did not leave once the leader had ended"
