"""The HTTP surface SageMaker expects (`/ping`, `/invocations`, `/execution-parameters`), plus
`/lineage`. Starlette on uvicorn: small, fast, async, so `/ping` answers while the network
is busy in a worker thread."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from inference.batcher import MicroBatcher
from inference.codec import (
    MAX_BODY_BYTES,
    Limits,
    RequestError,
    check_accept,
    custom_attributes,
    decode_request,
    prediction,
)
from inference.model import LoadedModel
from lineage.transforms import to_array

log = logging.getLogger("lineage.inference")
INLINE_DECODE_BYTES = 32 * 1024


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) as soon as it is known to exceed `limit`: from the
    Content-Length header before reading anything, or while streaming a chunked body."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(
            413,
            "payload too large",
            f"{declared} bytes; the limit is {limit} (6 MiB, as InvokeEndpoint)",
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, "payload too large", f"over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def decoded(
    request: Request, limits: Limits, transform: Callable[[Any], Any]
) -> tuple[list[Any], bool]:
    """The request's images as model inputs, and whether it was a batch (RequestError when
    the request is refused)."""
    check_accept(request.headers.get("accept"))
    body = await read_body(request, MAX_BODY_BYTES)
    content_type = request.headers.get("content-type")

    def decode() -> tuple[list[Any], bool]:
        return decode_request(content_type, body, limits, transform)

    # A small body decodes faster than a hop to a thread and back; a large one is decoded off
    # the event loop so /ping and other requests keep being answered.
    if len(body) <= INLINE_DECODE_BYTES:
        return decode()
    return await asyncio.to_thread(decode)


async def decoded_or_refused(
    request: Request, limits: Limits, transform: Callable[[Any], Any]
) -> tuple[list[Any], bool] | Response:
    """The request's inputs, or the answer that refuses it (a JSON error; nothing for a
    client that went away mid-body: there is no one to answer, and no trace to log)."""
    try:
        return await decoded(request, limits, transform)
    except RequestError as exc:
        return JSONResponse(exc.body(), status_code=exc.status)
    except ClientDisconnect:
        log.debug("a client disconnected before its request body was complete")
        return Response(status_code=499)
    except Exception as exc:  # a decoder bug must still answer JSON, and not kill us
        log.exception("unexpected failure decoding a request")
        failed = {"error": "internal error", "detail": f"{exc.__class__.__name__}"}
        return JSONResponse(failed, status_code=500)


def create_app(  # long: the handlers are closures over one model and batcher
    model: LoadedModel,
    *,
    max_batch: int = 32,
    max_wait_ms: float = 2.0,
    limits: Limits | None = None,
) -> Starlette:
    limits = limits or Limits.from_env()
    batcher = MicroBatcher(model.backend, max_batch=max_batch, max_wait_ms=max_wait_ms)

    def transform(image: Any) -> Any:
        return to_array(image, model.image_size)

    lineage = model.summary
    attributes = custom_attributes(lineage)
    state = {"ready": False}

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        batcher.start()
        state["ready"] = True
        yield
        state["ready"] = False
        await batcher.stop()

    async def ping(_: Request) -> Response:
        return Response(status_code=200 if state["ready"] else 503)

    async def invocations(request: Request) -> Response:
        batcher.arrive()
        predicted = False
        try:
            response, predicted = await answer(request)
            return response
        finally:
            if not predicted:
                batcher.leave()

    async def answer(request: Request) -> tuple[Response, bool]:
        """The response, and whether the request reached the batcher."""
        inputs = await decoded_or_refused(request, limits, transform)
        if isinstance(inputs, Response):
            return inputs, False
        tensors, is_batch = inputs
        try:
            probabilities = await batcher.predict(tensors)  # counts the request out
        except Exception as exc:  # noqa: BLE001 - a failed forward answers JSON 500
            failed = {"error": "inference failed", "detail": str(exc)[:500]}
            return JSONResponse(failed, status_code=500), True
        answers = [prediction(p, model.classes, lineage) for p in probabilities]
        payload: Any = {"predictions": answers} if is_batch else answers[0]
        headers = {"X-Amzn-SageMaker-Custom-Attributes": attributes}
        return JSONResponse(payload, headers=headers), True

    async def execution_parameters(_: Request) -> Response:
        return JSONResponse(
            {
                "MaxConcurrentTransforms": int(
                    os.environ.get("SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", "4")
                ),
                "BatchStrategy": os.environ.get("SAGEMAKER_BATCH_STRATEGY", "MULTI_RECORD"),
                "MaxPayloadInMB": int(os.environ.get("SAGEMAKER_MAX_PAYLOAD_IN_MB", "6")),
            }
        )

    async def full_lineage(_: Request) -> Response:
        return JSONResponse(model.served_lineage)

    return Starlette(
        routes=[
            Route("/ping", ping, methods=["GET"]),
            Route("/invocations", invocations, methods=["POST"]),
            Route("/execution-parameters", execution_parameters, methods=["GET"]),
            Route("/lineage", full_lineage, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
