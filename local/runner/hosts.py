"""Several hosts of one job on this machine, started and stopped as SageMaker would: all at
once, each with its own `/opt/ml` and log; when one fails, the others get a grace period to
fail on their own (they notice within their bounded waits and say which host broke), then
are stopped; the job's failure reason names the host that failed first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# After one host fails, how long the others may take to notice and write their own reasons
# (a peer's death breaks their next collective at once; a silent peer is named after the
# job's heartbeat window of 30 s).
GRACE_S = 90.0


@dataclass(frozen=True)
class HostLaunch:
    host: str
    argv: list[str]
    env: Mapping[str, str]
    log_file: Path
    container: str | None = None  # the docker runtime's container, stopped by name


@dataclass(frozen=True)
class HostExit:
    host: str
    exit_code: int
    killed_by_runner: bool


def launch_hosts(launches: list[HostLaunch], stream: bool) -> list[HostExit]:
    """Run every host to its end; return their exits in host order."""
    procs: dict[str, subprocess.Popen[str]] = {}
    pumps = []
    for item in launches:
        item.log_file.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            item.argv,
            env=dict(item.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own process group: stopping it stops its children
        )
        procs[item.host] = proc
        assert proc.stdout is not None
        pump = threading.Thread(
            target=_pump, args=(proc.stdout, item.log_file, item.host, stream), daemon=True
        )
        pump.start()
        pumps.append(pump)
    stopped = _wait(procs, {i.host: i.container for i in launches})
    for pump in pumps:
        pump.join(timeout=10)
    return [HostExit(i.host, int(procs[i.host].returncode), i.host in stopped) for i in launches]


def _pump(source: IO[str], log_file: Path, host: str, stream: bool) -> None:
    """Copy a host's output to its log until the host (and every child holding the pipe)
    has exited; then close the pipe."""
    with source, log_file.open("w") as log:
        for line in source:
            log.write(line)
            log.flush()
            if stream:
                sys.stderr.write(f"[{host}] {line}")


def _wait(
    procs: dict[str, subprocess.Popen[str]], containers: Mapping[str, str | None]
) -> set[str]:
    """Wait for every host; after the first failure, stop those still running once the grace
    period is over. Returns the hosts this runner stopped."""
    failed_at: float | None = None
    stopped: set[str] = set()
    while any(p.poll() is None for p in procs.values()):
        if failed_at is None and any(p.returncode not in (None, 0) for p in procs.values()):
            failed_at = time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > GRACE_S:
            for host, proc in procs.items():
                if proc.poll() is None:
                    _stop(proc, containers.get(host))
                    stopped.add(host)
            break
        time.sleep(0.2)
    for proc in procs.values():
        proc.wait()
    return stopped


def _stop(proc: subprocess.Popen[str], container: str | None) -> None:
    """SIGTERM (the platform's stop), then SIGKILL after 10 s, as SageMaker stops a job."""
    if container:
        subprocess.run(["docker", "stop", "--time", "10", container], capture_output=True)
    try:  # the host's whole process group: its git and dvc children too
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def failure_reason(exits: list[HostExit], reasons: Mapping[str, str]) -> str:
    """The job's failure reason: the host that failed first in cause (a host that died
    outright, else one whose reason names no other host), then the others briefly."""
    failed = [e for e in exits if e.exit_code != 0 and not e.killed_by_runner]
    if not failed:
        return ""
    hosts = [e.host for e in exits]

    def rank(item: HostExit) -> tuple[int, int]:
        died = item.exit_code < 0
        blames_other = any(h in reasons.get(item.host, "") for h in hosts if h != item.host)
        return (0 if died else 1 if not blames_other else 2, hosts.index(item.host))

    ordered = sorted(failed, key=rank)
    parts = [f"host {e.host}: {reasons.get(e.host) or _died(e.exit_code)}" for e in ordered]
    stopped = [e.host for e in exits if e.killed_by_runner]
    if stopped:
        parts.append(f"stopped by the runner: {', '.join(stopped)}")
    return "; ".join(parts)


def _died(exit_code: int) -> str:
    if exit_code < 0:
        return f"killed by signal {-exit_code} ({signal.Signals(-exit_code).name})"
    return f"exited with code {exit_code} without a reason"
