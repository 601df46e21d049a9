"""Helpers shared by test modules (so that no test module imports another)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from tests.conftest import free_port_block


def random_imagefolder(
    root: Path, *, labels: tuple[str, ...] = ("a", "b"), per_label: int = 12, seed: int = 0
) -> Path:
    """`root/<label>/<i>.png` of random 16x16 pixels: images no other test shares, so a test
    may damage their objects in the remote without harming anyone else."""
    rng = np.random.default_rng(seed)
    for label in labels:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_label):
            pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


def wait_http(
    url: str, *, alive: Callable[[], bool] | None = None, deadline_s: float = 120
) -> None:
    """Poll `url` until it answers below 500, failing when `alive()` says the server died
    or the deadline passes (never a blind sleep)."""
    deadline = time.monotonic() + deadline_s
    while True:
        if alive is not None:
            assert alive(), f"the server behind {url} exited"
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer within {deadline_s}s"
        time.sleep(0.2)


@contextmanager
def moto_server(env: dict[str, str] | None = None) -> Iterator[str]:
    """moto's server as a real HTTP endpoint (AWS's API shapes: what cannot exist here)."""
    port = free_port_block(1)
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/moto-api/", alive=lambda: server.poll() is None, deadline_s=60)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
