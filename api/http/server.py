"""How `serve` runs uvicorn: with a deadline for request headers and a cap on connections.

uvicorn itself never times out a connection that has not finished sending its request line and
headers (its keep-alive timer only runs between requests, and is cancelled by the first byte of
the next one), so a client trickling headers, or sending nothing, holds a connection forever:
thousands of them exhaust the process's file descriptors. HeaderDeadline closes such a
connection `header_timeout` seconds after it opened, or after the previous response."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.settings import Settings

# uvicorn's own default, written out because it is also our limit on request headers.
MAX_HEADER_BYTES = 16 * 1024


class HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request headers arrive too slowly."""

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self._deadline: asyncio.TimerHandle | None = None

    # uvicorn's H11Protocol narrows asyncio's BaseTransport to Transport (under an ignore of its
    # own); this override keeps uvicorn's signature.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # the first bytes of a (next) request
            self._arm()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # its headers are in: the app has it now
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for uvicorn.run / uvicorn.Config: the protocol with the header
    deadline, the header size limit, the connection cap (503 beyond it) and the WebSocket
    message cap (uvicorn would otherwise buffer up to 16 MiB before the app can refuse)."""
    return {
        "http": functools.partial(HeaderDeadline, header_timeout=settings.header_timeout_seconds),
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": 5,
        "ws_max_size": settings.max_body_bytes,
    }
