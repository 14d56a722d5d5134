"""ImagingStudyChanged over a real WebSocket (graphql-transport-ws) to a running server, and
the mapping of MongoDB change-stream events."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import websockets

from api.http.app import create_app
from api.settings import Settings
from store.interop import demo
from store.mongo.events import Bus, ChangeStreamFeeder, from_change_stream
from store.mongo.repository import Repository
from tests.support.change_streams import RECORDED, ReplayedCollection
from tests.support.graphql import CREATE, STATUS, post
from tests.support.server import serving
from tests.support.tokens import AUDIENCE, ISSUER, SECRET, token
from tests.support.websocket import SUBSCRIBE, init, receive, socket, subscribe, text_message


@asynccontextmanager
async def subscription(
    address: str, variables: dict[str, Any], params: dict[str, Any] | None = None
) -> AsyncIterator[Any]:
    """A graphql-transport-ws subscription; yields a function returning the next event."""
    async with websockets.connect(
        f"ws://{address}/graphql", subprotocols=["graphql-transport-ws"]
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": params or {}}))
        assert text_message(await ws.recv())["type"] == "connection_ack"
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": SUBSCRIBE, "variables": variables},
                }
            )
        )
        await asyncio.sleep(0.2)  # let the server register the subscriber

        async def next_event() -> dict[str, Any]:
            message = text_message(await asyncio.wait_for(ws.recv(), 5))
            assert message["type"] == "next", message
            return message["payload"]

        yield next_event


def _slowed(
    store: Repository, method: str, seconds: float, monkeypatch: pytest.MonkeyPatch
) -> asyncio.Event:
    """Makes the store's `method` wait `seconds` before it runs; the event is set when it is
    called (the operation is then in its store call)."""
    called, original = asyncio.Event(), getattr(store, method)

    async def slow(*args: Any, **kwargs: Any) -> Any:
        called.set()
        await asyncio.sleep(seconds)
        return await original(*args, **kwargs)

    monkeypatch.setattr(store, method, slow)
    return called


async def test_a_committed_write_reaches_the_subscriber(store: Repository) -> None:
    app = create_app(Settings(seed=False), store)
    async with serving(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        async with subscription(address, {"id": "s1"}) as next_event:
            await post(http, CREATE, res=demo.study("other", 1, 1))  # filtered out by id
            await post(http, CREATE, res=demo.study("s1", 1, 1))
            created = await next_event()
            await post(http, STATUS, id="s1", status="cancelled", v="1")
            updated = await next_event()
    assert created["data"]["ImagingStudyChanged"]["action"] == "create"
    event = updated["data"]["ImagingStudyChanged"]
    assert (event["action"], event["id"], event["versionId"], event["status"]) == (
        "update",
        "s1",
        "2",
        "cancelled",
    )


async def test_a_patient_scoped_subscriber_sees_only_its_patient(store: Repository) -> None:
    settings = Settings(
        seed=False, auth="jwt", jwt_secret=SECRET, jwt_audience=AUDIENCE, jwt_issuer=ISSUER
    )
    app = create_app(settings, store)
    writer = token("system/*.*")
    confined = {"Authorization": f"Bearer {token('patient/ImagingStudy.rs', patient='p1')}"}
    async with serving(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        async with subscription(address, {}, confined) as next_event:
            for n, patient in enumerate(["p2", "p2", "p1"]):
                body = await post(
                    http, CREATE, writer, res=demo.study(f"s{n}", 1, 1, patient=patient)
                )
                assert "errors" not in body
            event = (await next_event())["data"]["ImagingStudyChanged"]
    assert (event["id"], event["resource"]["subject"]["reference"]) == ("s2", "Patient/p1")


async def test_each_event_given_to_a_subscriber_is_audited_when_given(
    store: Repository, caplog: pytest.LogCaptureFixture
) -> None:
    """A subscription may run for days: the studies it discloses are recorded as they are
    given, each with the subscriber and the patient, and only those it was given."""
    caplog.set_level(logging.INFO, logger="imaging.audit")
    settings = Settings(
        seed=False, auth="jwt", jwt_secret=SECRET, jwt_audience=AUDIENCE, jwt_issuer=ISSUER
    )
    app = create_app(settings, store)
    writer = token("system/*.*", sub="writer")
    confined = {
        "Authorization": f"Bearer {token('patient/ImagingStudy.rs', patient='p1', sub='nurse')}"
    }
    async with serving(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        async with subscription(address, {}, confined) as next_event:
            for n, patient in enumerate(["p2", "p1"]):
                await post(http, CREATE, writer, res=demo.study(f"e{n}", 1, 1, patient=patient))
            await next_event()
            deliveries = [
                r.audit
                for r in caplog.records
                if r.name == "imaging.audit"
                and r.audit["category"] == [{"text": "graphql subscription event"}]
            ]
    [given] = deliveries  # e1 only: e0 is another patient's, never given
    assert given["agent"][0]["who"]["identifier"]["value"] == "nurse"
    assert {"what": {"reference": "ImagingStudy/e1"}} in given["entity"]
    assert {"what": {"reference": "Patient/p1"}, "role": {"text": "patient"}} in given["entity"]


async def test_subscribing_needs_read_access(store: Repository) -> None:
    settings = Settings(
        seed=False, auth="jwt", jwt_secret=SECRET, jwt_audience=AUDIENCE, jwt_issuer=ISSUER
    )
    app = create_app(settings, store)
    async with (
        serving(app) as address,
        websockets.connect(f"ws://{address}/graphql", subprotocols=["graphql-transport-ws"]) as ws,
    ):
        writer = {"Authorization": f"Bearer {token('user/ImagingStudy.c')}"}
        await ws.send(json.dumps({"type": "connection_init", "payload": writer}))
        await ws.recv()
        await ws.send(
            json.dumps(
                {"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIBE, "variables": {}}}
            )
        )
        message = text_message(await asyncio.wait_for(ws.recv(), 5))
    assert message["type"] in ("error", "next")
    errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
    assert errors[0]["extensions"]["code"] == "FORBIDDEN"


def test_change_stream_events_map_to_changes() -> None:
    changes = [from_change_stream(e) for e in RECORDED]
    assert [(c.action, c.id, c.version_id, c.status) if c else None for c in changes] == [
        ("create", "a", "1", "registered"),
        ("update", "a", "2", "available"),
        ("delete", "a", "3", None),
        ("delete", "b", "", None),
        None,
    ]
    assert changes[0] is not None
    assert changes[0].resource == {
        "resourceType": "ImagingStudy",
        "id": "a",
        "status": "registered",
        "meta": {"versionId": "1"},
        "subject": {"reference": "Patient/p"},
    }


async def test_the_feeder_resumes_after_an_interruption() -> None:
    bus, collection = Bus(), ReplayedCollection()
    feeder = ChangeStreamFeeder(collection, bus, retry_seconds=0)
    async with bus.subscribe() as changes:
        task = asyncio.create_task(feeder.run())
        seen = [await asyncio.wait_for(anext(changes), 5) for _ in range(4)]
        task.cancel()
    assert [c.action for c in seen] == ["create", "update", "delete", "delete"]
    assert collection.resumed_after == [None, {"_data": "2"}]


async def test_every_operation_over_a_websocket_is_audited_and_counted(
    store: Repository, caplog: pytest.LogCaptureFixture
) -> None:
    """Found black-box: over the WebSocket, a refused operation and a subscription ended by
    its client left no audit record and no count (the transport closes the operation's stream,
    which stopped the record at the hook's yield)."""
    caplog.set_level(logging.INFO, logger="imaging.audit")
    app = create_app(Settings(seed=False, max_aliases=10), store)
    deep = "{ " + " ".join(f'a{n}: ImagingStudy(id: "x") {{ id }}' for n in range(20)) + " }"
    async with serving(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        async with socket(address) as ws:
            assert (await init(ws))["type"] == "connection_ack"
            await subscribe(ws, "q", 'query Read { ImagingStudy(id: "none") { id } }')
            assert [(await receive(ws))["type"] for _ in range(2)] == ["next", "complete"]
            await subscribe(ws, "s", "subscription Watch { ImagingStudyChanged { id } }")
            await asyncio.sleep(0.2)
            await ws.send(json.dumps({"id": "s", "type": "complete"}))
            await subscribe(ws, "r", f"query Aliases {deep}")
            assert (await receive(ws))["type"] == "error"
            await subscribe(ws, "v", "query Invalid { nosuch }")
            assert (await receive(ws))["type"] == "error"
            await asyncio.sleep(0.2)
        metrics = (await http.get("/metrics")).text
    outcomes = sorted(
        (r.audit["code"]["text"], r.audit["outcome"]["detail"][0]["text"])
        for r in caplog.records
        if r.name == "imaging.audit"
    )
    assert outcomes == [  # a refused operation did not run: no name but the caller's
        ("Read", "OK"),
        ("Watch", "OK"),
        ("unparsed", "BAD_USER_INPUT"),
        ("unparsed", "QUERY_REJECTED"),
    ]
    assert 'imaging_requests_total{operation="ImagingStudyChanged",outcome="OK"} 1.0' in metrics
    assert 'outcome="QUERY_REJECTED"} 1.0' in metrics


async def test_websocket_refusals_before_an_operation_are_answered_and_audited(
    store: Repository, caplog: pytest.LogCaptureFixture
) -> None:
    """Found black-box: a malformed subscribe payload ended without an answer or a record,
    operationName naming no operation answered INTERNAL_SERVER_ERROR, and the operations
    over the socket's cap were answered but not recorded."""
    caplog.set_level(logging.INFO, logger="imaging.audit")
    app = create_app(Settings(seed=False, max_subscriptions=1), store)
    answers: dict[str, Any] = {}
    async with serving(app) as address, socket(address) as ws:
        assert (await init(ws))["type"] == "connection_ack"
        for op, payload in {
            "variables": {"query": "{ __typename }", "variables": [1]},
            "query": {"query": 5},
            "missing": {"query": None},
            "name": {"query": "{ __typename }", "operationName": 5},
            "nameless": {"query": "query A { __typename }", "operationName": "B"},
        }.items():
            await ws.send(json.dumps({"id": op, "type": "subscribe", "payload": payload}))
            answers[op] = await receive(ws)
        await subscribe(ws, "open", "subscription Watch { ImagingStudyChanged { id } }")
        await asyncio.sleep(0.2)
        await subscribe(ws, "over", "subscription Over { ImagingStudyChanged { id } }")
        answers["over"] = await receive(ws)
    for op, answer in answers.items():
        assert answer["type"] == "error", (op, answer)
        assert answer["id"] == op
    codes = {op: a["payload"][0]["extensions"]["code"] for op, a in answers.items()}
    assert codes == {
        "variables": "BAD_USER_INPUT",
        "query": "BAD_USER_INPUT",
        "missing": "BAD_USER_INPUT",
        "name": "BAD_USER_INPUT",
        "nameless": "BAD_USER_INPUT",
        "over": "QUERY_REJECTED",
    }
    assert answers["variables"]["payload"][0]["message"] == "variables must be an object or null"
    await asyncio.sleep(0.2)
    records = [r.audit for r in caplog.records if r.name == "imaging.audit"]
    outcomes = sorted((r["code"]["text"], r["outcome"]["detail"][0]["text"]) for r in records)
    assert outcomes == sorted(
        [
            ("unparsed", "BAD_USER_INPUT"),  # variables
            ("unparsed", "BAD_USER_INPUT"),  # query
            ("unparsed", "BAD_USER_INPUT"),  # missing
            ("unparsed", "BAD_USER_INPUT"),  # name
            ("B", "BAD_USER_INPUT"),  # nameless: B names no operation
            ("unparsed", "QUERY_REJECTED"),  # over the cap: refused before parsing
            ("Watch", "OK"),  # ended when the socket closed
        ]
    )


async def test_an_operation_its_client_leaves_is_audited_as_cancelled(
    store: Repository, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="imaging.audit")
    reading = _slowed(store, "get", 5, monkeypatch)
    app = create_app(Settings(seed=False), store)
    async with serving(app) as address:
        async with socket(address) as ws:
            assert (await init(ws))["type"] == "connection_ack"
            await subscribe(ws, "q", 'query Slow { ImagingStudy(id: "x") { id } }')
            await asyncio.wait_for(reading.wait(), 5)
        await asyncio.sleep(0.3)
    [record] = [r.audit for r in caplog.records if r.name == "imaging.audit"]
    assert record["code"]["text"] == "Slow"
    assert (record["outcome"]["code"]["code"], record["outcome"]["detail"][0]["text"]) == (
        "4",
        "CANCELLED",
    )


@pytest.mark.parametrize("compiled", [True, False])
async def test_a_mutation_its_websocket_client_leaves_runs_to_its_end_and_is_audited(
    store: Repository,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    compiled: bool,
) -> None:
    """Found black-box: a client closing the socket while its create ran cancelled the
    operation after the store had committed: the write stood, recorded as CANCELLED with no
    study (and a write of several steps could have stopped between two)."""
    caplog.set_level(logging.INFO, logger="imaging.audit")
    writing = _slowed(store, "create", 0.5, monkeypatch)  # the client leaves meanwhile
    app = create_app(Settings(seed=False, compiled=compiled), store)
    async with serving(app) as address:
        async with socket(address) as ws:
            assert (await init(ws))["type"] == "connection_ack"
            await subscribe(ws, "m", CREATE, res=demo.study("left", 1, 1, patient="p9"))
            await asyncio.wait_for(writing.wait(), 5)
        await asyncio.sleep(1)
    assert await store.get("left") is not None
    [record] = [r.audit for r in caplog.records if r.name == "imaging.audit"]
    assert (record["action"], record["outcome"]["detail"][0]["text"]) == ("C", "OK")
    assert {"what": {"reference": "ImagingStudy/left"}} in record["entity"]


async def test_a_withdrawn_mutation_never_answers_for_an_operation_that_reuses_its_id(
    store: Repository, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mutation runs to its end after its client completes it; meanwhile the client may give
    its id to a new operation, whose answers must be its own (and whose entry the finishing
    mutation must not remove: Strawberry logged a KeyError for each such race)."""
    caplog.set_level(logging.INFO, logger="imaging.audit")
    writing = _slowed(store, "create", 0.5, monkeypatch)
    app = create_app(Settings(seed=False), store)
    async with serving(app) as address, socket(address) as ws:
        assert (await init(ws))["type"] == "connection_ack"
        await subscribe(ws, "m", CREATE, res=demo.study("kept", 1, 1))
        await asyncio.wait_for(writing.wait(), 5)
        await ws.send(json.dumps({"id": "m", "type": "complete"}))
        await subscribe(ws, "m", 'query Again { ImagingStudy(id: "other") { id } }')
        first, second = await receive(ws), await receive(ws)
        await asyncio.sleep(0.8)  # the create finishes meanwhile
        await subscribe(ws, "n", "query Later { __typename }")
        later = await receive(ws)
    assert first == {"id": "m", "type": "next", "payload": {"data": {"ImagingStudy": None}}}
    assert second == {"id": "m", "type": "complete"}
    assert later["id"] == "n"  # nothing of the create's came in between
    assert await store.get("kept") is not None
    outcomes = sorted(
        (r.audit["code"]["text"], r.audit["outcome"]["detail"][0]["text"])
        for r in caplog.records
        if r.name == "imaging.audit"
    )
    assert outcomes == [("Again", "OK"), ("ImagingStudyCreate", "OK"), ("Later", "OK")]
    assert "Exception in worker task" not in caplog.text


async def test_an_operation_withdrawn_at_once_has_one_record_that_matches_the_store(
    store: Repository, caplog: pytest.LogCaptureFixture
) -> None:
    """Found black-box: a subscribe and its complete read together left the operation without
    a record (its task was cancelled before it began, so no hook ran). Whether it ran first
    or not, it now has exactly one record, saying what the store shows."""
    caplog.set_level(logging.INFO, logger="imaging.audit")
    app = create_app(Settings(seed=False), store)
    async with serving(app) as address, socket(address) as ws:
        assert (await init(ws))["type"] == "connection_ack"
        for n in range(5):
            await subscribe(ws, f"w{n}", CREATE, res=demo.study(f"w{n}", 1, 1))
            await ws.send(json.dumps({"id": f"w{n}", "type": "complete"}))
        await asyncio.sleep(0.5)
    records = [r.audit for r in caplog.records if r.name == "imaging.audit"]
    assert len(records) == 5
    for n, record in enumerate(records):
        stored = await store.get(f"w{n}") is not None
        outcome = record["outcome"]["detail"][0]["text"]
        assert (outcome, stored) in (("OK", True), ("CANCELLED", False)), (n, record)
