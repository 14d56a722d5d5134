"""ASGI middleware: a request id on every request and response, the Host allow-list, a cap on
request bodies and a deadline for reading them, and CORS. Their refusals are GraphQL JSON
bodies (api/http/answers.py), which GraphQL clients can show."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.http.answers import Refusal, answer_media
from api.http.logs import request_id

log = logging.getLogger("imaging.api")


class RequestId:
    """Takes X-Request-ID from the caller (or makes one), logs under it and echoes it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or ()).get(b"x-request-id", b"")
        rid = given.decode() if _printable(given) else os.urandom(16).hex()  # uuid4's cost / 3
        token = request_id.set(rid)
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
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
            await send(
                {
                    "type": "websocket.close",
                    "code": 1008,
                    "reason": "Host not allowed (IMAGING_ALLOWED_HOSTS)",
                }
            )
        else:
            # The allowed names are not listed: they may be internal ones.
            await _refuse(
                scope,
                send,
                Refusal(
                    400,
                    "Host not allowed: this server answers only to the host names in "
                    "IMAGING_ALLOWED_HOSTS",
                    issue="security",
                ),
            )


async def _refuse(scope: Scope, send: Send, refusal: Refusal, close: bool = False) -> None:
    """Sends `refusal` as a GraphQL JSON body, in the media type the request accepts."""
    accept = Headers(scope=scope).get("accept")
    status, fields, body = refusal.answer(answer_media(accept))
    fields.setdefault("cache-control", "no-store")  # as every answer (api/http/view.py)
    headers: list[Any] = [(k.encode(), v.encode()) for k, v in fields.items()]
    headers.append((b"content-length", str(len(body)).encode()))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _SlowBody(Exception):
    pass


async def _refusing(
    app: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    error: type[Exception],
    refuse: Callable[[Send], Awaitable[None]],
) -> None:
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
            await _refuse(
                scope,
                send,
                Refusal(
                    408,
                    f"request body not received within {self.seconds:g} s "
                    "(IMAGING_BODY_TIMEOUT_SECONDS)",
                    issue="timeout",
                ),
                close=True,
            )

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
            await self._refuse(scope, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        await _refusing(
            self.app, scope, counted, send, _TooLarge, lambda send: self._refuse(scope, send)
        )

    async def _refuse(self, scope: Scope, send: Send) -> None:
        await _refuse(
            scope,
            send,
            Refusal(
                413,
                f"request body over {self.max_bytes} bytes (IMAGING_MAX_BODY_BYTES)",
                issue="too-long",
            ),
        )


# What browsers may send cross-origin besides the CORS-safelisted headers: a bearer token, a
# JSON body, Apollo Client's client awareness headers, and a request id to trace a call by.
CORS_HEADERS = (
    "authorization",
    "content-type",
    "apollographql-client-name",
    "apollographql-client-version",
    "x-request-id",
)


class Explainer:
    """Logs what would allow a refused request: each (kind, value) at most once per `every`
    seconds, and at most `burst` lines per `every` seconds in all, so an anonymous flood of
    made-up origins neither floods the log nor silences it for good: what was left out is
    counted, and the next line says how many."""

    def __init__(self, every: float = 600.0, burst: int = 20, remembered: int = 1_000) -> None:
        self.every, self.burst, self.remembered = every, burst, remembered
        self._last: dict[tuple[str, str], float] = {}  # oldest first
        self._window, self._lines, self._left_out = 0.0, 0, 0

    def __call__(self, kind: str, value: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get((kind, value), -self.every) < self.every:
            return
        if now - self._window >= self.every:
            self._window, self._lines = now, 0
        if self._lines >= self.burst:
            self._left_out += 1
            return
        self._lines += 1
        self._last.pop((kind, value), None)
        self._last[(kind, value)] = now
        while len(self._last) > self.remembered:
            del self._last[next(iter(self._last))]
        if self._left_out:
            message += " (%d similar refusals before this one were not logged)"
            args = (*args, self._left_out)
            self._left_out = 0
        log.warning(message, *args)

    def refused_origin(self, origin: str, what: str) -> None:
        """Logs that `what` from a page on `origin` was refused, and the setting that would
        allow it."""
        shown = _loggable(origin)
        self(
            "origin",
            shown,
            "%s from origin %s refused: add it to IMAGING_CORS_ORIGINS "
            "(comma-separated origins) to let its pages call this API",
            what,
            shown,
        )


class Cors(CORSMiddleware):
    """Starlette's CORS for the IMAGING_CORS_ORIGINS origins (none: same-origin pages only).
    A refused preflight fails in the browser with nothing in this server's log, so the first
    refusal of each origin, method or header is logged with what would allow it."""

    def __init__(self, app: ASGIApp, origins: tuple[str, ...], explain: Explainer) -> None:
        super().__init__(
            app,
            allow_origins=list(origins),
            allow_methods=["GET", "POST"],
            allow_headers=CORS_HEADERS,
            expose_headers=["x-request-id"],
        )
        self.explain = explain

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 200:
            self._explain(request_headers)
        return response

    def _explain(self, request: Headers) -> None:
        if not self.is_allowed_origin(origin=request["origin"]):
            self.explain.refused_origin(request["origin"], "CORS preflight")
        method = _loggable(request["access-control-request-method"])
        if method not in self.allow_methods:
            self.explain(
                "method",
                method,
                "CORS preflight for method %s refused: only GET and POST are served",
                method,
            )
        asked = request.get("access-control-request-headers") or ""
        for header in (h.strip().lower() for h in asked.split(",") if h.strip()):
            if header not in self.allow_headers:
                self.explain(
                    "header",
                    _loggable(header),
                    "CORS preflight refused: header %s is"
                    " not one a cross-origin page may send (allowed: %s)",
                    _loggable(header),
                    ", ".join(CORS_HEADERS),
                )


def _loggable(value: str) -> str:
    """A header value as it may go in a log line: printable ASCII, at most 100 characters."""
    return "".join(c if " " <= c <= "~" else "?" for c in value[:100])
