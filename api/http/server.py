"""How `serve` runs uvicorn: its httptools protocol, with a deadline and a size cap for request
headers, and a cap on connections.

uvicorn itself never times out a connection that has not finished sending its request line and
headers (its keep-alive timer only runs between requests, and is cancelled by the first byte of
the next one), so a client trickling headers, or sending nothing, holds a connection forever:
thousands of them exhaust the process's file descriptors. HeaderDeadline closes such a
connection `header_timeout` seconds after it opened, or after the next request's first byte.

httptools (llhttp, in C) rather than h11 (pure Python): parsing each request and writing its
response in h11 was about a tenth of the cost of a small query. uvicorn bounds request heads
only with h11 (`h11_max_incomplete_event_size`), so HeaderDeadline bounds them too."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.settings import Settings

# uvicorn's own default for h11, written out because it is also our limit on request heads.
MAX_HEADER_BYTES = 16 * 1024
TOO_LARGE = "Request line and headers over 16 KiB."


class HeaderDeadline(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose request line and headers
    arrive too slowly, and answering 400 (then closing) to a head over MAX_HEADER_BYTES."""

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self._deadline: asyncio.TimerHandle | None = None
        self._in_head = True  # waiting for a request's head (or the rest of it)
        self._head_bytes = 0  # bytes received since the head began
        self._head_parts = 0  # bytes of its request target, header names and values
        self._too_large = False

    # uvicorn's protocol narrows asyncio's BaseTransport to Transport (under an ignore of its
    # own); this override keeps uvicorn's signature.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        was_in_head = self._in_head
        if was_in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and not was_in_head:  # a request began in this piece
            self._head_bytes = len(data)
        # Still in the head after this piece: all of it was head. A head completed in it is
        # measured by its parts (the rest may be body).
        over = self._in_head and self._head_bytes > MAX_HEADER_BYTES
        if (over or self._too_large) and not self.transport.is_closing():
            self._disarm()
            self.logger.warning(TOO_LARGE)
            self.send_400_response(TOO_LARGE)

    def on_message_begin(self) -> None:  # the first byte of a (next) request
        super().on_message_begin()
        self._in_head, self._head_parts = True, 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(name, value)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        self._disarm()
        if not self._too_large:  # else data_received answers 400 and no request runs
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._too_large:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._too_large:
            super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _count(self, *parts: bytes) -> None:
        self._head_parts += sum(len(part) for part in parts)
        self._too_large = self._too_large or self._head_parts > MAX_HEADER_BYTES

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self._in_head and not self.transport.is_closing():
            self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for uvicorn.run / uvicorn.Config: the protocol with the header
    deadline and size limit, the connection cap (503 beyond it) and the WebSocket message
    cap (uvicorn would otherwise buffer up to 16 MiB before the app can refuse)."""
    return {
        "http": functools.partial(HeaderDeadline, header_timeout=settings.header_timeout_seconds),
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": 5,
        "ws_max_size": settings.max_body_bytes,
    }
