"""Settings and answers that used to end in a traceback: each now ends in a message that
names the setting or shows what the endpoint said."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lineage.config import env_float
from lineage.errors import ConfigError


@pytest.mark.parametrize("raw", ["nan", "inf", "-1", "0", "soon"])
def test_a_poll_interval_that_is_not_a_positive_number_is_refused(raw: str) -> None:
    with pytest.raises(ConfigError, match="LINEAGE_SAGEMAKER_POLL_S"):
        env_float({"LINEAGE_SAGEMAKER_POLL_S": raw}, "LINEAGE_SAGEMAKER_POLL_S", 30.0)


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("LINEAGE_MAX_BATCH_WAIT_MS", "nan", "must be a finite number"),
        ("LINEAGE_MAX_BATCH_WAIT_MS", "-2", "must be a finite number, at least 0"),
        ("LINEAGE_MAX_BATCH_WAIT_MS", "2ms", "is not a number"),
        ("LINEAGE_MAX_BATCH", "0", "must be at least 1"),
    ],
)
def test_the_server_exits_with_a_message_on_a_bad_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str, message: str
) -> None:
    from inference import serve
    from lineage import contract

    monkeypatch.setattr(contract, "configure_job_logging", lambda _: None)
    monkeypatch.setenv(name, raw)
    with pytest.raises(SystemExit) as exited:
        serve.main([])
    assert f"{name}={raw!r}" in str(exited.value.code) and message in str(exited.value.code)


class _Answers(BaseHTTPRequestHandler):
    """An endpoint behind a proxy: a JSON answer for /good, an HTML error page otherwise."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.path.startswith("/good"):
            status, kind, body = 200, "application/json", json.dumps({"label": "7"}).encode()
        else:
            status, kind, body = 502, "text/html", b"<html>Bad Gateway</html>" + b"x" * 2000
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        return None


def test_invoke_reports_a_non_json_error_body_as_its_text(tmp_path: Path) -> None:
    from lineage.ops.deploy import ERROR_BODY_LIMIT, invoke

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    image = tmp_path / "a.png"
    image.write_bytes(b"not really a png")
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        [bad] = invoke(f"{url}/proxy", [image])
        [good] = invoke(f"{url}/good", [image])
    finally:
        server.shutdown()
        server.server_close()
    assert bad["status"] == 502 and bad["error"].startswith("<html>Bad Gateway</html>")
    assert len(bad["error"]) == ERROR_BODY_LIMIT + 3 and bad["error"].endswith("...")
    assert good == {"file": str(image), "status": 200, "label": "7"}
