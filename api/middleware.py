"""ASGI middleware: a request id on every request and response, the Host allow-list, a cap on
request bodies and a deadline for reading them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.logs import request_id


class RequestId:
    """Takes X-Request-ID from the caller (or makes one), logs under it and echoes it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or ()).get(b"x-request-id", b"")
        rid = given.decode() if _printable(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", rid.encode())]
            await send(message)
        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            pass  # the client left mid-request: no one to answer, and not an incident to log
        finally:
            request_id.reset(token)


def _printable(value: bytes) -> bool:
    """1 to 128 printable ASCII characters: safe in a log line and back in a header."""
    return 0 < len(value) <= 128 and all(0x20 <= byte <= 0x7E for byte in value)


def host_name(host: bytes) -> str | None:
    """The name in a Host header, lower-cased, without its port (IPv6 keeps its brackets);
    None when the header is not a host name with an optional numeric port."""
    try:
        text = host.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return None
    if text.startswith("["):
        end = text.find("]") + 1
        name, rest = (text[:end], text[end:]) if end else ("", "")
    else:
        name, colon, port = text.partition(":")
        rest = colon + port
    if not name or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
        return None
    return name


class HostCheck:
    """Answers 400 (or closes a WebSocket) when the Host header is not an allowed name, which
    is what a page on another site sends after rebinding its DNS name to this address."""

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]) -> None:
        self.app = app
        self.allowed = frozenset(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or "*" in self.allowed:
            await self.app(scope, receive, send)
            return
        host = dict(scope.get("headers") or ()).get(b"host", b"")
        if host_name(host) in self.allowed:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008,
                        "reason": "Host not allowed (IMAGING_ALLOWED_HOSTS)"})
        else:
            # The allowed names are not listed: they may be internal ones.
            await _plain(send, 400, b"Host not allowed: this server answers only to the host "
                         b"names in IMAGING_ALLOWED_HOSTS")


async def _plain(send: Send, status: int, body: bytes, close: bool = False) -> None:
    headers: list[Any] = [(b"content-type", b"text/plain; charset=utf-8"),
                          (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _SlowBody(Exception):
    pass


async def _refusing(app: ASGIApp, scope: Scope, receive: Receive, send: Send,
                    error: type[Exception], refuse: Callable[[Send], Awaitable[None]]) -> None:
    """Runs `app`; when its reading of the body raises `error` before a response has started,
    answers with `refuse` instead (once a response started, the connection just ends)."""
    started = False

    async def tracking(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)
    try:
        await app(scope, receive, tracking)
    except error:
        if not started:
            await refuse(send)


class BodyTimeout:
    """Answers 408 and closes the connection when a request body is not all read within
    `seconds` of the request's start: a client trickling a body would hold a worker's
    request (and its memory) open for as long as it likes."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds
        complete = False

        async def timed() -> Message:
            nonlocal complete
            if complete:  # later reads wait for a disconnect, which may rightly take long
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _SlowBody from None
            complete = message["type"] != "http.request" or not message.get("more_body")
            return message

        async def refuse(send: Send) -> None:
            await _plain(send, 408, f"request body not received within {self.seconds:g} s"
                         .encode(), close=True)
        await _refusing(self.app, scope, timed, send, _SlowBody, refuse)


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Answers 413 to a request body over `max_bytes`, whether it says its length or not."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message
        await _refusing(self.app, scope, counted, send, _TooLarge, self._refuse)

    async def _refuse(self, send: Send) -> None:
        body = f"request body over {self.max_bytes} bytes".encode()
        headers: list[Any] = [(b"content-type", b"text/plain"),
                              (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
