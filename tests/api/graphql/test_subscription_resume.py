"""ImagingStudyChanged beyond live events: deletes reach filtered and confined subscribers with
the subject and status the study had, and a subscriber back after a disconnect resumes from the
last position it saw (`after`), through the same access decision. Real WebSockets on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from api.http.app import create_app
from api.settings import Settings
from store.fhir.outcome import StoreError
from store.interop import demo
from store.mongo.events import Bus, Change, ChangeStreamFeeder, change_of, from_change_stream
from store.mongo.repository import Repository
from tests.support.change_streams import ReplayedCollection
from tests.support.graphql import CREATE, STATUS, post
from tests.support.server import serving
from tests.support.tokens import AUDIENCE, ISSUER, SECRET, token
from tests.support.websocket import init, receive, socket, subscribe

EVENTS = """subscription($id: ID, $patient: String, $status: String, $after: String) {
  ImagingStudyChanged(id: $id, patient: $patient, status: $status, after: $after) {
    action id versionId status subject position resource { id } } }"""
DELETE = "mutation($id: ID!) { ImagingStudyDelete(id: $id) { id } }"
JWT = {"auth": "jwt", "jwt_secret": SECRET, "jwt_audience": AUDIENCE, "jwt_issuer": ISSUER}


def writer() -> str:
    return token("system/*.*")


def confined() -> dict[str, str]:
    """connection_init params with a token confined to patient pa."""
    return {"Authorization": f"Bearer {token('patient/ImagingStudy.rs', patient='pa')}"}


Next = Callable[[], Awaitable[dict[str, Any]]]


async def subscribers(app: Starlette, count: int) -> None:
    """Waits until the bus has `count` subscribers: a subscription is live from then on, and
    one whose socket closed is gone."""
    for _ in range(500):
        if app.state.events.subscribers == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the bus never had {count} subscribers")


@asynccontextmanager
async def events(
    address: str,
    app: Starlette,
    params: dict[str, Any] | None = None,
    frames: list[str] | None = None,
    **variables: Any,
) -> AsyncIterator[Next]:
    """One live ImagingStudyChanged subscription; yields a function returning its next event
    (every raw frame received is appended to `frames`)."""
    before = app.state.events.subscribers
    async with socket(address) as ws:
        assert (await init(ws, params))["type"] == "connection_ack"
        await subscribe(ws, "1", EVENTS, **variables)
        await subscribers(app, before + 1)

        async def next_event() -> dict[str, Any]:
            frame = await asyncio.wait_for(ws.recv(), 5)
            assert isinstance(frame, str)
            if frames is not None:
                frames.append(frame)
            message = json.loads(frame)
            assert message["type"] == "next", message
            assert "errors" not in message["payload"], message
            event: dict[str, Any] = message["payload"]["data"]["ImagingStudyChanged"]
            return event

        yield next_event
    await subscribers(app, before)  # what follows happens while it is disconnected


async def refused(
    address: str, params: dict[str, Any] | None = None, **variables: Any
) -> dict[str, Any]:
    """The error a subscription is refused with."""
    async with socket(address) as ws:
        assert (await init(ws, params))["type"] == "connection_ack"
        await subscribe(ws, "1", EVENTS, **variables)
        message = await receive(ws)
    assert message["type"] in ("error", "next"), message
    errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
    assert len(errors) == 1, errors
    error: dict[str, Any] = errors[0]
    return error


def registered(name: str, patient: str) -> dict[str, Any]:
    """A study of `patient` in status registered."""
    return {**demo.study(name, 1, 1, patient=patient), "status": "registered"}


def brief(event: dict[str, Any]) -> tuple[Any, ...]:
    return event["action"], event["id"], event["versionId"], event["status"], event["subject"]


async def write(
    http: httpx.AsyncClient, query: str, bearer: str | None = None, **variables: Any
) -> None:
    body = await post(http, query, bearer, **variables)
    assert "errors" not in body, body


# -- deletes ---------------------------------------------------------------------------------


async def test_a_delete_reaches_patient_and_status_filtered_subscribers(store: Repository) -> None:
    app = create_app(Settings(seed=False), store)
    async with serving(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        await write(http, CREATE, res=demo.study("s1", 1, 1, patient="p1"))  # available
        await write(http, CREATE, res=registered("s2", "p2"))
        async with (
            events(address, app, patient="p1") as by_patient,
            events(address, app, patient="Patient/p1", status="registered,available") as by_both,
            events(address, app, status="available") as by_status,
        ):
            await write(http, DELETE, id="s2")  # p2, registered: none of them
            await write(http, DELETE, id="s1")
            seen = [await by_patient(), await by_both(), await by_status()]
    for event in seen:
        assert brief(event) == ("delete", "s1", "2", "available", "Patient/p1")
        assert event["resource"] is None


async def test_an_unfiltered_subscriber_gets_a_delete_with_its_subject(store: Repository) -> None:
    app = create_app(Settings(seed=False), store)
    async with serving(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        async with events(address, app) as next_event:
            await write(http, CREATE, res=demo.study("s1", 1, 1, patient="p1"))
            await write(http, STATUS, id="s1", status="cancelled")
            await write(http, DELETE, id="s1")
            seen = [brief(await next_event()) for _ in range(3)]
    assert seen == [
        ("create", "s1", "1", "available", "Patient/p1"),
        ("update", "s1", "2", "cancelled", "Patient/p1"),
        ("delete", "s1", "3", "cancelled", "Patient/p1"),
    ]


@pytest.mark.slow
async def test_a_confined_subscriber_never_hears_of_another_patients_delete(
    store: Repository,
) -> None:
    """A token confined to patient pa, unfiltered and filtered by pb's id: B's study is
    created and deleted; the first thing either hears of is A's own study, and no frame
    names B's study."""
    app = create_app(Settings(seed=False, **JWT), store)  # type: ignore[arg-type]
    frames: list[str] = []
    async with serving(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        async with (
            events(address, app, confined(), frames) as unfiltered,
            events(address, app, confined(), frames, patient="pb") as filtered_b,
            events(address, app, confined(), frames, status="available") as filtered_status,
        ):
            await write(http, CREATE, writer(), res=demo.study("study-of-b", 1, 1, patient="pb"))
            await write(http, DELETE, writer(), id="study-of-b")
            await write(http, CREATE, writer(), res=demo.study("a1", 1, 1, patient="pa"))
            await write(http, DELETE, writer(), id="a1")
            first, second = await unfiltered(), await unfiltered()
            by_status = [await filtered_status(), await filtered_status()]
            try:
                leaked: dict[str, Any] | None = await filtered_b()
            except TimeoutError:
                leaked = None
    assert (brief(first)[:2], brief(second)[:2]) == (("create", "a1"), ("delete", "a1"))
    assert [brief(e)[:2] for e in by_status] == [("create", "a1"), ("delete", "a1")]
    assert leaked is None
    # (not a bare "pb": a random 22-character event position may hold those two letters)
    assert not [frame for frame in frames if "study-of-b" in frame or "Patient/pb" in frame]


# -- resuming --------------------------------------------------------------------------------


async def test_a_resumed_subscription_gets_exactly_what_it_missed_then_live_events(
    store: Repository,
) -> None:
    app = create_app(Settings(seed=False), store)
    async with serving(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        async with events(address, app) as next_event:
            await write(http, CREATE, res=demo.study("s1", 1, 1))
            last_seen = await next_event()
        # Disconnected: these happen while no one listens.
        await write(http, CREATE, res=demo.study("s2", 1, 1))
        await write(http, STATUS, id="s1", status="cancelled")
        await write(http, DELETE, id="s2")
        async with events(address, app, after=last_seen["position"]) as next_event:
            missed = [await next_event() for _ in range(3)]
            await write(http, CREATE, res=demo.study("s3", 1, 1))
            await write(http, DELETE, id="s1")
            live = [await next_event() for _ in range(2)]
    assert [brief(e)[:3] for e in missed] == [
        ("create", "s2", "1"),
        ("update", "s1", "2"),
        ("delete", "s2", "2"),
    ]
    # No duplicate and no gap between the replay and the live events.
    assert [brief(e)[:3] for e in live] == [("create", "s3", "1"), ("delete", "s1", "3")]
    positions = [last_seen["position"], *(e["position"] for e in missed + live)]
    assert len(set(positions)) == len(positions)


async def test_resuming_from_the_latest_position_replays_nothing(store: Repository) -> None:
    app = create_app(Settings(seed=False), store)
    async with serving(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        async with events(address, app) as next_event:
            await write(http, CREATE, res=demo.study("s1", 1, 1))
            latest = await next_event()
        async with events(address, app, after=latest["position"]) as next_event:
            await write(http, STATUS, id="s1", status="cancelled")
            assert brief(await next_event())[:3] == ("update", "s1", "2")


async def test_a_replay_passes_the_same_access_decision(store: Repository) -> None:
    """Patient pa's subscriber resumes after events of pb's study (created, updated, deleted):
    the replay holds only pa's own."""
    app = create_app(Settings(seed=False, **JWT), store)  # type: ignore[arg-type]
    frames: list[str] = []
    async with serving(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        async with events(address, app, confined()) as next_event:
            await write(http, CREATE, writer(), res=demo.study("a1", 1, 1, patient="pa"))
            last_seen = await next_event()
        await write(http, CREATE, writer(), res=demo.study("study-of-b", 1, 1, patient="pb"))
        await write(http, STATUS, writer(), id="study-of-b", status="cancelled")
        await write(http, DELETE, writer(), id="study-of-b")
        await write(http, STATUS, writer(), id="a1", status="cancelled")
        async with events(
            address, app, confined(), frames, after=last_seen["position"]
        ) as next_event:
            replayed = await next_event()
            await write(http, DELETE, writer(), id="a1")
            live = await next_event()
    assert (brief(replayed)[:3], brief(live)[:3]) == (("update", "a1", "2"), ("delete", "a1", "3"))
    # (not a bare "pb": a random 22-character event position may hold those two letters)
    assert not [frame for frame in frames if "study-of-b" in frame or "Patient/pb" in frame]


async def test_a_malformed_position_is_bad_user_input(store: Repository) -> None:
    app = create_app(Settings(seed=False), store)
    async with serving(app) as address:
        for position in ("not a position", "", "x" * 23, '{"$gt": ""}'):
            error = await refused(address, after=position)
            assert error["extensions"]["code"] == "BAD_USER_INPUT", position
            assert "after" in error["message"]


async def test_an_unknown_or_too_old_position_says_to_refetch(store: Repository) -> None:
    """With IMAGING_EVENT_HISTORY=2, the third write pushes the first position out: it can no
    longer be replayed, the second still can (the bound is the setting)."""
    app = create_app(Settings(seed=False, event_history=2), store)
    async with serving(app) as address, httpx.AsyncClient(base_url=f"http://{address}") as http:
        async with events(address, app) as next_event:
            for n in range(3):
                await write(http, CREATE, res=demo.study(f"s{n}", 1, 1))
            first, second, third = [await next_event() for _ in range(3)]
        old = await refused(address, after=first["position"])
        unknown = await refused(address, after="A" * 22)
        async with events(address, app, after=second["position"]) as next_event:
            assert (await next_event())["position"] == third["position"]
    for error in (old, unknown):
        assert error["extensions"]["code"] == "RESUME_UNAVAILABLE"
        assert "read the studies again" in error["message"]
        assert error["extensions"]["resource"]["issue"][0]["expression"] == ["after"]


# -- the bus and the store underneath --------------------------------------------------------


def _change(n: int) -> Change:
    return Change("update", f"s{n}", str(n), "available", None, subject="Patient/p")


async def test_the_bus_keeps_only_its_bound_and_replays_in_order() -> None:
    bus = Bus(history=3)
    positions = []
    async with bus.subscribe() as live:
        for n in range(5):
            bus.publish(_change(n))
            positions.append((await anext(live)).position)
    assert [c.id for c in bus.since(positions[2])] == ["s3", "s4"]
    assert bus.since(positions[4]) == []
    for gone in positions[:2]:
        with pytest.raises(StoreError) as refused:
            bus.since(gone)
        assert refused.value.code == "RESUME_UNAVAILABLE"


def test_kept_changes_are_bounded_by_the_bytes_they_hold() -> None:
    """A burst of writes to large studies (each event carries the whole study, its bulk
    in instances or anywhere else) cannot pile up in memory: the oldest go once the kept
    studies pass the bound."""
    big = demo.study("big", 1, 1_000)
    bulky = {
        **demo.study("bulky", 1, 1),
        "contained": [
            {
                "resourceType": "Basic",
                "id": "c",
                "extension": [{"url": "u", "valueString": "v" * 100}] * 1_000,
            }
        ],
    }
    for study in (big, bulky):  # instances, or contained extensions: both are counted
        size = len(orjson.dumps(study))
        bus = Bus(history=1_000, history_bytes=int(size * 2.5))
        positions = []
        for version in range(4):
            bus.publish(
                Change("update", study["id"], str(version), "available", study, subject="Patient/p")
            )
            positions.append(bus._recent[-1].position)
        assert [c.version_id for c in bus._recent] == ["2", "3"]
        assert [c.version_id for c in bus.since(positions[2])] == ["3"]
        with pytest.raises(StoreError) as refused:
            bus.since(positions[1])
        assert refused.value.code == "RESUME_UNAVAILABLE"
    bus.publish(Change("update", "huge", "1", "available", demo.study("huge", 1, 3_000)))
    assert [c.id for c in bus._recent] == ["huge"]  # the newest is kept, even alone


async def test_a_resume_racing_a_publish_has_no_gap_and_no_duplicate() -> None:
    bus = Bus()
    bus.publish(_change(0))
    start = bus._recent[0].position
    bus.publish(_change(1))
    async with bus.subscribe(after=start) as changes:
        bus.publish(_change(2))  # published after subscribing, before the replay is read
        seen = [(await anext(changes)).id for _ in range(2)]
        bus.publish(_change(3))
        seen.append((await anext(changes)).id)
    assert seen == ["s1", "s2", "s3"]


def test_the_same_change_stream_event_has_the_same_position_in_every_worker() -> None:
    """Workers sharing IMAGING_CURSOR_SECRET name an event alike, so a client can resume on
    another worker; another secret gives another position, and none shows the token."""
    token = "8263A1B2C3000000012B022C0100296E5A1004"
    one, two, other = Bus(secret=b"s" * 32), Bus(secret=b"s" * 32), Bus(secret=b"t" * 32)
    for bus in (one, two, other):
        bus.publish(_change(1), identity=token)
    mine, theirs, foreign = (b._recent[0].position for b in (one, two, other))
    assert mine == theirs != foreign
    assert token not in mine
    assert "s1" not in mine


def test_a_tombstone_from_the_change_stream_is_a_delete_with_its_subject() -> None:
    event = {
        "_id": {"_data": "3"},
        "operationType": "replace",
        "documentKey": {"_id": "a"},
        "fullDocument": {
            "_id": "a",
            "id": "a",
            "meta": {"versionId": "3"},
            "_srv": {
                "deleted": True,
                "was": {"subject": {"reference": "Patient/p"}, "status": "available"},
            },
        },
    }
    change = from_change_stream(event)
    assert change is not None
    assert (
        change.action,
        change.id,
        change.version_id,
        change.status,
        change.subject,
        change.resource,
    ) == ("delete", "a", "3", "available", "Patient/p", None)


async def test_a_deleted_or_undone_study_publishes_the_subject_it_had(store: Repository) -> None:
    bus = Bus()
    store.events = bus
    async with bus.subscribe() as changes:
        await store.create(demo.study("s1", 1, 1, patient="p1"))
        await store.delete("s1", None)
        undone, _ = await store.create(registered("s2", "p2"))
        await store.undo("s2", undone["meta"]["versionId"], None)  # an undone create
        seen = [await anext(changes) for _ in range(4)]
    assert [(c.action, c.id, c.status, c.subject) for c in seen] == [
        ("create", "s1", "available", "Patient/p1"),
        ("delete", "s1", "available", "Patient/p1"),
        ("create", "s2", "registered", "Patient/p2"),
        ("delete", "s2", "registered", "Patient/p2"),
    ]
    # What the tombstone keeps stays private: reads and history show nothing new.
    assert await store.get("s1") is None
    tombstone = await store._studies.find_one({"_id": "s1"})
    assert change_of("update", tombstone).subject == "Patient/p1"
    assert set(tombstone) == {"_id", "_srv", "id", "meta"}


async def test_two_workers_feeders_give_each_event_the_same_position() -> None:
    """Each worker's change-stream feeder names an event by its resume token: a position a
    client got from one worker is known to the other (same secret)."""
    seen: list[list[str]] = []
    for _ in range(2):
        bus = Bus(secret=b"s" * 32)
        task = asyncio.create_task(ChangeStreamFeeder(ReplayedCollection(), bus, 0).run())
        async with bus.subscribe() as changes:
            seen.append([(await asyncio.wait_for(anext(changes), 5)).position for _ in range(4)])
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert seen[0] == seen[1]
    assert len(set(seen[0])) == 4
