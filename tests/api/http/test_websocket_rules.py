"""The WebSocket keeps the rules of HTTP: the token is checked at connection_init and holds only
until its `exp`, messages are capped like bodies, the Origin check follows the CORS origins, and
a socket's subscriptions and a subscriber's backlog are bounded. Each test talks
graphql-transport-ws to a real server on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import suppress
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from api.http.app import _GraphQL, create_app
from api.settings import Settings
from store.interop import demo
from store.mongo.events import Change
from store.mongo.repository import Repository
from tests.support.graphql import CREATE, post
from tests.support.server import serving
from tests.support.tokens import AUDIENCE, ISSUER, SECRET, token
from tests.support.websocket import SUBSCRIBE, init, receive, socket, subscribe

# No clock-skew leeway: the expiry tests use tokens that live two or three seconds.
JWT = {
    "auth": "jwt",
    "jwt_secret": SECRET,
    "jwt_audience": AUDIENCE,
    "jwt_issuer": ISSUER,
    "jwt_leeway_seconds": 0,
}


async def close_code(ws: ClientConnection, wait: float = 5) -> int | None:
    """Reads until the server closes the socket; its close code."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), wait)
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


# --- the token at connection_init ------------------------------------------------------------


@pytest.mark.parametrize(
    "payload", [{}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic dXNlcjpwYXNz"}]
)
async def test_a_missing_or_bad_token_at_connection_init_closes_with_4403(
    store: Repository, payload: dict[str, Any]
) -> None:
    async with (
        serving(create_app(Settings(seed=False, **JWT), store)) as address,
        socket(address) as ws,
    ):
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        assert await close_code(ws) == 4403


@pytest.mark.parametrize("form", ["Authorization", "authorization", "headers.Authorization"])
async def test_the_token_is_accepted_in_each_connection_parameter_form(
    store: Repository, form: str
) -> None:
    bearer = f"Bearer {token('user/ImagingStudy.rs')}"
    payload = (
        {"headers": {"Authorization": bearer}} if form.startswith("headers.") else {form: bearer}
    )
    app = create_app(Settings(seed=False, **JWT), store)
    async with serving(app) as address, socket(address) as ws:
        assert (await init(ws, payload))["type"] == "connection_ack"
        await subscribe(ws, "1")
        await asyncio.sleep(0.2)
        app.state.events.publish(_change(1))
        event = await receive(ws)
    assert event["payload"]["data"]["ImagingStudyChanged"]["id"] == "s1", event


# --- the token's exp ---------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_socket_is_closed_with_4403_when_its_token_expires(store: Repository) -> None:
    app = create_app(Settings(seed=False, **JWT), store)
    writer = token("system/*.*")
    short = token("user/ImagingStudy.rs", exp=int(time.time()) + 3)
    async with (
        serving(app) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as http,
        socket(address) as ws,
    ):
        assert (await init(ws, {"Authorization": f"Bearer {short}"}))["type"] == "connection_ack"
        await subscribe(ws, "1")
        await asyncio.sleep(0.2)
        assert "errors" not in await post(http, CREATE, writer, res=demo.study("s1", 1, 1))
        assert (await receive(ws))["type"] == "next"  # before exp: the event arrives
        assert await close_code(ws) == 4403  # at exp, without the client doing anything


@pytest.mark.slow
async def test_no_operation_runs_after_the_token_expires(store: Repository) -> None:
    app = create_app(Settings(seed=False, **JWT), store)
    exp = int(time.time()) + 3
    short = token("system/*.*", exp=exp)
    async with serving(app) as address, socket(address) as ws:
        assert (await init(ws, {"Authorization": f"Bearer {short}"}))["type"] == "connection_ack"
        await asyncio.sleep(exp - time.time() + 0.2)
        with suppress(websockets.ConnectionClosed):  # closed already, or closed by this
            await subscribe(ws, "1", CREATE, res=demo.study("late", 1, 1))
        assert await close_code(ws) == 4403
    assert await store.get("late") is None


def test_an_expired_token_refuses_every_check(monkeypatch: pytest.MonkeyPatch) -> None:
    from api.access.auth import Authenticator
    from api.errors import AccessError
    from store.fhir.outcome import UNAUTHENTICATED, StoreError

    access = Authenticator(Settings(**JWT)).access(
        f"Bearer {token('system/*.*', exp=int(time.time()) + 60)}"
    )
    assert access.require("r", "read") is None
    monkeypatch.setattr("api.access.auth.time.time", lambda: time.monotonic() + 1e10)
    with pytest.raises(AccessError) as refused:
        access.require("r", "read")
    assert refused.value.code == UNAUTHENTICATED
    # The access rules' refusal is the api's own, not the store's.
    assert not isinstance(refused.value, StoreError)


# --- message size and Origin -------------------------------------------------------------------


async def test_a_message_over_the_body_limit_closes_the_socket(store: Repository) -> None:
    app = create_app(Settings(seed=False, max_body_bytes=2_000), store)
    async with serving(app) as address, socket(address) as ws:
        assert (await init(ws))["type"] == "connection_ack"
        await subscribe(ws, "1", SUBSCRIBE + " " * 2_000)
        assert await close_code(ws) == 1009


async def test_a_message_within_the_body_limit_is_served(store: Repository) -> None:
    app = create_app(Settings(seed=False, max_body_bytes=2_000), store)
    async with serving(app) as address, socket(address) as ws:
        assert (await init(ws))["type"] == "connection_ack"
        await subscribe(ws, "1", "{ __typename }")
        assert (await receive(ws))["payload"] == {"data": {"__typename": "Query"}}


async def test_the_origin_check_follows_the_cors_origins(
    store: Repository, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    app = create_app(Settings(seed=False, cors_origins=("https://viewer.example",)), store)
    async with serving(app) as address:
        async with socket(address, origin="https://viewer.example") as ws:
            assert (await init(ws))["type"] == "connection_ack"
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with socket(address, origin="https://evil.example"):
                pass
    assert refused.value.response.status_code == 403
    # The log names this service's setting, not the library's parameter.
    [line] = [r.getMessage() for r in caplog.records if "evil.example" in r.getMessage()]
    assert "IMAGING_CORS_ORIGINS" in line
    assert "allowed_origins" not in line


# --- bounds: subscriptions per socket, backlog per subscriber, one encoding per event ---------


async def test_a_socket_holds_at_most_the_configured_subscriptions(store: Repository) -> None:
    app = create_app(Settings(seed=False, max_subscriptions=2), store)
    async with serving(app) as address, socket(address) as ws:
        assert (await init(ws))["type"] == "connection_ack"
        for op in ("1", "2", "3"):
            await subscribe(ws, op)
        message = await receive(ws)
    assert (message["id"], message["type"]) == ("3", "error")
    error = message["payload"][0]
    assert (error["extensions"]["code"], error["extensions"]["limit"]) == ("QUERY_REJECTED", 2)


def _change(n: int) -> Change:
    return Change("create", f"s{n}", "1", "registered", demo.study(f"s{n}", 1, 1))


async def test_a_subscriber_that_falls_behind_gets_an_error_then_complete(
    store: Repository, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(Settings(seed=False, subscriber_backlog=3), store)
    async with serving(app) as address, socket(address) as ws:
        assert (await init(ws))["type"] == "connection_ack"
        await subscribe(ws, "1")
        await asyncio.sleep(0.2)
        with caplog.at_level(logging.DEBUG):
            for n in range(5):  # all at once: the subscriber cannot keep up
                app.state.events.publish(_change(n))
            messages = [await receive(ws)]
            while messages[-1]["type"] == "next" and not messages[-1]["payload"].get("errors"):
                messages.append(await receive(ws))
            messages.append(await receive(ws))
    error = messages[-2]["payload"]["errors"][0]
    assert error["extensions"]["code"] == "QUERY_REJECTED"
    assert error["extensions"]["limit"] == 3
    assert messages[-1] == {"id": "1", "type": "complete"}
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING] == []
    assert app.state.events.subscribers == 0


async def test_an_event_is_encoded_once_whatever_the_number_of_subscribers(
    store: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded: list[bytes] = []
    original = _GraphQL.encode_json

    def counting(self: _GraphQL, data: object) -> bytes:
        encoded.append(original(self, data))
        return encoded[-1]

    monkeypatch.setattr(_GraphQL, "encode_json", counting)
    app = create_app(Settings(seed=False), store)
    async with (
        serving(app) as address,
        socket(address) as a,
        socket(address) as b,
        socket(address) as c,
    ):
        for ws, op in ((a, "x"), (b, "y"), (c, "z")):
            assert (await init(ws))["type"] == "connection_ack"
            await subscribe(ws, op, id="s1")
        await asyncio.sleep(0.2)
        app.state.events.publish(_change(1))
        events = [await receive(ws) for ws in (a, b, c)]
    assert [(e["id"], e["payload"]["data"]["ImagingStudyChanged"]["id"]) for e in events] == [
        ("x", "s1"),
        ("y", "s1"),
        ("z", "s1"),
    ]
    assert len([e for e in encoded if b'"ImagingStudyChanged"' in e]) == 1


async def test_the_legacy_graphql_ws_protocol_is_not_served(store: Repository) -> None:
    app = create_app(Settings(seed=False, **JWT), store)
    async with (
        serving(app) as address,
        websockets.connect(f"ws://{address}/graphql", subprotocols=["graphql-ws"]) as ws,
    ):
        # It would have taken a token-less connection_init and ignored the token's exp.
        with suppress(websockets.ConnectionClosed):
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert await close_code(ws) == 4406


async def test_each_operation_on_a_socket_is_audited_alone(
    store: Repository, caplog: pytest.LogCaptureFixture
) -> None:
    """A socket keeps one context for all its operations; the gate and the audit trail are
    per operation, so an operation's record names only the studies it touched."""
    for name in ("first", "second"):
        await store.create(demo.study(name, 1, 1))
    async with serving(create_app(Settings(seed=False), store)) as address, socket(address) as ws:
        await init(ws)
        with caplog.at_level("INFO", logger="imaging.audit"):
            for n, name in enumerate(("first", "second")):
                await subscribe(ws, f"q{n}", f'{{ ImagingStudy(id: "{name}") {{ id }} }}')
                assert (await receive(ws))["type"] == "next"
                assert (await receive(ws))["type"] == "complete"
    records = [r.audit for r in caplog.records if hasattr(r, "audit")]
    assert [[e["what"]["reference"] for e in r["entity"] if "role" not in e] for r in records] == [
        ["ImagingStudy/first"],
        ["ImagingStudy/second"],
    ]


# --- one encoding per event, shared only by subscribers who may see the same -----------------

FOLLOWS = """subscription($id: ID) { ImagingStudyChanged(id: $id) { action id resource {
  extension { valueReference { resource(optional: true) { ... on ImagingStudy { id description
  } } } } } } }"""


async def test_a_shared_event_encoding_never_shows_one_caller_what_another_may_see(
    store: Repository,
) -> None:
    """Patient A's study refers to patient B's; A and an administrator subscribe with the same
    operation and variables. When A's study changes, A's event shows the reference unresolved
    and the administrator's shows B's study, whichever subscriber is served first."""
    await store.create({**demo.study("b1", 1, 1, patient="B"), "description": "B only"})
    mine = demo.study("a1", 1, 1, patient="A")
    mine["extension"] = [{"url": "urn:x", "valueReference": {"reference": "ImagingStudy/b1"}}]
    await store.create(mine)
    patient = token("patient/ImagingStudy.cruds", patient="A")
    admin = token("system/*.*")
    app = create_app(Settings(seed=False, **JWT), store)
    for order, status in (((patient, admin), "cancelled"), ((admin, patient), "entered-in-error")):
        async with (
            serving(app) as address,
            socket(address) as first,
            socket(address) as second,
        ):
            for ws, bearer in zip((first, second), order, strict=True):
                assert (await init(ws, {"Authorization": f"Bearer {bearer}"}))["type"] == (
                    "connection_ack"
                )
                await subscribe(ws, "s", FOLLOWS, id="a1")
            await asyncio.sleep(0.2)  # both subscribed before the write
            await store.set_status("a1", status, None)
            for ws, bearer in zip((first, second), order, strict=True):
                event = (await receive(ws))["payload"]["data"]["ImagingStudyChanged"]
                followed = event["resource"]["extension"][0]["valueReference"]["resource"]
                if bearer == patient:
                    assert followed is None
                else:
                    assert followed == {"id": "b1", "description": "B only"}
