"""Start, find and stop detached service processes through pid files.

Each service runs in its own session (process group) so that `stop` reaches its workers too
(``mlflow server`` forks uvicorn/gunicorn workers), and so that it outlives the CLI call that
started it. A pid file is trusted only if the process it names still runs the expected
command line: pids get reused, and a stale file must never make us signal a stranger.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from lineage.credentials import private_dir
from lineage.errors import StackError


def read_pid(pid_file: Path) -> int | None:
    """The pid in `pid_file`, None if there is no file. A corrupt file is an error."""
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise StackError(
            f"state file {pid_file} is unreadable ({exc.__class__.__name__})",
            f"make sure no lineage service from {pid_file.parent.parent} still runs (`ps -ef`), "
            f"then delete {pid_file}",
        ) from None
    if not text.isdigit() or int(text) <= 1:
        raise StackError(
            f"state file {pid_file} is corrupt (expected a process id, found {text[:40]!r})",
            f"make sure no lineage service from {pid_file.parent.parent} still runs (`ps -ef`), "
            f"then delete {pid_file}",
        )
    return int(text)


# The services this process started: a service runs on after the `Popen` that started it
# (and `lineage stack up` itself) is gone, so each is kept here until it is found dead and
# reaped through it, rather than dropped while it runs (Python's ResourceWarning).
_started: dict[int, subprocess.Popen[bytes]] = {}


def _reap(pid: int) -> None:
    """Reap a service of ours that ended, through its `Popen`, which then goes quietly.

    A leader can show as a zombie while its last threads still exit (MLflow's does): the
    kernel will not hand over its status yet, so its `Popen` is kept for a later call (the
    end of `terminate`, `reap_ended`) instead of being dropped unreaped.
    """
    proc = _started.get(pid)
    if proc is not None and proc.poll() is not None:
        _started.pop(pid, None)


def _settle(pid: int, timeout: float = 5.0) -> None:
    """Wait (bounded) for a stopped service of ours to be reaped: its process group is gone,
    so only the leader's exit status remains to be collected."""
    proc = _started.get(pid)
    if proc is None:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
    _reap(pid)


def reap_ended() -> None:
    """Reap every service of ours that has ended, however it was stopped: by `terminate`,
    or by another process (a `lineage stack down` elsewhere, a kill) while this one holds
    its `Popen`. Those still running are left alone: they outlive this process by design."""
    for pid in list(_started):
        _reap(pid)


# Ended services are reaped before the interpreter drops their `Popen`s at exit.
atexit.register(reap_ended)


def is_alive(pid: int) -> bool:
    """True if `pid` runs and is not a zombie (reaping it if it is our own dead child)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        _reap(pid)
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state in ("Z", "X"):
        if pid in _started:
            _reap(pid)
        else:  # no `Popen` of ours holds it: reap it directly if it is our child at all
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        return False
    return True


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def running_pid(pid_file: Path, marker: str) -> int | None:
    """The pid recorded in `pid_file` if that process is alive and its command line contains
    `marker` (our state directory); otherwise None, removing the stale file."""
    pid = read_pid(pid_file)
    if pid is None:
        return None
    if is_alive(pid) and any(marker in arg for arg in cmdline(pid)):
        return pid
    if not is_alive(pid) and group_members(pid):
        return None  # orphaned workers: the file is how `stack down`/`up` find and stop them
    pid_file.unlink(missing_ok=True)
    return None


def spawn(
    argv: Sequence[str],
    *,
    pid_file: Path,
    log_file: Path,
    env: Mapping[str, str],
    cwd: Path,
) -> int:
    """Start `argv` detached, its output appended to `log_file`; record its pid."""
    private_dir(log_file.parent)  # logs and pid files: owner only, like the rest of the home
    private_dir(pid_file.parent)
    with os.fdopen(os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as log:
        log.write(
            f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} starting: {' '.join(argv)}\n".encode()
        )
        log.flush()
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise StackError(f"cannot start {argv[0]}: {exc.strerror}", "check the path") from None
    _started[proc.pid] = proc
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def terminate(pid: int, grace: float) -> bool:
    """SIGTERM the process group of `pid`, SIGKILL it after `grace` seconds; waits for
    every member of the group (a worker that outlives its leader keeps the port).

    Returns True if it stopped within the grace period, False if it had to be killed.
    """
    try:
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not is_alive(pid) and not group_members(pid):
                return True
            time.sleep(0.1)
        _signal_group(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while (is_alive(pid) or group_members(pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return False
    finally:
        _settle(pid)


def group_members(pgid: int) -> list[int]:
    """Live processes in process group `pgid` (from /proc: no pid file needed)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[-1].split()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if len(fields) > 2 and fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return sorted(members)


def terminate_group(pgid: int, grace: float) -> bool:
    """SIGTERM every member of a process group whose leader is gone, SIGKILL after `grace`.
    The group id cannot have been reused while members live, so they are ours."""
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_members(pgid):
            return True
        time.sleep(0.1)
    _signal_group(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return False


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def port_free(host: str, port: int) -> bool:
    """True if a server could bind `port` now (SO_REUSEADDR, as servers bind)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def tail(path: Path, lines: int = 20) -> str:
    """Last `lines` lines of a log file, for error messages."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(data.splitlines()[-lines:])
