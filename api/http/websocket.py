"""The WebSocket side of /graphql (graphql-transport-ws), under the rules of HTTP: a bearer token
is checked at connection_init (4403 when missing or bad) and holds only until its `exp` (then
4403 again); a message over IMAGING_MAX_BODY_BYTES closes the socket (1009); at most
IMAGING_MAX_SUBSCRIPTIONS operations run at once on one socket; and a subscription event is
encoded once for every subscriber that asked for it with the same operation and access."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Mapping
from json import JSONDecodeError
from typing import TYPE_CHECKING, Any

import orjson
from graphql import GraphQLError
from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import NonJsonMessageReceived, NonTextMessageReceived
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    Message,
    SubscribeMessage,
)

from api.access.audit import CANCELLED
from api.errors import map_error
from api.graphql.context import Context
from api.graphql.limits import rejected
from api.graphql.resolvers.subscriptions import delivering
from store.fhir.outcome import BAD_USER_INPUT

if TYPE_CHECKING:
    from api.http.app import _GraphQL

FORBIDDEN_CLOSE, TOO_BIG_CLOSE = 4403, 1009
_REASON_BYTES = 123  # the most a WebSocket close frame carries


def _reason(text: str) -> str:
    return text.encode()[:_REASON_BYTES].decode(errors="ignore")


class Socket(ASGIWebSocketAdapter):
    """Strawberry's socket adapter, refusing a message over the body limit, and sending
    nothing once the socket is closed (an operation still running then has no one to tell)."""

    # Strawberry annotates the adapter's view as a bare AsyncBaseHTTPView, whose context type
    # then defaults to None; the view here is the app's, with api.graphql.context.Context.
    view: _GraphQL  # type: ignore[assignment]

    async def iter_json(
        self, *, ignore_parsing_errors: bool = False
    ) -> AsyncGenerator[object, None]:
        # Strawberry's loop, with the size check between receiving and decoding.
        limit = self.view.settings.max_body_bytes
        try:
            while self.ws.application_state != WebSocketState.DISCONNECTED:
                try:
                    text = await self.ws.receive_text()
                    # Characters never outnumber bytes: encode only when it can matter.
                    if len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit):
                        await self.close(TOO_BIG_CLOSE, f"message over {limit} bytes")
                        return
                    yield self.view.decode_json(text)
                except JSONDecodeError as error:
                    if not ignore_parsing_errors:
                        raise NonJsonMessageReceived from error
        except KeyError as error:
            raise NonTextMessageReceived from error
        except WebSocketDisconnect:
            pass

    async def send_json(self, message: Mapping[str, object]) -> None:
        await self.send_encoded(self.view.encode_json(message))

    async def send_encoded(self, data: bytes | str) -> None:
        """Sends one encoded message as a text frame: graphql-transport-ws is a text protocol,
        and its clients (graphql-ws, Apollo's GraphQLWsLink, gql) reject binary frames."""
        if self.ws.application_state == WebSocketState.DISCONNECTED:
            return
        try:
            await self.ws.send_text(data.decode() if isinstance(data, bytes) else data)
        except (WebSocketDisconnect, WebSocketDisconnected):
            # The client left: the handler's loop sees it too and ends every operation.
            # (Raised from an operation, Strawberry would log it as a fault, with a traceback.)
            return

    async def close(self, code: int, reason: str) -> None:
        if self.ws.application_state != WebSocketState.DISCONNECTED:
            await self.ws.close(code=code, reason=_reason(reason))


def _malformed(payload: Any) -> str | None:
    """What is wrong with a subscribe message's payload, as the GraphQL-over-HTTP rules say
    of a request's parameters (Strawberry let such an operation end without an answer, or
    answered it with an internal error); None when nothing is."""
    if not isinstance(payload, dict):
        return "payload must be an object with query, and optionally variables, operationName"
    for key, kind, said in (
        ("query", str, "a string"),
        ("operationName", str | None, "a string or null"),
        ("variables", dict | None, "an object or null"),
        ("extensions", dict | None, "an object or null"),
    ):
        if not isinstance(payload.get(key), kind):
            return f"{key} must be {said}"
    return None


class TransportWS(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws with the caller's token checked at connection_init and before
    every operation, the socket closed at the token's `exp`, a coded limit on operations in
    flight, and one encoding per event and operation."""

    websocket: Socket
    view: _GraphQL
    expiry: asyncio.Task[None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._running: set[Operation[Context, None]] = set()  # operations whose task began

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        payload = message.get("payload") or {}
        if (
            isinstance(payload, dict)
            and not self.connection_init_received
            and not self.connection_timed_out
        ):
            self.context.connection_params = payload
            if (error := self.context.access.error) is not None:
                self.connection_init_received = True
                if self.connection_init_timeout_task:
                    self.connection_init_timeout_task.cancel()
                await self.websocket.close(FORBIDDEN_CLOSE, error.message)
                return
        await super().handle_connection_init(message)
        expires = self.context.access.expires
        if self.connection_acknowledged and expires is not None and self.expiry is None:
            self.expiry = asyncio.create_task(self._expire(expires))
            self.expiry.add_done_callback(self._task_done)

    async def _expire(self, expires: float) -> None:
        try:
            await asyncio.sleep(max(0.0, expires - time.time()))
            await self._end("the token expired")
        except Exception as error:  # logged, as Strawberry's own tasks are
            await self.handle_task_exception(error)

    async def _end(self, reason: str) -> None:
        """Ends every operation, then closes the socket with 4403."""
        for operation_id in list(self.operations):
            await self.cleanup_operation(operation_id)
        await self.websocket.close(FORBIDDEN_CLOSE, reason)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        # Before every operation, not only at connection_init: a socket outlives its token.
        if self.connection_acknowledged and self.context.access.expired:
            await self._end("the token expired")
            return
        limit = self.view.settings.max_subscriptions
        payload: Any = message.get("payload")
        error: GraphQLError | None = None
        if self.connection_acknowledged and message["id"] not in self.operations:
            if len(self.operations) >= limit:
                error = rejected(
                    "operations in flight on this socket", limit, len(self.operations) + 1
                )
            elif (wrong := _malformed(payload)) is not None:
                error = map_error(GraphQLError(wrong))
        if error is not None:
            # Refused before an operation ran: answered and recorded as such.
            name = payload.get("operationName") if isinstance(payload, dict) else None
            code = (error.extensions or {}).get("code", BAD_USER_INPUT)
            self.view.refused_operation(self.context, name, code)
            await self.send_message(
                {"id": message["id"], "type": "error", "payload": [error.formatted]}
            )
            return
        await super().handle_subscribe(message)

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        self._running.add(operation)
        try:
            await super().run_operation(operation)
        finally:
            self._running.discard(operation)

    async def cleanup_operation(self, operation_id: str) -> None:
        """Ends an operation the client completed or left. One that never got to run (a
        subscribe and its complete in one read) has no record of its own: it gets one,
        CANCELLED. One still running sends nothing more: a mutation, which runs to its end
        (api/graphql/execution.py), must not answer under an id the client may have given to
        another operation since, nor take that operation's place."""
        operation = self.operations.get(operation_id)
        if operation is not None:
            operation.completed = True  # Strawberry's own flag: nothing more is sent
            task = operation.task
            if operation not in self._running and task is not None and not task.done():
                self.view.refused_operation(self.context, operation.operation_name, CANCELLED)
        await super().cleanup_operation(operation_id)

    async def send_message(self, message: Message) -> None:
        encoded = self._shared_encoding(message)
        if encoded is None:
            await super().send_message(message)
        else:
            await self.websocket.send_encoded(encoded)

    def _shared_encoding(self, message: Message) -> bytes | None:
        """A `next` message of a subscription event, its payload encoded once per event for
        every subscriber of the same operation with the same access (only the operation id
        differs)."""
        change = delivering.get()
        if message["type"] != "next" or change is None:
            return None
        operation = self.operations.get(message["id"])
        payload: Any = message["payload"]
        if operation is None or set(payload) != {"data"}:  # errors and extensions are not shared
            return None
        access = self.context.access
        key = (
            self.schema,
            # What the gate lets this caller see: the same operation renders another caller's
            # event differently (a Reference.resource it may not read is null for it).
            access.open,
            access.confined,
            access.patient,
            operation.query,
            operation.operation_name,
            orjson.dumps(operation.variables, option=orjson.OPT_SORT_KEYS),
        )
        encoded = change.renders.get(key)
        if encoded is None:
            encoded = change.renders[key] = self.view.encode_json(payload)
        return b'{"id":%b,"type":"next","payload":%b}' % (
            self.view.encode_json(message["id"]),
            encoded,
        )

    async def shutdown(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
        await super().shutdown()
