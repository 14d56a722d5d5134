"""Operating the service: the audit trail, health and readiness, metrics, and what clients
see while the store is down."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from api.http.app import create_app
from api.settings import Settings
from store.interop import demo
from store.mongo import client
from store.mongo.repository import Repository
from tests.support.graphql import CREATE, Gql, error


def audit_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.audit for r in caplog.records if r.name == "imaging.audit"]


async def test_one_audit_record_per_operation(gql: Gql, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="imaging.audit")
    resource = {**demo.study("aud", 1, 1, patient="p7"), "description": "Secret-Description-42"}
    operations = [
        (CREATE, {"res": resource}),
        ('{ ImagingStudy(id: "aud") { id description } }', {}),
        ('{ ImagingStudyList(patient: "p7") { id } }', {}),
        ('mutation { ImagingStudySetStatus(id: "aud", status: "bogus") { id } }', {}),
        ("{ nonsense }", {}),
        ("{ " + "id " * 20_000 + "}", {}),
    ]
    for query, variables in operations:
        await gql(query, **variables)
    records = audit_records(caplog)
    assert len(records) == len(operations)
    create, read, search, refused, invalid, huge = records
    assert (create["action"], create["code"]["text"]) == ("C", "ImagingStudyCreate")
    assert create["outcome"]["code"]["code"] == "0"
    assert {"what": {"reference": "ImagingStudy/aud"}} in create["entity"]
    assert {"what": {"reference": "Patient/p7"}, "role": {"text": "patient"}} in read["entity"]
    assert search["action"] == "R"
    assert refused["outcome"]["detail"][0]["text"] == "BAD_USER_INPUT"
    assert invalid["outcome"]["code"]["code"] == "4"
    assert huge["outcome"]["detail"][0]["text"] == "QUERY_REJECTED"
    assert create["agent"][0]["who"]["identifier"]["value"] == "anonymous"
    assert "Secret-Description-42" not in json.dumps(records)
    assert "Secret-Description-42" not in caplog.text


async def test_the_record_names_root_fields_selected_through_fragments(
    gql: Gql, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="imaging.audit")
    await gql(
        'query { ...Q ... on Query { ImagingStudyHistory(id: "x") { id } } } '
        "fragment Q on Query { ImagingStudyList(_count: 1) { id } }"
    )
    [record] = audit_records(caplog)
    assert record["code"]["text"] == "ImagingStudyList,ImagingStudyHistory"


async def test_health_readiness_and_metrics(http: httpx.AsyncClient, gql: Gql) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    assert (await http.get("/readyz")).status_code == 200
    await gql(CREATE, res=demo.study("m", 1, 1))
    await gql('{ ImagingStudy(id: "m") { id } }')
    await gql('mutation { ImagingStudySetStatus(id: "nope", status: "cancelled") { id } }')
    metrics = (await http.get("/metrics")).text
    assert 'imaging_requests_total{operation="ImagingStudy",outcome="OK"} 1.0' in metrics
    assert 'operation="ImagingStudySetStatus",outcome="NOT_FOUND"} 1.0' in metrics
    assert 'imaging_store_seconds_count{call="get"}' in metrics
    assert "imaging_subscriptions 0.0" in metrics


@pytest.fixture
async def faulty() -> AsyncIterator[tuple[httpx.AsyncClient, client.Faults]]:
    faults = client.Faults()
    handle, db = client.open_embedded("faulty")
    store = Repository(client.with_faults(db, faults))
    app = create_app(Settings(seed=False, allowed_hosts=("test",)), store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        yield http, faults
    client.close(handle)


async def test_store_outage_then_recovery_without_restart(
    faulty: tuple[httpx.AsyncClient, client.Faults],
) -> None:
    http, faults = faulty
    query = {"query": CREATE, "variables": {"res": demo.study("o", 1, 1)}}
    faults.down = True
    down = (await http.post("/graphql", json=query)).json()
    assert error(down)["extensions"]["code"] == "STORE_UNAVAILABLE"
    assert (await http.get("/readyz")).status_code == 503
    faults.down = False
    up = (await http.post("/graphql", json=query)).json()
    assert up["data"]["ImagingStudyCreate"]["id"] == "o"
    assert (await http.get("/readyz")).status_code == 200


@pytest.mark.slow
async def test_unreachable_mongodb_fails_fast_with_store_unavailable() -> None:
    # A real driver against a port where nothing listens: the 2 s server selection timeout,
    # not a hang. No MongoDB server is needed for this.
    settings = Settings(
        seed=False,
        mongodb_uri="mongodb://127.0.0.1:9/?directConnection=true",
        allowed_hosts=("test",),
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            body = (
                await asyncio.wait_for(
                    http.post("/graphql", json={"query": '{ ImagingStudy(id: "x") { id } }'}),
                    timeout=3,
                )
            ).json()
            assert error(body)["extensions"]["code"] == "STORE_UNAVAILABLE"
            ready = await asyncio.wait_for(http.get("/readyz"), timeout=3)
            assert ready.status_code == 503


def test_json_log_lines_carry_the_request_id() -> None:
    from api.http.logs import JsonFormatter, request_id

    token = request_id.set("req-1")
    try:
        record = logging.LogRecord(
            "imaging.api", logging.INFO, __file__, 1, "hello %s", ("world",), None
        )
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id.reset(token)
    assert (line["message"], line["request_id"], line["level"]) == ("hello world", "req-1", "INFO")


@pytest.mark.parametrize(
    "message",
    ["plain %s", "Zoë %s", "lone \udc80 surrogate %s", "a huge number %s"],
)
def test_every_json_log_line_is_one_ascii_json_object(message: str) -> None:
    """orjson writes the usual line; what it cannot write (a lone surrogate, an integer
    beyond 64 bits) or would write as other than ASCII is escaped by json, as before."""
    from datetime import UTC, datetime

    from api.http.logs import JsonFormatter

    args = (2**70,) if "huge" in message else ("x",)
    record = logging.LogRecord("imaging.audit", logging.INFO, __file__, 1, message, args, None)
    record.audit = {"when": datetime(2024, 1, 2, tzinfo=UTC), "who": message}
    text = JsonFormatter().format(record)
    assert text.isascii()
    assert "\n" not in text
    line = json.loads(text)
    assert line["message"] == message % args
    assert line["audit"] == {"when": "2024-01-02 00:00:00+00:00", "who": message}


def test_several_workers_need_mongodb(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from api.cli import commands as cli

    monkeypatch.delenv("MONGODB_URI", raising=False)
    assert cli.main(["serve", "--workers", "2"]) == 2
    assert "MONGODB_URI" in capsys.readouterr().err


def test_once_loaded_the_loop_gets_the_interpreter_back_within_a_millisecond() -> None:
    """Worker threads (new documents, the embedded store, FHIRPath) hold the interpreter lock
    up to the switch interval each time the event loop asks for it back after a socket
    wait; at CPython's default 5 ms a /healthz waited 120 ms behind eight clients' new
    documents. Startup sets the interval, with the collector's settings."""
    import gc
    import sys

    from api.http import app

    interval, threshold = sys.getswitchinterval(), gc.get_threshold()
    try:
        app.settle_collector()
        assert sys.getswitchinterval() == pytest.approx(app.SWITCH_INTERVAL)
        assert app.SWITCH_INTERVAL <= 0.001
        assert gc.get_threshold()[0] == 50_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        sys.setswitchinterval(interval)


async def test_requests_that_never_ran_are_audited_as_what_they_were(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Found black-box: a text that did not parse was recorded as a read of `__typename` (the
    stand-in carrying its refusal), and an operationName naming no operation not at all."""
    caplog.set_level(logging.INFO, logger="imaging.audit")
    await http.post("/graphql", json={"query": 'mutation { ImagingStudyDelete(id: "x") { id '})
    await http.post("/graphql", json={"query": "{ __typename }", "operationName": "Nope"})
    await http.post("/graphql", json={"query": "{ " + "id " * 60_000 + "}"})
    unparsed, unknown, huge = audit_records(caplog)
    for record in (unparsed, huge):
        assert record["category"] == [{"text": "graphql unknown"}]
        assert (record["code"]["text"], record["action"]) == ("unparsed", "E")
    assert unparsed["outcome"]["detail"][0]["text"] == "BAD_USER_INPUT"
    assert huge["outcome"]["detail"][0]["text"] == "QUERY_REJECTED"
    assert unknown["code"]["text"] == "Nope"
    assert unknown["outcome"]["detail"][0]["text"] == "BAD_USER_INPUT"


async def test_requests_refused_before_an_operation_are_audited_once(
    store: Repository, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Found black-box: a request refused for its shape (query not a string, variables not an
    object), and a mutation sent to one study's endpoint, had no record; a document of two
    operations without operationName was recorded as its first, which never ran."""
    caplog.set_level(logging.INFO, logger="imaging.audit")
    await store.create(demo.study("one", 1, 1))
    for body in (
        {"query": 5},
        {"query": "{ __typename }", "variables": [1]},
        {"query": "{ __typename }", "operationName": 5},
        {"query": 'mutation A { ImagingStudyDelete(id: "one") { id } } query B { __typename }'},
    ):
        assert (await http.post("/graphql", json=body)).status_code in (200, 400)
    instance = await http.post(
        "/ImagingStudy/one/$graphql",
        json={"query": 'mutation { ImagingStudyDelete(id: "one") { id } }'},
    )
    assert instance.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    records = audit_records(caplog)
    assert [(r["category"][0]["text"], r["code"]["text"], r["action"]) for r in records] == [
        ("graphql unknown", "unparsed", "E")
    ] * 5
    codes = [r["outcome"]["detail"][0]["text"] for r in records]
    assert codes == [
        "BAD_REQUEST",
        "BAD_REQUEST",
        "BAD_REQUEST",
        "BAD_USER_INPUT",
        "BAD_USER_INPUT",
    ]
    assert await store.get("one") is not None  # nothing ran
    metrics = (await http.get("/metrics")).text
    assert 'imaging_requests_total{operation="unknown",outcome="BAD_REQUEST"} 3.0' in metrics


async def test_the_record_says_what_was_answered_and_never_holds_free_text(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Found black-box: a refused text was recorded as a query of its root field the first
    time and as unparsed when sent again; a request without a query was answered BAD_REQUEST
    but recorded BAD_USER_INPUT; a mutation sent by GET was recorded as a delete that never
    ran; and any operationName went into the log whole (4 MB in one line)."""
    caplog.set_level(logging.INFO, logger="imaging.audit")
    invalid = 'query Typo { ImagingStudy(id: "x") { nosuch } }'
    for _ in range(2):
        await http.post("/graphql", json={"query": invalid})
    missing = await http.post("/graphql", json={"variables": {}})
    by_get = await http.get(
        "/graphql", params={"query": 'mutation Drop { ImagingStudyDelete(id: "x") { id } }'}
    )
    await http.post(
        "/graphql",
        json={
            "query": "query A { __typename } query B { __typename }",
            "operationName": "Z" * 5000,
        },
    )
    assert missing.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    assert by_get.status_code == 405
    records = audit_records(caplog)
    summary = [
        (
            r["category"][0]["text"],
            r["code"]["text"],
            r["action"],
            r["outcome"]["detail"][0]["text"],
        )
        for r in records
    ]
    assert summary == [
        ("graphql unknown", "unparsed", "E", "BAD_USER_INPUT"),
        ("graphql unknown", "unparsed", "E", "BAD_USER_INPUT"),
        ("graphql unknown", "unparsed", "E", "BAD_REQUEST"),
        ("graphql unknown", "unparsed", "E", "BAD_REQUEST"),
        ("graphql unknown", "unparsed", "E", "BAD_USER_INPUT"),
    ]
    assert all(r["outcome"]["code"]["code"] == "4" for r in records)
    assert "ZZZZ" not in caplog.text
