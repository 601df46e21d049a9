"""uvicorn's HTTP protocol (httptools) with a bound on a request's head.

httptools gathers a header's name and value before it calls back, so a request whose
headers never end (hundreds of megabytes, sent slowly or at once) would grow the server's
memory without bound and starve `/ping`. This protocol counts the bytes of each request's
head (request line and headers, up to the blank line) as they arrive and answers 431 and
closes the connection as soon as they exceed `MAX_HEAD_BYTES`, before the parser holds them.
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("lineage.inference")

MAX_HEAD_BYTES = 64 * 1024  # far above any real request's head (SageMaker sends a few hundred)
_END_OF_HEAD = b"\r\n\r\n"
_REFUSAL = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"connection: close\r\n"
    b"content-length: 75\r\n\r\n"
    b'{"error": "request header fields too large", "detail": "over 65536 bytes"}\n'
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that refuses a request head over `MAX_HEAD_BYTES` (431, closed)."""

    max_head_bytes = MAX_HEAD_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._tail = b""

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            joined = self._tail + data
            end = joined.find(_END_OF_HEAD)
            seen = len(data) if end < 0 else max(0, end + len(_END_OF_HEAD) - len(self._tail))
            self._head_bytes += seen
            if self._head_bytes > self.max_head_bytes:
                self._refuse()
                return
            if end < 0:
                self._tail = joined[-(len(_END_OF_HEAD) - 1) :]
            else:
                self._in_head = False
        super().data_received(data)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes, self._tail = True, 0, b""

    def _refuse(self) -> None:
        log.warning("refused a request whose head exceeds %d bytes (431)", self.max_head_bytes)
        if not self.transport.is_closing():
            self.transport.write(_REFUSAL)
            self.transport.close()
