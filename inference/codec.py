"""Request bodies in, images out; predictions in, JSON out. Every failure is an HTTP error
with a JSON body, never a crash."""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
from collections.abc import Callable, Mapping
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
    """406 unless the Accept header admits JSON with a quality above zero (RFC 9110: `q=0`
    means "not acceptable", and the most specific range that matches decides)."""
    if not accept:
        return
    best: tuple[int, float] | None = None  # (specificity, q) of the most specific match
    for part in accept.split(","):
        kind = media_type(part)
        specificity = {JSON_TYPE: 3, "application/*": 2, "*/*": 1, "": 1}.get(kind)
        if specificity is None:
            continue
        q = _quality(part)
        if best is None or specificity > best[0]:
            best = (specificity, q)
    if best is not None and best[1] > 0:
        return
    raise RequestError(
        406, "not acceptable", f"Accept {accept!r}: this endpoint answers {JSON_TYPE}"
    )


def _quality(part: str) -> float:
    for param in part.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                return min(1.0, max(0.0, float(value)))
            except ValueError:
                return 0.0
    return 1.0


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server, so no body can exhaust its memory or CPU:
    pixels per image (read from the image's header, before a byte is decoded), images per
    JSON request, and pixels per request. Over a limit: 413 with the limit named."""

    max_pixels: int = 4096 * 4096
    max_instances: int = 64
    max_request_pixels: int = 64 * 1024 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        env = os.environ if env is None else env
        defaults = cls()
        values = {}
        for name, var in (
            ("max_pixels", "LINEAGE_MAX_IMAGE_PIXELS"),
            ("max_instances", "LINEAGE_MAX_INSTANCES"),
            ("max_request_pixels", "LINEAGE_MAX_REQUEST_PIXELS"),
        ):
            raw = env.get(var, "")
            if not raw:
                values[name] = getattr(defaults, name)
            elif raw.isdigit() and int(raw) > 0:
                values[name] = int(raw)
            else:
                raise ValueError(f"{var}={raw!r} is not a positive integer")
        return cls(**values)


# Formats a client may send (PIL knows dozens, each a decoder to attack; these are the ones
# image classifiers are fed).
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")


def decode_image(data: bytes, what: str = "body", limits: Limits = Limits()) -> Image.Image:
    """One image, decoded only after its declared size is known to be within the limit."""
    if not data:
        raise RequestError(400, "empty image", f"the {what} is empty")
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            width, height = image.size
            if width * height > limits.max_pixels:
                raise RequestError(
                    413,
                    "image too large",
                    f"{what} declares {width}x{height} pixels; the limit is "
                    f"{limits.max_pixels} pixels per image (LINEAGE_MAX_IMAGE_PIXELS)",
                )
            image.load()  # truncated files fail here, not later in the model
            return image.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise RequestError(413, "image too large", f"{what}: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise RequestError(
            400, "undecodable image", f"{what}: {exc} (accepted: {', '.join(FORMATS)})"
        ) from None


def decode_request(
    content_type: str | None,
    body: bytes,
    limits: Limits = Limits(),
    convert: Callable[[Image.Image], Any] = lambda image: image,
) -> tuple[list[Any], bool]:
    """(images, is_batch). Raw image bytes are one image; JSON is ``{"instances": [b64...]}``.
    Each image goes through `convert` (the model's transform) as soon as it is decoded, so a
    request holds at most one full-size image at a time."""
    kind = media_type(content_type)
    if kind in IMAGE_TYPES:
        return [convert(decode_image(body, limits=limits))], False
    if kind == JSON_TYPE:
        instances = _instances(body, limits)
        converted = []
        budget = limits.max_request_pixels
        for i, item in enumerate(instances):
            if isinstance(item, dict):
                item = item.get("b64")
            if not isinstance(item, str):
                raise RequestError(400, "malformed JSON", f"instances[{i}] is not a base64 string")
            try:
                raw = base64.b64decode(item, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise RequestError(400, "malformed base64", f"instances[{i}]: {exc}") from None
            image = decode_image(raw, f"instances[{i}]", limits)
            budget -= image.width * image.height
            if budget < 0:
                raise RequestError(
                    413,
                    "request too large",
                    f"the instances up to [{i}] hold over {limits.max_request_pixels} pixels "
                    "(LINEAGE_MAX_REQUEST_PIXELS): split the batch",
                )
            converted.append(convert(image))
        return converted, True
    raise RequestError(
        415,
        "unsupported content type",
        f"{content_type!r}: send image/png, image/jpeg, application/x-image, "
        f"application/octet-stream or {JSON_TYPE}",
    )


def _instances(body: bytes, limits: Limits) -> list[Any]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, "malformed JSON", str(exc)) from None
    except RecursionError:
        raise RequestError(
            400, "malformed JSON", 'nested too deeply: send {"instances": [<base64>, ...]}'
        ) from None
    instances = payload.get("instances") if isinstance(payload, dict) else None
    if not isinstance(instances, list) or not instances:
        raise RequestError(
            400, "malformed JSON", 'expected {"instances": [<base64 image>, ...]} with 1+ items'
        )
    if len(instances) > limits.max_instances:
        raise RequestError(
            413,
            "too many instances",
            f"{len(instances)} instances; the limit is {limits.max_instances} per request "
            "(LINEAGE_MAX_INSTANCES): split the batch",
        )
    return instances


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
