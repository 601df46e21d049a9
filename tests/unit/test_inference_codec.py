"""Request decoding for /invocations: every bad body maps to its status, never a crash."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from inference.codec import RequestError, check_accept, custom_attributes, decode_request


def png(size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (size, size), 90).save(buffer, format="PNG")
    return buffer.getvalue()


def test_raw_image_types_decode_to_one_rgb_image() -> None:
    for kind in (
        "image/png",
        "application/x-image",
        "application/octet-stream",
        "image/png; charset=binary",
    ):
        images, batch = decode_request(kind, png())
        assert len(images) == 1 and images[0].mode == "RGB" and batch is False


def test_json_batch_of_base64_images() -> None:
    first, second = (base64.b64encode(png(n)).decode() for n in (8, 4))
    body = json.dumps({"instances": [first, {"b64": second}]}).encode()
    images, batch = decode_request("application/json", body)
    assert [i.size for i in images] == [(8, 8), (4, 4)] and batch is True


@pytest.mark.parametrize(
    ("kind", "body", "status"),
    [
        ("text/csv", b"1,2", 415),
        (None, png(), 415),
        ("image/png", b"", 400),
        ("image/jpeg", b"\xff\xd8\xff garbage", 400),
        ("image/png", png()[:40], 400),
        ("application/json", b"[1, 2]", 400),
        ("application/json", b'{"instances": ["@@@"]}', 400),
    ],
)
def test_bad_bodies(kind: str | None, body: bytes, status: int) -> None:
    with pytest.raises(RequestError) as info:
        decode_request(kind, body)
    assert info.value.status == status
    assert set(info.value.body()) == {"error", "detail"}


def test_accept_header() -> None:
    for ok in (
        None,
        "",
        "*/*",
        "application/json",
        "text/html, application/json;q=0.9",
        "*/*;q=0, application/json;q=0.1",  # the specific range decides
        "application/*;q=0.5",
    ):
        check_accept(ok)
    for refused in (
        "text/csv",
        "*/*;q=0, application/json;q=0",  # q=0 is "not acceptable" (RFC 9110)
        "application/json;q=0",
        "application/json;q=0, */*",  # the most specific match refuses JSON
        "application/json;q=bogus",
    ):
        with pytest.raises(RequestError) as info:
            check_accept(refused)
        assert info.value.status == 406, refused


def test_custom_attributes_fit_sagemakers_header_limit() -> None:
    text = custom_attributes({"model_name": "m" * 2000, "model_version": "3", "run_id": None})
    assert len(text) <= 1024 and "run_id" not in text
