"""What HTTP clients (Apollo, urql, graphql-request) meet: refusals as GraphQL JSON with the
GraphQL-over-HTTP status codes, nullable root fields, Apollo's automatic persisted queries and
the CORS preflights of their headers."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import httpx
import pytest

from api.http.app import create_app
from api.http.persisted import PersistedQueries
from api.settings import Settings
from store.interop import demo
from store.mongo.repository import Repository
from tests.support.graphql import CREATE
from tests.support.tokens import token


async def test_a_failing_mutation_keeps_the_result_of_the_one_before(
    http: httpx.AsyncClient, store: Repository
) -> None:
    # Two writes in one request: the first commits; the second is refused. The client must
    # still learn the id the first one created, or it cannot find (or undo) its own write.
    both = """mutation($res: ImagingStudyInput!) {
      made: ImagingStudyCreate(res: $res) { id }
      refused: ImagingStudySetStatus(id: "no-such-study", status: "available") { id } }"""
    body = (
        await http.post(
            "/graphql", json={"query": both, "variables": {"res": demo.study("first", 1, 1)}}
        )
    ).json()
    assert body["data"]["made"] == {"id": "first"}
    assert body["data"]["refused"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["NOT_FOUND"]
    assert await store.get("first") is not None


async def test_a_failing_list_leaves_the_other_root_fields(
    http: httpx.AsyncClient, store: Repository
) -> None:
    await store.create(demo.study("s", 1, 1))
    body = (
        await http.post(
            "/graphql",
            json={
                "query": """{
      one: ImagingStudy(id: "s") { id }
      bad: ImagingStudyList(_count: -1) { id } }"""
            },
        )
    ).json()
    assert body["data"] == {"one": {"id": "s"}, "bad": None}
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


# --- refusals as GraphQL JSON, with the GraphQL-over-HTTP status codes ---

GR = "application/graphql-response+json"
MUTATION = 'mutation { ImagingStudyDelete(id: "x") { deleted } }'


def refusal_code(response: httpx.Response) -> str:
    """The code of a refusal, asserting it is a GraphQL JSON body in contract form."""
    assert response.headers["content-type"].split(";")[0] in (GR, "application/json")
    body = response.json()
    assert "data" not in body, body
    for each in body["errors"]:
        assert each["message"]
        assert each["extensions"]["resource"]["resourceType"] == "OperationOutcome"
    code: str = body["errors"][0]["extensions"]["code"]
    return code


REFUSED: list[tuple[str, dict[str, Any], int, str]] = [
    (
        "body not JSON",
        {
            "method": "POST",
            "content": b'{"query":',
            "headers": {"content-type": "application/json"},
        },
        400,
        "BAD_REQUEST",
    ),
    (
        "body a number",
        {"method": "POST", "content": b"5", "headers": {"content-type": "application/json"}},
        400,
        "BAD_REQUEST",
    ),
    ("batch", {"method": "POST", "json": [{"query": "{ __typename }"}] * 2}, 400, "BAD_REQUEST"),
    ("no query", {"method": "POST", "json": {"variables": {}}}, 400, "BAD_REQUEST"),
    ("query not a string", {"method": "POST", "json": {"query": 5}}, 400, "BAD_REQUEST"),
    (
        "operationName not a string",
        {"method": "POST", "json": {"query": "{ __typename }", "operationName": {"a": 1}}},
        400,
        "BAD_REQUEST",
    ),
    (
        "variables not an object",
        {"method": "POST", "json": {"query": "{ __typename }", "variables": [7]}},
        400,
        "BAD_REQUEST",
    ),
    (
        "GET variables not JSON",
        {"method": "GET", "params": {"query": "{ __typename }", "variables": "{"}},
        400,
        "BAD_REQUEST",
    ),
    (
        "text/plain body",
        {
            "method": "POST",
            "content": b'{"query": "{ __typename }"}',
            "headers": {"content-type": "text/plain"},
        },
        415,
        "BAD_REQUEST",
    ),
    (
        "form body",
        {
            "method": "POST",
            "content": b"query=%7B__typename%7D",
            "headers": {"content-type": "application/x-www-form-urlencoded"},
        },
        415,
        "BAD_REQUEST",
    ),
    ("GET mutation", {"method": "GET", "params": {"query": MUTATION}}, 405, "BAD_REQUEST"),
    ("PUT", {"method": "PUT", "json": {"query": "{ __typename }"}}, 405, "BAD_REQUEST"),
]


@pytest.mark.parametrize("media", [GR, "application/json"])
@pytest.mark.parametrize(
    ("name", "request_", "status", "code"), REFUSED, ids=[r[0] for r in REFUSED]
)
async def test_http_refusals_are_graphql_json(
    http: httpx.AsyncClient, media: str, name: str, request_: dict[str, Any], status: int, code: str
) -> None:
    headers = {**request_.get("headers", {}), "accept": media}
    response = await http.request(url="/graphql", **{**request_, "headers": headers})
    assert response.status_code == status, (name, response.text)
    assert response.headers["content-type"].split(";")[0] == media
    assert refusal_code(response) == code
    if status == 405:
        assert response.headers["allow"] in ("POST", "GET, POST")


async def test_an_unknown_operation_name_is_a_request_error(http: httpx.AsyncClient) -> None:
    ask = {"query": "query A { __typename }", "operationName": "B"}
    legacy = await http.post("/graphql", json=ask)
    assert legacy.status_code == 200  # application/json: 200 for a GraphQL request error
    assert refusal_code(legacy) == "BAD_USER_INPUT"
    assert '"B"' in legacy.json()["errors"][0]["message"]
    modern = await http.post("/graphql", json=ask, headers={"accept": GR})
    assert modern.status_code == 400
    assert refusal_code(modern) == "BAD_USER_INPUT"


async def test_validation_errors_get_400_only_with_graphql_response_json(
    http: httpx.AsyncClient,
) -> None:
    for query in ("{ nope }", "{", 'query { ImagingStudy(id: "x") { id } } query Q { __typename }'):
        modern = await http.post("/graphql", json={"query": query}, headers={"accept": GR})
        assert modern.status_code == 400, query
        assert modern.headers["content-type"] == f"{GR}; charset=utf-8"
        assert refusal_code(modern) == "BAD_USER_INPUT"  # no data entry: nothing ran
        legacy = await http.post("/graphql", json={"query": query})
        assert legacy.status_code == 200, query
        assert legacy.headers["content-type"] == "application/json"
        assert legacy.json()["data"] is None
    coercion = await http.post(
        "/graphql",
        headers={"accept": GR},
        json={"query": "query($id: ID!) { ImagingStudy(id: $id) { id } }", "variables": {"id": []}},
    )
    assert coercion.status_code == 400
    assert refusal_code(coercion) == "BAD_USER_INPUT"


async def test_a_field_error_is_still_200_with_graphql_response_json(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post(
        "/graphql",
        headers={"accept": GR},
        json={
            "query": 'mutation { ImagingStudySetStatus(id: "none", status: "available") { id } }'
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {"ImagingStudySetStatus": None}
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize(
    ("accept", "media"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
        (GR, GR),
        (f"{GR},application/json;q=0.9", GR),  # Apollo Client 4
        (
            f"{GR}, application/graphql+json, application/json, text/event-stream, multipart/mixed",
            GR,
        ),  # urql
        (f"application/json, {GR}", "application/json"),  # a tie: the first listed
        (f"{GR};q=0.5, application/json", "application/json"),
        ("text/html,application/xhtml+xml,*/*;q=0.8", "application/json"),  # a browser tab
        ("text/html", None),
        (f"{GR};q=0, text/plain", None),
    ],
)
async def test_accept_is_honoured(
    http: httpx.AsyncClient, accept: str | None, media: str | None
) -> None:
    headers = {"accept": accept} if accept is not None else {}
    if accept is None:
        http.headers.pop("accept", None)  # httpx sends */* unless told otherwise
    response = await http.post("/graphql", json={"query": "{ __typename }"}, headers=headers)
    if media is None:
        assert response.status_code == 406
        assert refusal_code(response) == "BAD_REQUEST"
        return
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == media
    assert response.json() == {"data": {"__typename": "Query"}}


async def test_a_raw_application_graphql_body_is_the_query(
    http: httpx.AsyncClient, store: Repository
) -> None:
    await store.create(demo.study("s", 1, 1))
    response = await http.post(
        "/graphql",
        content=b"query Q($id: ID!) { ImagingStudy(id: $id) { id } }",
        params={"variables": '{"id": "s"}', "operationName": "Q"},
        headers={"content-type": "application/graphql; charset=utf-8"},
    )
    assert response.json() == {"data": {"ImagingStudy": {"id": "s"}}}
    created = await http.post(
        "/graphql",
        content=CREATE.encode(),
        params={"variables": json.dumps({"res": demo.study("raw", 1, 1)})},
        headers={"content-type": "application/graphql"},
    )
    assert created.json()["data"]["ImagingStudyCreate"]["id"] == "raw"
    not_utf8 = await http.post(
        "/graphql", content=b"{ \xff }", headers={"content-type": "application/graphql"}
    )
    assert not_utf8.status_code == 400
    assert refusal_code(not_utf8) == "BAD_REQUEST"


@pytest.mark.parametrize("media", [GR, "application/json"])
async def test_middleware_refusals_are_graphql_json(store: Repository, media: str) -> None:
    app = create_app(Settings(seed=False, allowed_hosts=("test",), max_body_bytes=1024), store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", headers={"accept": media}
    ) as http:
        big = await http.post(
            "/graphql", content=b" " * 2048, headers={"content-type": "application/json"}
        )
        host = await http.post(
            "/graphql", json={"query": "{ __typename }"}, headers={"host": "evil.example"}
        )
    assert big.status_code == 413
    assert "IMAGING_MAX_BODY_BYTES" in big.json()["errors"][0]["message"]
    assert host.status_code == 400
    assert "IMAGING_ALLOWED_HOSTS" in host.json()["errors"][0]["message"]
    for response in (big, host):
        assert response.headers["content-type"].split(";")[0] == media
        assert refusal_code(response) == "BAD_REQUEST"


# --- Apollo's automatic persisted queries ---

READ = "query Read($id: ID!) { ImagingStudy(id: $id) { id status } }"


def sha(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()


def hashed(query: str, **extra: Any) -> dict[str, Any]:
    """The GET parameters Apollo's link sends with useGETForHashedQueries: no query."""
    return {
        "extensions": json.dumps({"persistedQuery": {"version": 1, "sha256Hash": sha(query)}}),
        **extra,
    }


async def test_apollo_persisted_query_protocol(http: httpx.AsyncClient, store: Repository) -> None:
    await store.create(demo.study("s", 1, 1))
    variables = json.dumps({"id": "s"})
    # 1. The hash alone, unknown: Apollo's link retries on this code (or this very message).
    for media in ("application/json", GR):  # 200 either way, as Apollo Server answers
        unknown = await http.get(
            "/graphql", params=hashed(READ, variables=variables), headers={"accept": media}
        )
        assert unknown.status_code == 200
        assert unknown.headers["cache-control"] == "private, no-cache, must-revalidate"
        assert unknown.json()["errors"][0]["message"] == "PersistedQueryNotFound"
        assert refusal_code(unknown) == "PERSISTED_QUERY_NOT_FOUND"
    # 2. The retry: a POST with the query and its hash runs it and registers it.
    extensions = {"persistedQuery": {"version": 1, "sha256Hash": sha(READ)}}
    first = await http.post(
        "/graphql",
        json={
            "query": READ,
            "variables": {"id": "s"},
            "operationName": "Read",
            "extensions": extensions,
        },
    )
    assert first.json() == {"data": {"ImagingStudy": {"id": "s", "status": "available"}}}
    # 3. From then on the hash alone works, by GET (which HTTP caches can keep).
    again = await http.get(
        "/graphql",
        params=hashed(READ, variables=variables, operationName="Read"),
        headers={"accept": "*/*"},
    )  # Apollo Client 3: not GraphiQL
    assert again.status_code == 200
    assert again.json() == first.json()


async def test_a_hash_that_does_not_match_its_query_is_refused(http: httpx.AsyncClient) -> None:
    wrong = {"persistedQuery": {"version": 1, "sha256Hash": sha("{ __typename }")}}
    response = await http.post(
        "/graphql", json={"query": READ, "variables": {"id": "s"}, "extensions": wrong}
    )
    assert response.status_code == 400
    assert refusal_code(response) == "BAD_REQUEST"
    assert "does not match" in response.json()["errors"][0]["message"]
    # and nothing was registered under either hash
    for query in (READ, "{ __typename }"):
        later = await http.get("/graphql", params=hashed(query))
        assert refusal_code(later) == "PERSISTED_QUERY_NOT_FOUND"
    for bad in ({"version": 2, "sha256Hash": sha(READ)}, {"version": 1, "sha256Hash": "x"}, 7):
        refused = await http.post(
            "/graphql",
            json={"query": READ, "variables": {"id": "s"}, "extensions": {"persistedQuery": bad}},
        )
        assert refused.status_code == 400, bad
        assert "extensions.persistedQuery" in refused.json()["errors"][0]["message"]


async def test_a_hashed_mutation_runs_only_by_post(
    http: httpx.AsyncClient, store: Repository
) -> None:
    await store.create(demo.study("s", 1, 1))
    delete = 'mutation { ImagingStudyDelete(id: "s") { deleted } }'
    registered = await http.post(
        "/graphql",
        json={
            "query": delete,
            "extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha(delete)}},
        },
    )
    assert registered.json() == {"data": {"ImagingStudyDelete": {"deleted": True}}}
    await store.create(demo.study("s", 1, 1))
    by_get = await http.get("/graphql", params=hashed(delete))
    assert by_get.status_code == 405  # a GET must never write, registered or not
    assert refusal_code(by_get) == "BAD_REQUEST"
    assert await store.get("s") is not None


async def test_a_query_that_does_not_validate_is_not_registered(http: httpx.AsyncClient) -> None:
    bad = "{ nope }"
    await http.post(
        "/graphql",
        json={
            "query": bad,
            "extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha(bad)}},
        },
    )
    assert (
        refusal_code(await http.get("/graphql", params=hashed(bad))) == "PERSISTED_QUERY_NOT_FOUND"
    )


def test_the_store_is_bounded_least_recently_used_first() -> None:
    texts = [f"query Q{i} {{ __typename }}" for i in range(5)]
    cost = PersistedQueries._cost(sha(texts[0]), texts[0])  # text, key and the entry itself
    assert cost > len(texts[0]) + 200
    queries = PersistedQueries(max_bytes=4 * cost + 10, shares=1)  # one caller, all of it
    for text in texts[:3]:
        queries.put(sha(text), text)
    assert queries.get(sha(texts[0])) == texts[0]  # now the most recently used
    for text in texts[3:]:
        queries.put(sha(text), text)
    assert len(queries) == 4  # one had to go, the least recently used
    assert queries.get(sha(texts[1])) is None
    assert queries.get(sha(texts[0])) == texts[0]
    huge = "{ __typename }" + " " * 4 * cost
    queries.put(sha(huge), huge)  # over the whole bound alone: not kept, nothing evicted
    assert queries.get(sha(huge)) is None
    assert len(queries) == 4


def test_one_caller_filling_the_store_pushes_out_its_own_queries_only() -> None:
    """X3: a token registered 70 texts of 99 KB and pushed out another caller's query."""
    text = "query Mine { __typename }"
    queries = PersistedQueries(max_bytes=1_000_000, shares=8)  # 125,000 bytes a caller
    queries.put(f"reader\0{sha(text)}", text)
    padded = [f"query Q{i} {{ __typename }} # {'x' * 20_000}" for i in range(70)]
    for flood in padded:
        queries.put(f"flooder\0{sha(flood)}", flood)
    assert queries.get(f"reader\0{sha(text)}") == text
    kept = [f for f in padded if queries.get(f"flooder\0{sha(f)}") is not None]
    assert 0 < len(kept) <= 6  # its own share, its most recent texts
    assert kept == padded[-len(kept) :]


async def test_persisted_queries_can_be_turned_off(store: Repository) -> None:
    app = create_app(Settings(seed=False, allowed_hosts=("test",), persisted_query_bytes=0), store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        off = await http.get("/graphql", params=hashed("{ __typename }"))
    assert off.status_code == 200  # Apollo's link then sends the query without a hash
    assert off.json()["errors"][0]["message"] == "PersistedQueryNotSupported"
    assert refusal_code(off) == "PERSISTED_QUERY_NOT_SUPPORTED"


async def test_a_registered_query_is_no_privilege(client: httpx.AsyncClient) -> None:
    """With authentication on, each caller has its own registrations: another caller (or
    one without a token) cannot run, probe or push out what a reader registered, and a
    caller without a valid token registers nothing."""
    query = '{ ImagingStudy(id: "mine") { id } }'
    reader = {"authorization": f"Bearer {token('system/ImagingStudy.rs')}"}
    registered = await client.post(
        "/graphql",
        headers=reader,
        json={
            "query": query,
            "extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha(query)}},
        },
    )
    assert registered.json() == {"data": {"ImagingStudy": {"id": "mine"}}}
    again = await client.get("/graphql", params=hashed(query), headers=reader)
    assert again.json() == {"data": {"ImagingStudy": {"id": "mine"}}}
    other = {"authorization": f"Bearer {token('patient/ImagingStudy.rs', patient='p2')}"}
    for headers in ({}, other):  # not theirs to see: as if never registered
        probed = await client.get("/graphql", params=hashed(query), headers=headers)
        assert refusal_code(probed) == "PERSISTED_QUERY_NOT_FOUND"
    confined = await client.post(
        "/graphql",
        headers=other,
        json={
            "query": query,
            "extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha(query)}},
        },
    )
    assert confined.json() == {"data": {"ImagingStudy": None}}  # run as itself
    anonymous = await client.post(
        "/graphql",
        json={
            "query": "{ __typename }",
            "extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha("{ __typename }")}},
        },
    )
    assert anonymous.json() == {"data": {"__typename": "Query"}}
    still = await client.get("/graphql", params=hashed("{ __typename }"))
    assert refusal_code(still) == "PERSISTED_QUERY_NOT_FOUND"  # a bad token registers nothing


async def test_every_graphql_answer_forbids_shared_caches(client: httpx.AsyncClient) -> None:
    """A CDN in front of GET persisted queries must never keep one caller's answer for
    another: every answer, refusals included, says no-store."""
    reader = {"authorization": f"Bearer {token('system/ImagingStudy.rs')}"}
    answers = [
        await client.get(
            "/graphql", params={"query": "{ ImagingStudyList { id } }"}, headers=reader
        ),
        await client.post(
            "/graphql", json={"query": "{ ImagingStudyList { id } }"}, headers=reader
        ),
        await client.get("/graphql", params={"query": "{ nosuchfield }"}, headers=reader),
        await client.post(
            "/graphql", content=b"[1]", headers={**reader, "content-type": "application/json"}
        ),
        await client.get(
            "/graphql", params={"query": "{ __typename }"}, headers={**reader, "accept": "text/csv"}
        ),
    ]
    assert [a.headers.get("cache-control") for a in answers] == ["no-store"] * len(answers)


# --- CORS ---

CLIENT_HEADERS = (
    "authorization, content-type, apollographql-client-name, "
    "apollographql-client-version, x-request-id"
)


def preflight(origin: str, headers: str = CLIENT_HEADERS) -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": headers,
    }


async def test_cors_preflights_of_client_headers_pass(store: Repository) -> None:
    viewer = "http://localhost:5173"
    app = create_app(Settings(seed=False, allowed_hosts=("test",), cors_origins=(viewer,)), store)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        allowed = await http.options("/graphql", headers=preflight(viewer))
        call = await http.post(
            "/graphql", json={"query": "{ __typename }"}, headers={"origin": viewer}
        )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == viewer
    granted = {
        h.strip().lower() for h in allowed.headers["access-control-allow-headers"].split(",")
    }
    assert {h.strip() for h in CLIENT_HEADERS.split(",")} <= granted
    assert call.headers["access-control-allow-origin"] == viewer
    assert "x-request-id" in call.headers["access-control-expose-headers"]


async def test_a_refused_preflight_says_once_which_setting_allows_it(
    store: Repository, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="imaging.api")
    app = create_app(Settings(seed=False, allowed_hosts=("test",)), store)  # no origins
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        for _ in range(3):
            refused = await http.options(
                "/graphql", headers=preflight("http://localhost:5173", "content-type, x-custom")
            )
            assert refused.status_code == 400
    lines = [r.getMessage() for r in caplog.records if r.name == "imaging.api"]
    assert len(lines) == 2, lines  # once per refused origin and header, not per preflight
    assert any("http://localhost:5173" in line and "IMAGING_CORS_ORIGINS" in line for line in lines)
    assert any("x-custom" in line for line in lines)


def test_a_flood_of_refused_origins_neither_floods_nor_silences_the_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """At most `burst` lines a window; once the window has passed, a new origin is logged
    again, saying how many refusals were left out meanwhile."""
    from api.http import middleware

    now = [1_000.0]
    monkeypatch.setattr(middleware.time, "monotonic", lambda: now[0])
    caplog.set_level(logging.WARNING, logger="imaging.api")
    explain = middleware.Explainer(every=600, burst=3)
    for n in range(100):  # an anonymous flood of made-up origins
        explain.refused_origin(f"http://e{n}.example", "CORS preflight")
    assert len(caplog.records) == 3
    explain.refused_origin("http://e0.example", "CORS preflight")  # logged already
    now[0] += 601
    explain.refused_origin("http://viewer.example:3000", "CORS preflight")
    last = caplog.records[-1].getMessage()
    assert len(caplog.records) == 4
    assert "http://viewer.example:3000" in last
    assert "IMAGING_CORS_ORIGINS" in last
    assert "97 similar refusals" in last


async def test_an_unknown_path_answers_graphql_json(http: httpx.AsyncClient) -> None:
    missing = await http.post("/graphq1", json={"query": "{ __typename }"})
    assert missing.status_code == 404
    assert refusal_code(missing) == "BAD_REQUEST"
    assert "/graphql" in missing.json()["errors"][0]["message"]
