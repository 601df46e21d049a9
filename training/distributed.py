"""Multi-host training as SageMaker lays it out: one container per instance, all started from
the same image, told who they are by ``resourceconfig.json`` (``hosts``, ``current_host``,
``network_interface_name``).

The leader is ``hosts[0]`` of the sorted host list (as the sagemaker-training toolkit sorts
it). It hosts a small key-value store (torch's ``TCPStore``) on the rendezvous port; every
host joins it within a bounded time, then uses it for three things besides torch's own
process group (gloo on CPU, NCCL on GPU):

* a heartbeat per host, so a host that dies while the others wait (e.g. during its data
  fetch) is named within ``HEARTBEAT_LOST_S`` instead of hanging the job;
* each host's verdict on its data (``ok`` or its failure reason), so every host starts
  training only when every host verified the same data, and a host that failed is named;
* each host's failure reason, so the others name it when a collective breaks.

Settings (environment, all optional): ``LINEAGE_RENDEZVOUS_PORT`` (default 29500),
``LINEAGE_RENDEZVOUS_ADDRESS`` (the leader's address when its host name does not resolve,
as with the local process runtime), ``LINEAGE_RENDEZVOUS_TIMEOUT`` (seconds every host has
to join, default 300), ``LINEAGE_COLLECTIVE_TIMEOUT`` (seconds a collective may wait for a
peer, default 120), ``LINEAGE_DIST_BACKEND`` (``gloo`` or ``nccl``; NCCL needs one GPU per
host, so two local hosts sharing one GPU take ``gloo``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from lineage import contract
from lineage.errors import LineageError

log = logging.getLogger("lineage.training")

DEFAULT_PORT = contract.DEFAULT_RENDEZVOUS_PORT
PORT_ENV = contract.RENDEZVOUS_PORT_ENV
ADDRESS_ENV = contract.RENDEZVOUS_ADDRESS_ENV
RENDEZVOUS_TIMEOUT_ENV = contract.RENDEZVOUS_TIMEOUT_ENV
COLLECTIVE_TIMEOUT_ENV = contract.COLLECTIVE_TIMEOUT_ENV
BACKEND_ENV = contract.DIST_BACKEND_ENV
HEARTBEAT_S = 2.0
HEARTBEAT_LOST_S = 30.0
LEADER_FINISH_S = 2 * 3600.0  # a follower outlives the leader's export and registration
LEADER_POLL_S = 0.5


class ClusterError(LineageError):
    """A host of a multi-host job failed or stopped answering."""


@dataclass(frozen=True)
class Cluster:
    """The hosts of one training job and which one this is."""

    hosts: tuple[str, ...]  # sorted, as SageMaker lists them
    current_host: str
    network_interface: str = ""
    port: int = DEFAULT_PORT
    leader_address: str = ""  # the leader's address when its name does not resolve
    rendezvous_timeout_s: float = 300.0
    collective_timeout_s: float = 120.0

    @classmethod
    def from_toolkit(cls, env: Any, environ: dict[str, str] | None = None) -> Cluster:
        environ = dict(os.environ) if environ is None else environ
        hosts = tuple(sorted(env.hosts or [env.current_host]))
        if env.current_host not in hosts:
            raise ClusterError(
                f"resourceconfig.json: current_host {env.current_host!r} is not in hosts {hosts}"
            )
        return cls(
            hosts=hosts,
            current_host=str(env.current_host),
            network_interface=str(getattr(env, "network_interface_name", "") or ""),
            port=_int_setting(environ, PORT_ENV, DEFAULT_PORT),
            leader_address=environ.get(ADDRESS_ENV, ""),
            rendezvous_timeout_s=_int_setting(environ, RENDEZVOUS_TIMEOUT_ENV, 300),
            collective_timeout_s=_int_setting(environ, COLLECTIVE_TIMEOUT_ENV, 120),
        )

    @property
    def world_size(self) -> int:
        return len(self.hosts)

    @property
    def rank(self) -> int:
        return self.hosts.index(self.current_host)

    @property
    def leader(self) -> str:
        return self.hosts[0]

    @property
    def is_leader(self) -> bool:
        return self.current_host == self.leader

    @property
    def multi_host(self) -> bool:
        return self.world_size > 1

    def describe(self) -> str:
        return f"host {self.current_host} (rank {self.rank} of {self.world_size})"


def _int_setting(environ: dict[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ClusterError(f"{name}={raw!r} is not a whole number") from None
    if value <= 0:
        raise ClusterError(f"{name}={raw!r} must be positive")
    return value


class Group:
    """This host's membership of the job's hosts: the store, the heartbeat and torch's
    process group. Open with `join`; always `close`."""

    def __init__(self, cluster: Cluster, store: Any, beat_store: Any) -> None:
        self.cluster = cluster
        self.store = store
        self._beat_store = beat_store
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name="heartbeat")
        self._beat.start()
        self.process_group_ready = False

    # -- the heartbeat and the verdicts -----------------------------------------------------
    def _heartbeat(self) -> None:
        count = 0
        while not self._stop.is_set():
            count += 1
            try:
                self._beat_store.set(f"alive/{self.cluster.rank}", str(count))
            except Exception:  # noqa: BLE001 - store gone: the main thread says so
                return
            self._stop.wait(HEARTBEAT_S)

    def report(self, verdict: str) -> None:
        """Publish this host's verdict on its data: ``ok`` or why it failed."""
        self.store.set(f"ready/{self.cluster.rank}", verdict)

    def report_failure(self, reason: str) -> None:
        """Best effort: let the other hosts name this one and its reason."""
        try:
            self.store.set(f"failed/{self.cluster.rank}", reason[:2000])
        except Exception:  # noqa: BLE001 - the store may be what failed
            log.debug("could not publish the failure to the other hosts")

    def wait_for_all(self, deadline_s: float = 24 * 3600) -> None:
        """Return when every host reported ``ok``; raise naming the first host that failed or
        stopped answering."""
        watch = _Watch(self)
        end = time.monotonic() + deadline_s
        pending = set(range(self.cluster.world_size))
        while pending:
            for rank in sorted(pending):
                verdict = self._get(f"ready/{rank}")
                if verdict is None:
                    continue
                pending.discard(rank)
                if verdict != "ok":
                    raise ClusterError(
                        f"host {self.cluster.hosts[rank]} failed before training: {verdict}",
                        "every host stops; fix that host's cause and run the job again",
                    )
            lost = watch.silent(pending, HEARTBEAT_LOST_S)
            if lost:
                raise ClusterError(
                    f"host {self.cluster.hosts[lost[0]]} stopped answering before training "
                    f"(no heartbeat for {HEARTBEAT_LOST_S:.0f} s)",
                    "the instance or its container died; run the job again",
                )
            if time.monotonic() > end:
                raise ClusterError("the hosts did not all get ready in time")
            time.sleep(0.2)

    def blame(self, error: BaseException) -> ClusterError:
        """Why a collective failed, naming the host(s) that failed or went silent."""
        cause = str(error).strip().splitlines()[0][:300] if str(error).strip() else repr(error)
        others = [r for r in range(self.cluster.world_size) if r != self.cluster.rank]
        try:
            for rank in others:
                reason = self._get(f"failed/{rank}")
                if reason:
                    return ClusterError(
                        f"host {self.cluster.hosts[rank]} failed during training: {reason}",
                        "every host stops; fix that host's cause and run the job again",
                    )
            silent = self._silent_hosts(set(others))
        except ClusterError as exc:  # the store itself is gone: so is the leader
            return exc
        names = ", ".join(self.cluster.hosts[r] for r in silent or others)
        return ClusterError(
            f"host {names} stopped answering during training ({cause})",
            "the instance or its container died; run the job again",
        )

    def _silent_hosts(self, ranks: set[int]) -> list[int]:
        """Watch the heartbeats a few beats long: a live host's moves within that time."""
        watch, window = _Watch(self), 3 * HEARTBEAT_S
        end = time.monotonic() + window + 1
        while True:
            silent = watch.silent(ranks, window)
            if silent or time.monotonic() > end:
                return silent
            time.sleep(0.5)

    def _get(self, key: str) -> str | None:
        try:
            if not self.store.check([key]):
                return None
            value: bytes = self.store.get(key)
        except Exception as exc:  # noqa: BLE001 - the store lives in the leader's process
            raise ClusterError(
                f"lost the leader {self.cluster.leader} (its rendezvous store at port "
                f"{self.cluster.port} stopped answering: {str(exc)[:200]})",
                "the leader's instance or container died; run the job again",
            ) from None
        return value.decode()

    def outlive_leader(self, deadline_s: float = LEADER_FINISH_S) -> None:
        """A follower's last step: stay until the leader's process has ended (its store stops
        answering). The leader exports, signs and registers after training; an orchestrator
        that stops every container when the first one exits (the SageMaker SDK's local mode
        runs `docker compose up --abort-on-container-exit`) would otherwise kill it there,
        and the job would read "Completed" with no model registered."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            try:
                self.store.check([f"ready/{self.cluster.rank}"])
            except Exception:  # noqa: BLE001 - the leader's process ended: what we waited for
                return
            time.sleep(LEADER_POLL_S)
        log.warning(
            "the leader %s still runs after %.0f s; leaving", self.cluster.leader, deadline_s
        )

    # -- torch's process group ----------------------------------------------------------------
    def init_process_group(self, device: torch.device) -> None:
        import torch.distributed as dist

        backend = os.environ.get(BACKEND_ENV) or ("nccl" if device.type == "cuda" else "gloo")
        if backend not in ("gloo", "nccl"):
            raise ClusterError(f"{BACKEND_ENV}={backend!r}: use gloo or nccl")
        dist.init_process_group(
            backend,
            store=dist.PrefixStore(  # type: ignore[attr-defined]
                "torch", self.store
            ),
            rank=self.cluster.rank,
            world_size=self.cluster.world_size,
            timeout=timedelta(seconds=self.cluster.collective_timeout_s),
        )
        self.process_group_ready = True
        log.info(
            "process group: %s, %d hosts, backend %s",
            self.cluster.describe(),
            self.cluster.world_size,
            backend,
        )

    def close(self) -> None:
        self._stop.set()
        if self.process_group_ready:
            import torch.distributed as dist

            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 - a broken group cannot always be torn down cleanly
                log.debug("process group teardown failed")
            self.process_group_ready = False


class _Watch:
    """Which hosts' heartbeats stopped advancing, judged on this host's own clock (so the
    hosts' clocks need not agree)."""

    def __init__(self, group: Group) -> None:
        self.group = group
        self.seen: dict[int, tuple[str | None, float]] = {}

    def silent(self, ranks: set[int], window_s: float) -> list[int]:
        """The ranks whose heartbeat has not moved for `window_s` since this watch began."""
        now = time.monotonic()
        found = []
        for rank in sorted(ranks - {self.group.cluster.rank}):
            beat = self.group._get(f"alive/{rank}")
            last, since = self.seen.get(rank, (None, now))
            if rank not in self.seen or beat != last:
                self.seen[rank] = (beat, now)
            elif now - since > window_s:
                found.append(rank)
        return found


def _set_interface(cluster: Cluster) -> None:
    """Point gloo and NCCL at the interface SageMaker names (unless the user already did),
    when this machine has it."""
    name = cluster.network_interface
    if not name or not Path("/sys/class/net", name).exists():
        return
    os.environ.setdefault("GLOO_SOCKET_IFNAME", name)
    os.environ.setdefault("NCCL_SOCKET_IFNAME", name)


@contextmanager
def joined(cluster: Cluster) -> Iterator[Group]:
    """Rendezvous with every host of `cluster` (bounded), and leave cleanly whatever happens."""
    from torch.distributed import TCPStore  # type: ignore[attr-defined]

    _set_interface(cluster)
    address = cluster.leader_address or cluster.leader
    timeout = timedelta(seconds=cluster.rendezvous_timeout_s)
    log.info(
        "rendezvous: %s joins leader %s at %s:%d (up to %.0f s)",
        cluster.describe(),
        cluster.leader,
        address,
        cluster.port,
        cluster.rendezvous_timeout_s,
    )
    try:
        store = TCPStore(
            address,
            cluster.port,
            cluster.world_size,
            cluster.is_leader,
            timeout,
            wait_for_workers=True,
        )
        beat_store = TCPStore(address, cluster.port, None, False, timeout)
    except (RuntimeError, OSError) as exc:
        role = "waiting for the other hosts" if cluster.is_leader else "reaching the leader"
        raise ClusterError(
            f"rendezvous failed after {cluster.rendezvous_timeout_s:.0f} s {role} "
            f"({address}:{cluster.port}, hosts {', '.join(cluster.hosts)}): "
            f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else exc!r}",
            f"every host must start and reach {cluster.leader} on port {cluster.port} "
            f"(set {PORT_ENV} if it is taken)",
        ) from None
    group = Group(cluster, store, beat_store)
    try:
        yield group
    finally:
        group.close()
