"""How the MLflow side tells a dead server from its own client's errors, and what every
process that talks to MLflow is given (bounded waits, no telemetry)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from mlflow.exceptions import MlflowException

from lineage import tracking


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *_: Any) -> None:
        return None


@pytest.fixture
def healthy_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_client_error_from_a_server_that_answers_is_not_a_dead_server(
    healthy_server: str,
) -> None:
    """MLflow's client words its own failures (a telemetry race, a bad response) like a dead
    server's: asking the server's /health tells them apart."""
    looks_dead = MlflowException("API request to endpoint /api/2.0/mlflow/runs/get failed")
    assert tracking.unreachable(looks_dead)  # without a server to ask: taken at its word
    assert not tracking.unreachable(looks_dead, healthy_server)
    assert tracking.unreachable(looks_dead, "http://127.0.0.1:9")  # nothing listens there
    assert tracking.unreachable(requests.ConnectionError("refused"), "http://127.0.0.1:9")
    assert not tracking.unreachable(MlflowException("RESOURCE_DOES_NOT_EXIST"), healthy_server)


def test_every_mlflow_client_gets_bounded_waits_and_no_telemetry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in tracking.CLIENT_LIMITS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # a value the user set wins
    tracking.bound_client_waits()
    import os

    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "4"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
