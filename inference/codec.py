"""Request bodies in, images out; predictions in, JSON out. Every failure is an HTTP error
with a JSON body, never a crash."""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

IMAGE_TYPES = frozenset(
    {"image/png", "image/jpeg", "application/x-image", "application/octet-stream"}
)
JSON_TYPE = "application/json"
MAX_BODY_BYTES = 6 * 1024 * 1024  # InvokeEndpoint's limit


@dataclass
class RequestError(Exception):
    status: int
    error: str
    detail: str

    def body(self) -> dict[str, str]:
        return {"error": self.error, "detail": self.detail}


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def check_accept(accept: str | None) -> None:
    if not accept:
        return
    for part in accept.split(","):
        kind = media_type(part)
        if kind in ("", "*/*", "application/*", JSON_TYPE):
            return
    raise RequestError(
        406, "not acceptable", f"Accept {accept!r}: this endpoint answers {JSON_TYPE}"
    )


def decode_image(data: bytes, what: str = "body") -> Image.Image:
    if not data:
        raise RequestError(400, "empty image", f"the {what} is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # truncated files fail here, not later in the model
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise RequestError(400, "undecodable image", f"{what}: {exc}") from None


def decode_request(content_type: str | None, body: bytes) -> tuple[list[Image.Image], bool]:
    """(images, is_batch). Raw image bytes are one image; JSON is ``{"instances": [b64...]}``."""
    kind = media_type(content_type)
    if kind in IMAGE_TYPES:
        return [decode_image(body)], False
    if kind == JSON_TYPE:
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestError(400, "malformed JSON", str(exc)) from None
        instances = payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(instances, list) or not instances:
            raise RequestError(
                400, "malformed JSON", 'expected {"instances": [<base64 image>, ...]} with 1+ items'
            )
        images = []
        for i, item in enumerate(instances):
            if isinstance(item, dict):
                item = item.get("b64")
            if not isinstance(item, str):
                raise RequestError(400, "malformed JSON", f"instances[{i}] is not a base64 string")
            try:
                raw = base64.b64decode(item, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise RequestError(400, "malformed base64", f"instances[{i}]: {exc}") from None
            images.append(decode_image(raw, f"instances[{i}]"))
        return images, True
    raise RequestError(
        415,
        "unsupported content type",
        f"{content_type!r}: send image/png, image/jpeg, application/x-image, "
        f"application/octet-stream or {JSON_TYPE}",
    )


def prediction(
    probabilities: list[float], classes: list[str], lineage: dict[str, Any]
) -> dict[str, Any]:
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    return {
        "label": classes[best],
        "class_index": best,
        "probabilities": {
            name: round(p, 6) for name, p in zip(classes, probabilities, strict=True)
        },
        "lineage": lineage,
    }


def custom_attributes(lineage: dict[str, Any]) -> str:
    """`X-Amzn-SageMaker-Custom-Attributes` (the one header SageMaker returns): key=value
    pairs, at most 1024 characters."""
    text = ",".join(f"{k}={v}" for k, v in lineage.items() if v is not None)
    return text[:1024]
