"""graphql-transport-ws from the client's side, for the tests that talk to a real server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

SUBSCRIBE = """subscription($id: ID, $patient: String) { ImagingStudyChanged(id: $id,
  patient: $patient) { action id versionId status resource { id subject { reference } } } }"""


def text_message(frame: str | bytes) -> dict[str, Any]:
    """A graphql-transport-ws message, asserting it came as a text frame: the reference
    clients (graphql-ws, Apollo, gql) reject binary frames, which json.loads would accept."""
    assert isinstance(frame, str), f"binary WebSocket frame: {frame[:80]!r}"
    message: dict[str, Any] = json.loads(frame)
    return message


@asynccontextmanager
async def socket(address: str, **options: Any) -> AsyncIterator[ClientConnection]:
    """A graphql-transport-ws connection to the server at `address`."""
    async with websockets.connect(
        f"ws://{address}/graphql", subprotocols=["graphql-transport-ws"], **options
    ) as ws:
        yield ws


async def init(ws: ClientConnection, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sends connection_init; the server's answer."""
    await ws.send(json.dumps({"type": "connection_init", "payload": payload or {}}))
    return text_message(await asyncio.wait_for(ws.recv(), 5))


async def subscribe(
    ws: ClientConnection, op: str, query: str = SUBSCRIBE, **variables: Any
) -> None:
    """Starts subscription `op`."""
    await ws.send(
        json.dumps(
            {"id": op, "type": "subscribe", "payload": {"query": query, "variables": variables}}
        )
    )


async def receive(ws: ClientConnection) -> dict[str, Any]:
    """The next message, within five seconds."""
    return text_message(await asyncio.wait_for(ws.recv(), 5))
