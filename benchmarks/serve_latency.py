"""Serving latency and throughput, every row in one run on one machine, same model:

- bare torch and bare ONNX Runtime (in-process, no HTTP): batch-1 latency, batch-32 img/s;
- HTTP on loopback (`GET /ping` of our server): what any HTTP answer costs here;
- our server (ONNX Runtime, raw PNG), measured with wrk (a C load generator: a Python client
  would steal the server's two cores), and with a Python client for comparison;
- stock `mlflow models serve` (JSON tensors: its users must preprocess), when --model-uri.

    make bench-serve MODEL_DIR=.lineage/endpoints/8080/opt/ml/model MODEL_URI=models:/NAME/1

wrk comes from Debian's package (`make bench-tools` installs it as root, or says how).
The goals it checks: at concurrency 1, our p50 within 1 ms of bare ONNX Runtime batch 1 plus
HTTP on loopback; at concurrency 16, at least 80% of bare ONNX Runtime's batched img/s; both
at least 10x `mlflow models serve`'s throughput.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.backends import TorchBackend, cpu_threads
from inference.model import load_model_dir
from inference.serve import model_threads
from lineage import contract
from lineage.onnxmodel import OnnxModel
from lineage.transforms import to_array

BATCH = 32


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ping(url: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.returncode}")
        try:
            if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not become ready")


def p50_ms(samples: list[float]) -> float:
    return round(1000 * statistics.median(samples), 3)


def bare(
    probabilities: Callable[[np.ndarray], object], one: np.ndarray, n: int
) -> dict[str, float]:
    """In-process: batch-1 p50 and batch-32 images/s."""
    probabilities(one)
    times = []
    for _ in range(n):
        started = time.perf_counter()
        probabilities(one)
        times.append(time.perf_counter() - started)
    batch = np.repeat(one, BATCH, axis=0)
    probabilities(batch)
    started = time.perf_counter()
    rounds = 10
    for _ in range(rounds):
        probabilities(batch)
    return {
        "p50_ms": p50_ms(times),
        "img_s": round(rounds * BATCH / (time.perf_counter() - started), 1),
    }


def wrk(
    url: str, body_file: Path | None, content_type: str, connections: int, seconds: int
) -> dict[str, float]:
    """wrk's p50 latency and requests/s (one image per request)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        if body_file is not None:
            script.write(
                f'local f = io.open("{body_file}", "rb")\n'
                "wrk.body = f:read('*a')\nf:close()\n"
                'wrk.method = "POST"\n'
                f'wrk.headers["Content-Type"] = "{content_type}"\n'
            )
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(min(connections, 2)),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            script.name,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    Path(script.name).unlink()
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)", out, re.M)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if p50 is None or rps is None or non2xx is not None:
        raise SystemExit(f"wrk against {url} failed:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p50.group(2)]
    return {"p50_ms": round(float(p50.group(1)) * scale, 3), "img_s": float(rps.group(1))}


def python_client(url: str, png: bytes, requests: int, seconds: float) -> dict[str, float]:
    def send(client: httpx.Client) -> None:
        client.post(url, content=png, headers={"Content-Type": "image/png"}).raise_for_status()

    with httpx.Client(timeout=60) as client:
        send(client)
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            send(client)
            times.append(time.perf_counter() - started)
    stop, counts = threading.Event(), [0] * 16

    def worker(i: int) -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                send(client)
                counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return {
        "p50_ms": p50_ms(times),
        "img_s": round(sum(counts) / (time.perf_counter() - started), 1),
    }


def serve(argv: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    wait_ping(f"http://127.0.0.1:{port}", proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--model-uri", help="models:/NAME/VERSION for mlflow models serve")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `make bench-tools` (Debian's wrk package)")

    image = Image.new("L", (64, 64), 120)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    png = buffer.getvalue()
    body = Path(tempfile.mkdtemp()) / "image.png"
    body.write_bytes(png)
    threads = model_threads(1)
    model = load_model_dir(args.model_dir, threads)
    one = to_array(image.convert("RGB"), model.image_size)[None]
    rows: dict[str, dict[str, float]] = {}
    rows[f"bare torch ({cpu_threads()} threads)"] = bare(
        TorchBackend(
            args.model_dir / contract.MODEL_WEIGHTS_FILE, len(model.classes), cpu_threads()
        ).probabilities,
        one,
        args.requests,
    )
    rows[f"bare onnxruntime ({threads} thread)"] = bare(
        OnnxModel(args.model_dir / contract.MODEL_ONNX_FILE, threads).probabilities,
        one,
        args.requests,
    )
    rows[f"bare onnxruntime ({cpu_threads()} threads)"] = bare(
        OnnxModel(args.model_dir / contract.MODEL_ONNX_FILE, cpu_threads()).probabilities,
        one,
        args.requests,
    )

    port = free_port()
    env = {**os.environ, "SAGEMAKER_BIND_TO_PORT": str(port), "LINEAGE_SERVE_HOST": "127.0.0.1"}
    ours = serve(
        [sys.executable, "-m", "inference", "serve", "--model-dir", str(args.model_dir)], env, port
    )
    try:
        url = f"http://127.0.0.1:{port}"
        rows["HTTP on loopback (GET /ping, wrk)"] = {
            "p50_ms": wrk(f"{url}/ping", None, "", 1, args.seconds)["p50_ms"],
            "img_s": float("nan"),
        }
        c1 = wrk(f"{url}/invocations", body, "image/png", 1, args.seconds)
        c16 = wrk(f"{url}/invocations", body, "image/png", 16, args.seconds)
        rows["lineage server (wrk)"] = {"p50_ms": c1["p50_ms"], "img_s": c16["img_s"]}
        rows["lineage server (Python client)"] = python_client(
            f"{url}/invocations", png, args.requests, args.seconds
        )
    finally:
        stop(ours)

    if args.model_uri:
        port = free_port()
        stock = serve(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "models",
                "serve",
                "-m",
                args.model_uri,
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
            port,
        )
        try:
            tensor = Path(tempfile.mkdtemp()) / "tensor.json"
            tensor.write_text(json.dumps({"inputs": one.tolist()}))
            url = f"http://127.0.0.1:{port}/invocations"
            c1 = wrk(url, tensor, "application/json", 1, args.seconds)
            c16 = wrk(url, tensor, "application/json", 16, args.seconds)
            rows["mlflow models serve (wrk)"] = {"p50_ms": c1["p50_ms"], "img_s": c16["img_s"]}
        finally:
            stop(stock)

    print(f"{'':38} {'p50 ms (c1)':>12} {'img/s (c16 / batch 32)':>24}")
    for name, row in rows.items():
        print(f"{name:38} {row['p50_ms']:>12} {row['img_s']:>24}")
    ours_row = rows["lineage server (wrk)"]
    bare_ort = rows[f"bare onnxruntime ({threads} thread)"]
    best_ort = max(r["img_s"] for n, r in rows.items() if n.startswith("bare onnxruntime"))
    http = rows["HTTP on loopback (GET /ping, wrk)"]["p50_ms"]
    goals = {
        "c1 p50 - (bare ORT batch 1 + HTTP) ms": round(
            ours_row["p50_ms"] - bare_ort["p50_ms"] - http, 3
        ),
        "c16 img/s / best bare ORT batched img/s": round(ours_row["img_s"] / best_ort, 3),
    }
    if "mlflow models serve (wrk)" in rows:
        goals["c16 img/s / mlflow models serve img/s"] = round(
            ours_row["img_s"] / rows["mlflow models serve (wrk)"]["img_s"], 1
        )
    for name, value in goals.items():
        print(f"{name:52} {value}")
    print(
        json.dumps(
            {"cpus": cpu_threads(), "server_threads": threads, "rows": rows, "goals": goals},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
