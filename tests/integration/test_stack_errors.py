"""Bad input to `lineage stack`: one clear line saying what to do, non-zero exit, nothing left
half started."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def no_services_started(home: Path) -> bool:
    return not list((home / "run").glob("*.pid")) if (home / "run").exists() else True


def test_busy_port_names_the_service_and_the_variable(cli_env: dict[str, str]) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(cli_env["LINEAGE_MLFLOW_PORT"])))
        blocker.listen()
        result = run_cli("stack", "up", env=cli_env)
    assert result.returncode != 0
    line = error_line(result.stderr)
    assert "mlflow" in line and "LINEAGE_MLFLOW_PORT" in line and "in use" in line
    assert no_services_started(Path(cli_env["LINEAGE_HOME"]))


def test_missing_weed_binary(cli_env: dict[str, str], tmp_path: Path) -> None:
    result = run_cli("stack", "up", env={**cli_env, "LINEAGE_WEED_BIN": str(tmp_path / "no-weed")})
    assert result.returncode != 0
    line = error_line(result.stderr)
    assert "SeaweedFS" in line and "LINEAGE_WEED_BIN" in line
    assert no_services_started(Path(cli_env["LINEAGE_HOME"]))


def test_missing_git_binary(cli_env: dict[str, str], tmp_path: Path) -> None:
    empty_path = tmp_path / "bin"
    empty_path.mkdir()
    result = run_cli("stack", "up", env={**cli_env, "PATH": str(empty_path)})
    assert result.returncode != 0
    line = error_line(result.stderr)
    assert "git" in line and "install git" in line
    assert no_services_started(Path(cli_env["LINEAGE_HOME"]))


def test_corrupt_pid_file(cli_env: dict[str, str]) -> None:
    run_dir = Path(cli_env["LINEAGE_HOME"]) / "run"
    run_dir.mkdir(parents=True)
    (run_dir / "s3.pid").write_text("not-a-pid\x00garbage")
    result = run_cli("stack", "up", env=cli_env)
    assert result.returncode != 0
    line = error_line(result.stderr)
    assert "s3.pid" in line and "corrupt" in line and "delete" in line
    assert (run_dir / "s3.pid").exists(), "the evidence must not be removed silently"


def test_state_dir_entry_that_is_a_file(cli_env: dict[str, str]) -> None:
    home = Path(cli_env["LINEAGE_HOME"])
    home.mkdir()
    (home / "git").write_text("oops")
    result = run_cli("stack", "up", env=cli_env)
    assert result.returncode != 0
    assert "corrupt" in error_line(result.stderr)
    assert (home / "git").read_text() == "oops"


def test_home_that_is_a_file(cli_env: dict[str, str]) -> None:
    Path(cli_env["LINEAGE_HOME"]).write_text("not a directory")
    result = run_cli("stack", "status", env=cli_env)
    # status of a stack that cannot exist: unhealthy, but still a clean answer
    assert result.returncode != 0
    up = run_cli("stack", "up", env=cli_env)
    assert up.returncode != 0
    assert "not a directory" in error_line(up.stderr)


def test_bad_port_setting(cli_env: dict[str, str]) -> None:
    result = run_cli("stack", "up", env={**cli_env, "LINEAGE_GIT_PORT": "eighty"})
    assert result.returncode != 0
    assert "LINEAGE_GIT_PORT" in error_line(result.stderr)


def test_corrupt_mlflow_database_fails_with_log_tail(cli_env: dict[str, str]) -> None:
    home = Path(cli_env["LINEAGE_HOME"])
    (home / "mlflow").mkdir(parents=True)
    (home / "mlflow" / "mlflow.db").write_bytes(b"this is not a sqlite database" * 100)
    try:
        result = run_cli("stack", "up", env={**cli_env, "LINEAGE_STARTUP_TIMEOUT": "120"})
        assert result.returncode != 0
        line = error_line(result.stderr)
        assert "mlflow" in line and "mlflow.log" in line
        # the log tail follows the error line, so the cause is on screen
        assert len(result.stderr.splitlines()) > 1
    finally:
        run_cli("stack", "down", env=cli_env)
    assert no_services_started(home)


def test_repo_without_running_server(cli_env: dict[str, str]) -> None:
    result = run_cli("stack", "repo", "datasets", env=cli_env)
    assert result.returncode != 0
    assert "lineage stack up" in error_line(result.stderr)
