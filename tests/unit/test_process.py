from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from lineage.errors import StackError
from local.stack import process


def test_corrupt_pid_file_is_an_error_not_a_guess(tmp_path: Path) -> None:
    pid_file = tmp_path / "run" / "git.pid"
    pid_file.parent.mkdir()
    pid_file.write_text("12ab")
    with pytest.raises(StackError, match="corrupt"):
        process.read_pid(pid_file)


def test_stale_pid_file_is_removed(tmp_path: Path) -> None:
    pid_file = tmp_path / "git.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # alive, but not a service of this home
    assert process.running_pid(pid_file, marker=str(tmp_path / "home-marker")) is None
    assert not pid_file.exists()


def test_spawn_and_terminate_whole_process_group(tmp_path: Path) -> None:
    script = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "time.sleep(60)"
    )
    pid = process.spawn(
        [sys.executable, "-c", script, str(tmp_path)],
        pid_file=tmp_path / "svc.pid",
        log_file=tmp_path / "svc.log",
        env=os.environ,
        cwd=tmp_path,
    )
    assert process.running_pid(tmp_path / "svc.pid", str(tmp_path)) == pid
    assert process.terminate(pid, grace=5) is True
    assert not process.is_alive(pid)
    assert "starting" in process.tail(tmp_path / "svc.log")


def test_a_service_stopped_from_elsewhere_is_reaped(tmp_path: Path) -> None:
    """A service this process started and another one stopped (`lineage stack down` run
    elsewhere) is reaped through its Popen, not dropped unreaped (a ResourceWarning, an
    error in every tier) when the interpreter goes."""
    pid = process.spawn(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        pid_file=tmp_path / "svc.pid",
        log_file=tmp_path / "svc.log",
        env=os.environ,
        cwd=tmp_path,
    )
    os.killpg(pid, signal.SIGKILL)  # not through `terminate`: as another process would
    deadline = time.monotonic() + 10
    while pid in process._started and time.monotonic() < deadline:
        process.reap_ended()
        time.sleep(0.05)
    assert pid not in process._started
