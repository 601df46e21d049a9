"""Serving latency and throughput: our server vs stock `mlflow models serve` vs the bare
model forward, same model, same machine, one run.

    python benchmarks/serve_latency.py --model-dir .lineage/endpoints/8080/opt/ml/model \
        --model-uri models:/digits-mobilenetv3/1        # MLFLOW_TRACKING_URI set for the second

Single-image p50/p99 at concurrency 1, images/s at concurrency 16. mlflow's server cannot
take image bytes, so it gets the preprocessed tensor as JSON (what its users must send).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.model import load_model_dir
from lineage.transforms import preprocess


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


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 2),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
    }


def sequential(send: Callable[[httpx.Client], None], n: int) -> dict[str, float]:
    with httpx.Client(timeout=60) as client:
        send(client)  # warm-up
        times = []
        for _ in range(n):
            started = time.perf_counter()
            send(client)
            times.append(time.perf_counter() - started)
    return percentiles(times)


def concurrent(send: Callable[[httpx.Client], None], clients: int, seconds: float) -> float:
    stop = threading.Event()
    counts = [0] * clients

    def worker(i: int) -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                send(client)
                counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return round(sum(counts) / (time.perf_counter() - started), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--model-uri", help="models:/NAME/VERSION for mlflow models serve")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()

    buffer = io.BytesIO()
    Image.new("L", (8, 8), 120).save(buffer, format="PNG")
    png = buffer.getvalue()
    model = load_model_dir(args.model_dir)
    tensor = preprocess(Image.open(io.BytesIO(png)).convert("RGB"), model.image_size)
    rows: dict[str, dict[str, float]] = {}

    # the physical limit: the network alone, in-process
    with torch.inference_mode():
        one = tensor.unsqueeze(0)
        model.network(one)
        times = []
        for _ in range(args.requests):
            started = time.perf_counter()
            model.network(one)
            times.append(time.perf_counter() - started)
        batch = tensor.unsqueeze(0).repeat(32, 1, 1, 1)
        model.network(batch)
        started = time.perf_counter()
        for _ in range(5):
            model.network(batch)
        batched = 5 * 32 / (time.perf_counter() - started)
    rows["bare forward"] = {**percentiles(times), "images_per_s_c16": round(batched, 1)}

    port = free_port()
    ours = subprocess.Popen(
        [sys.executable, "-m", "inference", "serve", "--model-dir", str(args.model_dir)],
        env={**os.environ, "SAGEMAKER_BIND_TO_PORT": str(port), "LINEAGE_SERVE_HOST": "127.0.0.1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ping(url, ours)

        def send_ours(client: httpx.Client) -> None:
            client.post(
                f"{url}/invocations", content=png, headers={"Content-Type": "image/png"}
            ).raise_for_status()

        rows["lineage server"] = {
            **sequential(send_ours, args.requests),
            "images_per_s_c16": concurrent(send_ours, 16, args.seconds),
        }
    finally:
        ours.terminate()
        ours.wait(timeout=30)

    if args.model_uri:
        port = free_port()
        stock = subprocess.Popen(
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
            env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ping(url, stock)
            payload = json.dumps({"inputs": tensor.unsqueeze(0).tolist()}).encode()

            def send_stock(client: httpx.Client) -> None:
                client.post(
                    f"{url}/invocations",
                    content=payload,
                    headers={"Content-Type": "application/json"},
                ).raise_for_status()

            rows["mlflow models serve"] = {
                **sequential(send_stock, args.requests),
                "images_per_s_c16": concurrent(send_stock, 16, args.seconds),
            }
        finally:
            os.killpg(stock.pid, 15)
            stock.wait(timeout=30)

    print(f"{'':22} {'p50 ms':>8} {'p99 ms':>8} {'img/s @16':>10}")
    for name, row in rows.items():
        print(f"{name:22} {row['p50_ms']:>8} {row['p99_ms']:>8} {row['images_per_s_c16']:>10}")
    print(json.dumps({"torch_threads": torch.get_num_threads(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
