"""The inference server, deployed from the registry, answering with its lineage."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from lineage.transforms import preprocess
from tests.conftest import RunningStack, free_port_block, run_cli
from tests.helpers import digit_images, wait_http
from tests.integration.conftest import Champion

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def endpoint(running_stack: RunningStack, champion: Champion) -> Iterator[dict[str, Any]]:
    port = free_port_block(1)
    out = run_cli(
        "deploy",
        "--model",
        f"{champion.name}@champion",
        "--port",
        str(port),
        "--json",
        env=running_stack.env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    info: dict[str, Any] = json.loads(out.stdout)
    yield info
    stopped = run_cli("deploy", "--stop", "--port", str(port), env=running_stack.env)
    assert stopped.returncode == 0


def test_round_trip_labels_and_lineage(
    running_stack: RunningStack, champion: Champion, endpoint: dict[str, Any], tmp_path: Path
) -> None:
    files = digit_images(tmp_path)
    out = run_cli(
        "invoke",
        "--endpoint",
        endpoint["endpoint"],
        *map(str, files),
        "--json",
        env=running_stack.env,
    )
    assert out.returncode == 0, out.stderr
    answers = json.loads(out.stdout)

    mlflow.set_tracking_uri(running_stack.settings.mlflow_uri)
    model = mlflow.pyfunc.load_model(f"models:/{champion.name}/{champion.version}")
    classes = endpoint["lineage"]["classes"]
    client = MlflowClient(running_stack.settings.mlflow_uri)
    registered = client.get_model_version(champion.name, champion.version)
    for path, answer in zip(files, answers, strict=True):
        with Image.open(path) as image:
            tensor = preprocess(image.convert("RGB"), 128).unsqueeze(0).numpy()
        expected = classes[int(np.argmax(model.predict(tensor)[0]))]
        assert answer["label"] == expected, path
        assert abs(sum(answer["probabilities"].values()) - 1) < 1e-3
        lineage = answer["lineage"]
        assert lineage["model_name"] == champion.name
        assert lineage["model_version"] == champion.version
        assert lineage["run_id"] == registered.run_id
        assert lineage["data_git_commit_id"] == registered.tags["data_git_commit_id"]
        assert lineage["dvc_tag"] == registered.tags["dvc_tag"] == champion.tag

    response = httpx.post(
        f"{endpoint['endpoint']}/invocations",
        content=files[0].read_bytes(),
        headers={"Content-Type": "image/png"},
    )
    header = response.headers["X-Amzn-SageMaker-Custom-Attributes"]
    assert f"model_version={champion.version}" in header
    assert f"data_git_commit_id={registered.tags['data_git_commit_id']}" in header


def test_json_batch_and_side_routes(endpoint: dict[str, Any], tmp_path: Path) -> None:
    files = digit_images(tmp_path, 3)
    payload = {"instances": [base64.b64encode(f.read_bytes()).decode() for f in files]}
    response = httpx.post(f"{endpoint['endpoint']}/invocations", json=payload)
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 3
    params = httpx.get(f"{endpoint['endpoint']}/execution-parameters").json()
    assert set(params) == {"MaxConcurrentTransforms", "BatchStrategy", "MaxPayloadInMB"}
    full = httpx.get(f"{endpoint['endpoint']}/lineage").json()
    assert full["dataset_md5"].endswith(".dir") and full["image_size"] == 128


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 200).save(buffer, format="PNG")
    return buffer.getvalue()


BAD_REQUESTS: list[tuple[dict[str, str], bytes, int]] = [
    ({"Content-Type": "text/plain"}, b"hello", 415),
    ({"Content-Type": "image/png"}, b"", 400),
    ({"Content-Type": "image/png"}, b"not an image at all", 400),
    ({"Content-Type": "image/png"}, _png_bytes()[:30], 400),  # truncated PNG
    ({"Content-Type": "application/json"}, b"{not json", 400),
    ({"Content-Type": "application/json"}, b'{"instances": ["***not base64***"]}', 400),
    ({"Content-Type": "application/json"}, b'{"instances": []}', 400),
    ({"Content-Type": "image/png", "Accept": "text/csv"}, _png_bytes(), 406),
]


def test_bad_inputs_get_json_errors_and_the_server_survives(endpoint: dict[str, Any]) -> None:
    url = f"{endpoint['endpoint']}/invocations"
    with httpx.Client(timeout=30) as client:
        for i in range(200):
            headers, body, status = BAD_REQUESTS[i % len(BAD_REQUESTS)]
            response = client.post(url, content=body, headers=headers)
            assert response.status_code == status, (headers, body[:20])
            assert set(response.json()) == {"error", "detail"}
        big = client.post(
            url, content=b"\0" * (6 * 1024 * 1024 + 1), headers={"Content-Type": "image/png"}
        )
        assert big.status_code == 413
        assert client.get(f"{endpoint['endpoint']}/ping").status_code == 200
        good = client.post(url, content=_png_bytes(), headers={"Content-Type": "image/png"})
        assert good.status_code == 200 and "label" in good.json()


def _server_pid(endpoint: dict[str, Any]) -> int:
    return int(endpoint["pid"])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_huge_or_endless_request_head_is_refused_and_memory_stays_bounded(
    endpoint: dict[str, Any],
) -> None:
    """Headers that never end (sent as fast as the socket takes them): 431 and a closed
    connection after 64 KiB, before the HTTP parser holds them; /ping keeps answering and
    the server's memory does not grow with what the client sends."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(endpoint["endpoint"])
    pid = _server_pid(endpoint)
    before = _rss_mb(pid)
    with socket.create_connection((url.hostname, url.port), timeout=30) as conn:
        conn.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nX-Junk: ")
        answer = b""
        try:
            for _ in range(5 * 1024):  # up to 300 MB, if the server never stopped us
                conn.sendall(b"a" * 60 * 1024)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            answer = conn.recv(4096)
        except ConnectionResetError:
            answer = b""
    assert answer.startswith(b"HTTP/1.1 431") or answer == b"", answer[:80]
    assert httpx.get(f"{endpoint['endpoint']}/ping", timeout=5).status_code == 200
    assert _rss_mb(pid) - before < 50, (before, _rss_mb(pid))


def test_a_client_gone_mid_body_leaves_no_traceback_in_the_log(
    endpoint: dict[str, Any],
) -> None:
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(endpoint["endpoint"])
    log = Path(endpoint["log"])
    size_before = log.stat().st_size
    for _ in range(5):
        with socket.create_connection((url.hostname, url.port), timeout=30) as conn:
            conn.sendall(
                b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Content-Length: 100000\r\n\r\n" + b"\0" * 1000
            )
    assert httpx.get(f"{endpoint['endpoint']}/ping", timeout=5).status_code == 200
    time.sleep(0.5)  # the server notices the closed sockets (not a readiness wait)
    written = log.read_bytes()[size_before:].decode(errors="replace")
    assert "Traceback" not in written, written[-2000:]


def test_ping_stays_fast_under_16_concurrent_clients(endpoint: dict[str, Any]) -> None:
    url = endpoint["endpoint"]
    body = _png_bytes()
    stop = threading.Event()

    def hammer() -> int:
        done = 0
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                client.post(
                    f"{url}/invocations", content=body, headers={"Content-Type": "image/png"}
                ).raise_for_status()
                done += 1
        return done

    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(hammer) for _ in range(16)]
        time.sleep(1.0)
        latencies = []
        with httpx.Client(timeout=10) as client:
            for _ in range(20):
                started = time.perf_counter()
                assert client.get(f"{url}/ping").status_code == 200
                latencies.append(time.perf_counter() - started)
                time.sleep(0.1)
        stop.set()
        served = sum(f.result() for f in futures)
    assert served > 16
    assert max(latencies) < 2.0, latencies


def test_model_dir_without_weights_exits_non_zero(endpoint: dict[str, Any], tmp_path: Path) -> None:
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "lineage.json").write_text((Path(endpoint["model_dir"]) / "lineage.json").read_text())
    port = free_port_block(1)
    result = subprocess.run(
        [sys.executable, "-m", "inference", "serve", "--model-dir", str(broken)],
        env={**os.environ, "SAGEMAKER_BIND_TO_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "no weights" in result.stderr


def test_the_server_runs_onnx_and_a_model_without_it_falls_back_to_torch(
    endpoint: dict[str, Any], running_stack: RunningStack, champion: Champion, tmp_path: Path
) -> None:
    """The registered model carries model.onnx (checked against torch at training) and is
    served by ONNX Runtime; a model registered before the export has only weights.pt and is
    served by torch where torch is installed (this venv; the inference image refuses it)."""
    served = httpx.get(f"{endpoint['endpoint']}/lineage", timeout=10).json()
    assert served["backend"] == "onnxruntime" and served["onnx_sha256"]
    run = MlflowClient(running_stack.settings.mlflow_uri).get_run(
        champion.result["training"]["run_id"]
    )
    assert run.data.metrics["onnx_label_agreement"] == 1.0
    assert run.data.metrics["onnx_max_abs_diff"] <= 1e-4
    assert run.data.params["onnx_sha256"] == served["onnx_sha256"]

    legacy = tmp_path / "model"
    shutil.copytree(endpoint["model_dir"], legacy)
    (legacy / "model.onnx").unlink()
    port = free_port_block(1)
    server = subprocess.Popen(
        [sys.executable, "-m", "inference", "serve", "--model-dir", str(legacy)],
        env={**os.environ, "SAGEMAKER_BIND_TO_PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", alive=lambda: server.poll() is None)
        assert httpx.get(f"http://127.0.0.1:{port}/lineage").json()["backend"] == "torch"
        files = digit_images(tmp_path, 3)
        by_torch = [
            httpx.post(
                f"http://127.0.0.1:{port}/invocations",
                content=f.read_bytes(),
                headers={"Content-Type": "image/png" if f.suffix == ".png" else "image/jpeg"},
            ).json()
            for f in files
        ]
        by_onnx = [
            httpx.post(
                f"{endpoint['endpoint']}/invocations",
                content=f.read_bytes(),
                headers={"Content-Type": "image/png" if f.suffix == ".png" else "image/jpeg"},
            ).json()
            for f in files
        ]
        for a, b in zip(by_torch, by_onnx, strict=True):
            assert a["label"] == b["label"]
            assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-4)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_stock_mlflow_models_serve_answers_too(
    running_stack: RunningStack, champion: Champion
) -> None:
    port = free_port_block(1)
    venv_bin = str(Path(sys.executable).parent)  # mlflow execs `uvicorn` from PATH
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": running_stack.settings.mlflow_uri,
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
    }
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{champion.name}/{champion.version}",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, "mlflow models serve exited"
            assert time.monotonic() < deadline, "mlflow models serve did not start"
            time.sleep(0.5)
        tensor = preprocess(Image.new("L", (8, 8), 100), 128).unsqueeze(0).numpy()
        response = httpx.post(
            f"http://127.0.0.1:{port}/invocations", json={"inputs": tensor.tolist()}, timeout=60
        )
        assert response.status_code == 200, response.text[:500]
        assert np.asarray(response.json()["predictions"]).shape == (1, 10)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)


def test_stop_without_a_port_stops_every_local_endpoint(
    running_stack: RunningStack, champion: Champion, tmp_path: Path
) -> None:
    """`deploy --stop` used to stop only 8080 and say nothing ran while others did. A home of
    its own keeps this test's endpoints apart from the rest of the session's."""
    env = {
        **running_stack.env,
        "LINEAGE_HOME": str(tmp_path / "home"),
        # the models were signed by the session home's key: this home trusts it
        "LINEAGE_TRUSTED_KEYS": str(running_stack.settings.home / "keys" / "trust.json"),
    }
    ports = []
    for _ in range(2):
        port = free_port_block(1)  # picked after the first endpoint holds its port
        ports.append(port)
        out = run_cli(
            "deploy", "--model", f"{champion.name}@champion", "--port", str(port), env=env
        )
        assert out.returncode == 0, out.stderr[-2000:]
    stopped = run_cli("deploy", "--stop", "--json", env=env, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["stopped_ports"] == sorted(ports)
    for port in ports:
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2)
    again = run_cli("deploy", "--stop", env=env)
    assert again.returncode == 0 and "nothing was running" in again.stdout
