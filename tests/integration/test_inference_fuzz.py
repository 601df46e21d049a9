"""The inference server under hostile input: over a thousand generated bodies (bombs, nested
JSON, huge batches, lying headers, garbage), every answer is JSON with a 2xx/4xx status,
`/ping` stays up, and the server's peak RSS stays under the documented bound."""

from __future__ import annotations

import base64
import io
import json
import os
import random
import socket
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from lineage.ops.deploy import materialize
from tests.conftest import RunningStack, free_port_block
from tests.helpers import wait_http
from tests.integration.conftest import Champion

pytestmark = pytest.mark.integration

BODIES = 1200
# Peak RSS the server may reach under this run (documented in the README: model and torch
# ~0.5 GB, plus at most a few 16-megapixel decodes at once).
RSS_BOUND_MB = 1536


def _png(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), "gray").save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, format="JPEG")
    return buffer.getvalue()


def _declared_png(width: int, height: int) -> bytes:
    """A small PNG whose header declares `width`x`height` (a decompression bomb's shape):
    one compressed run of zero rows, far from the full image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    rows = zlib.compress(b"\0" * (width + 1) * 64, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def bodies(seed: int = 7) -> Iterator[tuple[str, dict[str, str], bytes]]:  # noqa: C901 - cases
    """(what, headers, body): the generated corpus, deterministic for a seed.

    One flat branch per kind of body, read top to bottom: the draws from `rng` happen in this
    order, which fixes the corpus of a seed (a table of functions would hide it)."""
    rng = random.Random(seed)
    small = _png(8, 8)
    bomb = _declared_png(20000, 20000)
    wide = _declared_png(12000, 12000)
    for i in range(BODIES):
        kind = i % 16
        if kind == 0:
            size = rng.randint(1, 300)
            yield "png", {"Content-Type": "image/png"}, _png(size, rng.randint(1, 300))
        elif kind == 1:
            yield "jpeg", {"Content-Type": "image/jpeg"}, _jpeg(rng.randint(1, 200), 50)
        elif kind == 2:
            yield "bomb", {"Content-Type": "image/png"}, bomb if i % 32 else wide
        elif kind == 3:
            cut = rng.randint(1, len(small) - 1)
            yield "truncated", {"Content-Type": "image/png"}, small[:cut]
        elif kind == 4:
            yield (
                "garbage",
                {"Content-Type": "application/octet-stream"},
                rng.randbytes(rng.randint(0, 4096)),
            )
        elif kind == 5:
            depth = rng.choice([100, 5000, 200_000])
            yield "nested", {"Content-Type": "application/json"}, b"[" * depth + b"]" * depth
        elif kind == 6:
            count = rng.choice([65, 1000, 10_000])
            payload: dict[str, Any] = {"instances": [_b64(_png(1, 1))] * count}
            yield "huge batch", {"Content-Type": "application/json"}, json.dumps(payload).encode()
        elif kind == 7:
            payload = {"instances": [_b64(small)] * rng.randint(1, 64)}
            yield "batch", {"Content-Type": "application/json"}, json.dumps(payload).encode()
        elif kind == 8:
            payload = {"instances": [_b64(bomb)]}
            yield (
                "bomb in batch",
                {"Content-Type": "application/json"},
                json.dumps(payload).encode(),
            )
        elif kind == 9:
            yield "json as png", {"Content-Type": "image/png"}, b'{"instances": []}'
        elif kind == 10:
            yield "png as json", {"Content-Type": "application/json"}, small
        elif kind == 11:
            yield "unknown type", {"Content-Type": rng.choice(["text/html", "", "x/y"])}, small
        elif kind == 12:
            yield "accept html", {"Content-Type": "image/png", "Accept": "text/html"}, small
        elif kind == 13:
            junk = rng.choice(
                [b"\xff\xfe\x00", b'{"instances": "x"}', b'{"instances": [1, null]}', b"[]"]
            )
            yield "bad json", {"Content-Type": "application/json"}, junk
        elif kind == 14:
            payload = {"instances": [{"b64": "!!!not base64"}]}
            yield "bad base64", {"Content-Type": "application/json"}, json.dumps(payload).encode()
        else:
            yield "tiff", {"Content-Type": "application/x-image"}, _tiff()


def _tiff() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="TIFF")
    return buffer.getvalue()


def _rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of `pid`, from /proc."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


@pytest.fixture(scope="module")
def server(
    running_stack: RunningStack, champion: Champion, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    info = materialize(
        running_stack.settings, f"{champion.name}@champion", tmp_path_factory.mktemp("fuzz")
    )
    port = free_port_block(1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "inference", "serve", "--model-dir", str(info.model_dir)],
        env={
            **os.environ,
            "SAGEMAKER_BIND_TO_PORT": str(port),
            "MALLOC_ARENA_MAX": "2",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/ping", alive=lambda: proc.poll() is None)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _send(url: str, item: tuple[str, dict[str, str], bytes]) -> tuple[str, int, Any]:
    what, headers, body = item
    response = httpx.post(f"{url}/invocations", content=body, headers=headers, timeout=120)
    try:
        parsed = response.json()
    except ValueError:
        parsed = None
    return what, response.status_code, parsed


def test_every_hostile_body_gets_a_json_answer_and_memory_stays_bounded(
    server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, proc = server
    _, before = _rss_mb(proc.pid)
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda item: _send(url, item), bodies()))
    assert len(answers) >= 1000
    bad = [(w, s) for w, s, p in answers if not (200 <= s < 500 and isinstance(p, dict))]
    assert bad == [], bad[:10]
    by_kind: dict[str, set[int]] = {}
    for what, status, _ in answers:
        by_kind.setdefault(what, set()).add(status)
    assert by_kind["png"] == {200} and by_kind["batch"] == {200} and by_kind["jpeg"] == {200}
    assert by_kind["bomb"] == {413} and by_kind["bomb in batch"] == {413}
    assert by_kind["huge batch"] == {413} and by_kind["nested"] == {400}
    assert by_kind["unknown type"] == {415} and by_kind["accept html"] == {406}
    assert by_kind["tiff"] == {400}  # a format we do not decode at all
    assert httpx.get(f"{url}/ping", timeout=5).status_code == 200
    current, peak = _rss_mb(proc.pid)
    print(f"server RSS: {before:.0f} MB peak before, {peak:.0f} MB peak, {current:.0f} MB now")
    assert peak < RSS_BOUND_MB


def test_a_lying_content_length_is_refused_before_the_body_is_read(
    server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 50000000\r\n\r\n" + b"\x89PNG"
        )
        answer = b""
        while b"}" not in answer:  # headers and the JSON body may come in separate reads
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    text = answer.decode(errors="replace")
    assert text.startswith("HTTP/1.1 413") and '"payload too large"' in text
